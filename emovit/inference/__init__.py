"""Inference components for the people-facing scripts, one job per module: `loading` (a saved model and its
processor, checked; shared with evaluation), `demo` (the Gradio page and `/predict` endpoint that app.py serves),
and what predict.py runs on top of [`EmoVitForConditionalGeneration.explain`]."""
