"""An evaluation run's results as the Hub's `model-index` entries (`huggingface_hub.EvalResult`), for the card of
the model that was evaluated (`evaluate.py --update_card`, and train.py's card for its held-out test split).

Each entry names the task (emotion classification, as the Hub's `image-classification`), the dataset (its Hub id,
or a local folder's name; the label map as its config; the split) and the metric, whose `config` is the
classification method (`score`, `generate`, or `score-calibrated` for the metrics at a temperature fitted with
`--calibrate_on`). Entries that agree in all of these are the same result, so a rerun replaces its earlier value.
Values keep 4 significant digits, as a card shows them (a tiny ECE stays visible).
"""

import os
from pathlib import Path

from huggingface_hub import EvalResult


TASK = {"task_type": "image-classification", "task_name": "Visual emotion recognition"}
# metrics.json key -> (Hub metric id, display name, metric arguments)
METRICS = {
    "accuracy": ("accuracy", "Accuracy", None),
    "macro_f1": ("f1", "Macro F1", {"average": "macro"}),
    "invalid_rate": ("invalid_rate", "Invalid answer rate", None),
    "ece": ("ece", "ECE (15 bins)", {"bins": 15}),
    "brier": ("brier_score", "Brier score", None),
    "nll": ("nll", "NLL", None),
    "auroc_macro": ("roc_auc", "Macro AUROC (one-vs-rest)", {"average": "macro", "multi_class": "ovr"}),
}
# Per method: the metrics it reports. generate's answers have no probabilities, score's are never invalid.
REPORTED = {"score": ("accuracy", "macro_f1", "ece", "brier", "nll", "auroc_macro"),
            "generate": ("accuracy", "macro_f1", "invalid_rate")}


def dataset_fields(dataset: str, split: str, label_map: str | None, max_images: int | None) -> dict:
    """The dataset part of a result: a Hub id as its type, a local folder by its name; the label map (a preset's
    name or a JSON file's stem) as its config; `max_images` as an argument, so a partial run stays apart."""
    # A Hub id ("owner/name") is kept whole; a folder (existing, absolute or relative to ".") goes by its name.
    local = os.path.exists(dataset) or os.path.isabs(dataset) or dataset.startswith(".")
    name = Path(dataset).resolve().name if local else dataset
    config = None if label_map is None else (Path(label_map).stem if os.path.isfile(label_map) else label_map)
    return {"dataset_type": name, "dataset_name": name if config is None else f"{name} ({config})",
            "dataset_config": config, "dataset_split": split,
            "dataset_args": None if max_images is None else {"max_images": max_images}}


def eval_results_of(metrics: dict) -> list[EvalResult]:
    """The `EvalResult`s of an evaluation run (metrics.json's content): its method's metrics, and with a fitted
    temperature the calibrated ones. Metrics that are None (an AUROC undefined on the split) are left out."""
    args = metrics["arguments"]
    dataset = dataset_fields(args["dataset"], args["split"], args["label_map"], args["max_images"])
    runs = [(args["method"], metrics, REPORTED[args["method"]])]
    if "calibrated" in metrics:
        runs.append(("score-calibrated", metrics["calibrated"], REPORTED["score"]))
    results = []
    for config, values, keys in runs:
        for key in keys:
            if values.get(key) is None:
                continue
            metric_type, metric_name, metric_args = METRICS[key]
            results.append(EvalResult(**TASK, **dataset, metric_type=metric_type, metric_value=float(f"{values[key]:.4g}"),
                                      metric_name=metric_name, metric_config=config, metric_args=metric_args))
    return results
