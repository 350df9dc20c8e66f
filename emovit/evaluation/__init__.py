"""Evaluation components, one job per module: `labels` (label-map presets, mapping model labels and scores onto a
dataset's labels), `data` (a split's images and labels from an EmoSet root, ImageFolder, saved or parquet dataset, or
Hub id), `arguments` (`EvalArguments`), `run` (`evaluate_model`, the evaluation run returning the metrics; the
model is loaded by `emovit.inference.loading`), `metric` (the shipped metric module's path and its functions),
`calibration` (the temperature fit) and `report` (metrics.json, predictions.jsonl, the confusion-matrix plot); for
`--task reasoning`, `explanations` (an explanation's scores: emotion consistency, attribute grounding and
contradictions), `reasoning` (the run that explains and scores a split) and `judge` (the optional LLM judge of
explanations)."""
