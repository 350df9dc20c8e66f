"""Evaluation components, one job per module: `labels` (label-map presets, mapping model labels and scores onto a
dataset's labels), `data` (a split's images and labels from an EmoSet root, ImageFolder, saved or parquet dataset, or
Hub id), `arguments` (`EvalArguments`), `run` (`evaluate_model`, the evaluation run returning the metrics; the
model is loaded by `emovit.inference.loading`) and `report` (metrics.json, predictions.jsonl, the confusion-matrix
plot); for `--task reasoning`, `reasoning` (explanations scored for emotion consistency, attribute grounding and
contradictions, and that run) and `judge` (the optional LLM judge of explanations)."""
