"""EmoVIT's library for the scripts: `emovit.training` (what train.py runs), `emovit.evaluation` (what evaluate.py
runs), `emovit.inference` (what predict.py and app.py run) and `emovit.distributed` (how the evaluation and prediction
runs share their images among the processes of a launch). The model itself is the `modeling_emovit` package; the data
pipeline is `dataset_builder`."""
