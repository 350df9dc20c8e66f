"""Inference components for the people-facing scripts, one job per module: `loading` (a saved model and its
processor, checked; shared with evaluation), `files` (PATH arguments to image files, and reading them), `arguments`
(`PredictArguments`, predict.py's flags), `predict` (the prediction run, on one process or several) and `demo` (the
Gradio page and `/predict` endpoint that app.py serves), on top of [`EmoVitForConditionalGeneration.classify`] and
[`EmoVitForConditionalGeneration.explain`]."""
