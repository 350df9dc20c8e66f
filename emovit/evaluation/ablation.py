"""The instruction-type ablation's rows: one per trained variant, read from the folders train.py and evaluate.py
wrote for it, and the same for the instruction-sensitivity run (`--prompt_variants`). When the ablation compares base
models, each row also names its base model and the kind of language model it trained on."""

import json
from pathlib import Path


# (column, where in the variant's folder, key); a key path is a list for nested values.
TYPE_COLUMNS = (
    ("score accuracy", "eval", ["accuracy"]),
    ("score macro-F1", "eval", ["macro_f1"]),
    ("generate accuracy", "eval-generate", ["accuracy"]),
    ("generate invalid", "eval-generate", ["invalid_rate"]),
    ("consistency", "eval-reasoning", ["consistency"]),
    ("agrees with prediction", "eval-reasoning", ["agreement_with_prediction", "agrees"]),
    ("grounding", "eval-reasoning", ["grounding"]),
    ("contradiction rate", "eval-reasoning", ["contradiction_rate"]),
    ("known words", "eval-reasoning", ["known_word_rate"]),
)
PROMPTS_FOLDER = "eval-prompts"


def _read(folder: Path, name: str) -> dict | None:
    path = folder / name / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _lookup(metrics: dict | None, keys: list[str]):
    for key in keys:
        if not isinstance(metrics, dict):
            return None
        metrics = metrics.get(key)
    return metrics


def _base_columns(base_model: str | None, folder: Path) -> dict:
    """`base model` and `language model` (the trained folder's `text_config.model_type`, e.g. llama or t5; None
    without its config.json) when the ablation compares base models; nothing otherwise."""
    if base_model is None:
        return {}
    config = folder / "config.json"
    text_config = json.loads(config.read_text()).get("text_config", {}) if config.is_file() else {}
    return {"base model": base_model, "language model": text_config.get("model_type")}


def variant_row(name: str, types: str, folder: str | Path, seconds: float, base_model: str | None = None) -> dict:
    """A variant's row: its base model columns (with `base_model`, see `_base_columns`), its name and types, its final
    training loss, every TYPE_COLUMNS value (None where its metrics file is missing), and the training's wall time."""
    folder = Path(folder)
    loaded = {source: _read(folder, source) for _, source, _ in TYPE_COLUMNS}
    log = json.loads((folder / "training_log.json").read_text()) if (folder / "training_log.json").is_file() else []
    row = _base_columns(base_model, folder)
    row.update({"variant": name, "types": types,
                "train loss": next((entry["train_loss"] for entry in log if "train_loss" in entry), None)})
    row.update({column: _lookup(loaded[source], keys) for column, source, keys in TYPE_COLUMNS})
    row["seconds"] = round(seconds)
    return row


def prompt_row(name: str, folder: str | Path, base_model: str | None = None) -> dict:
    """A variant's accuracy under each categorical instruction variant, their mean and their spread (max - min),
    after its base model columns (with `base_model`)."""
    metrics = _read(Path(folder), PROMPTS_FOLDER) or {}
    accuracies = [variant["accuracy"] for variant in metrics.get("prompt_variants", [])]
    row = _base_columns(base_model, Path(folder))
    row["variant"] = name
    row.update({f"instruction {k + 1}": accuracy for k, accuracy in enumerate(accuracies)})
    row["mean"] = sum(accuracies) / len(accuracies) if accuracies else None
    row["spread"] = metrics.get("prompt_accuracy_spread")
    return row

