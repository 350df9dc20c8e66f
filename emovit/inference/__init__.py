"""Inference components for the people-facing scripts, one job per module: `loading` (a saved model and its
processor, checked; shared with evaluation), and what predict.py and app.py run on top of
[`EmoVitForConditionalGeneration.explain`]."""
