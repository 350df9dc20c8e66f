"""Inference components for the people-facing scripts, one job per module: `loading` (a saved model and its
processor, checked; shared with evaluation), `files` (PATH arguments to image files, and reading them), `arguments`
(`PredictArguments`, predict.py's flags) and `predict` (the prediction run, on one process or several), on top of
[`EmoVitForConditionalGeneration.classify`] and [`EmoVitForConditionalGeneration.explain`]."""
