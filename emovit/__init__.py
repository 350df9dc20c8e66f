"""EmoVIT's library for the scripts: `emovit.training` (what train.py runs) and `emovit.evaluation` (what
evaluate.py runs). The model itself is the `modeling_emovit` package; the data pipeline is `dataset_builder`."""
