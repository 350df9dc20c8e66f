"""Evaluation components, one job per module: `labels` (label-map presets, mapping model labels and scores onto a
dataset's labels), `data` (a split's images and labels from an EmoSet root, ImageFolder, saved or parquet dataset, or
Hub id), `arguments` (`EvalArguments`), `run` (`load_model` and `evaluate_model`, the evaluation run returning the
metrics) and `report` (metrics.json, predictions.jsonl, the confusion-matrix plot)."""
