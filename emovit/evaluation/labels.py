"""Label sets in evaluation: the label-map presets, how a label map sends the model's labels to a dataset's labels,
and how dataset labels and model scores become indices and probabilities over the dataset's labels.

A model always answers among its own labels (`config.emotion_labels`). A label map sends each model label to a
dataset label or drops it (None), which is how a model trained on EmoSet's 8 emotions is scored on EmoSet's binary
split, Emotion6 or UnbiasedEmo.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from modeling_emovit import EMOSET_EMOTIONS
from modeling_emovit.configuration_emovit import normalise_label


_POSITIVE, _NEGATIVE = EMOSET_EMOTIONS[:4], EMOSET_EMOTIONS[4:]
# Presets for a model with EmoSet's 8 labels; docs/evaluation.md ("Presets for the benchmarks") gives the reasons.
LABEL_MAP_PRESETS = {
    "binary": {**{label: "positive" for label in _POSITIVE}, **{label: "negative" for label in _NEGATIVE}},
    "emotion6": {
        "amusement": "joy", "awe": "surprise", "contentment": "joy", "excitement": "joy",
        "anger": "anger", "disgust": "disgust", "fear": "fear", "sadness": "sadness",
    },
    "unbiasedemo": {
        "amusement": "joy", "awe": "surprise", "contentment": "love", "excitement": "joy",
        "anger": "anger", "disgust": None, "fear": "fear", "sadness": "sadness",
    },
    # WebEmo's 7-class level (anger, confusion, fear, joy, love, sadness, surprise). Its hierarchy files place
    # contentment under joy, but EmoSet's contentment images (couples, families, tenderness) are what WebEmo calls
    # love, and without it love would get no model label; disgust sits under anger in WebEmo's hierarchy; awe goes
    # to surprise as for Emotion6. No EmoSet label means confusion: evaluate with skip_uncovered_labels.
    "webemo7": {
        "amusement": "joy", "awe": "surprise", "contentment": "love", "excitement": "joy",
        "anger": "anger", "disgust": "anger", "fear": "fear", "sadness": "sadness",
    },
}
# Datasets that use another preset's label set: EmotionROI has Emotion6's six Ekman labels; WebEmo's 2-class level
# and Twitter I / II are positive / negative, as EmoSet's binary split.
LABEL_MAP_PRESETS["emotionroi"] = LABEL_MAP_PRESETS["emotion6"]
LABEL_MAP_PRESETS["webemo2"] = LABEL_MAP_PRESETS["twitter"] = LABEL_MAP_PRESETS["binary"]


def resolve_label_map(label_map: str | None, model_labels: list[str]) -> tuple[dict, list[str]]:
    """Reads `label_map` (None, a preset name or a JSON file) for a model with `model_labels`.

    Returns ({model label: dataset label or None}, the dataset labels in order of first appearance). Without a map
    every model label is its own dataset label.
    """
    if label_map is None:
        return {label: label for label in model_labels}, list(model_labels)
    if label_map in LABEL_MAP_PRESETS:
        mapping, source = LABEL_MAP_PRESETS[label_map], f"preset {label_map!r}"
    elif os.path.isfile(label_map):
        try:
            mapping = json.loads(Path(label_map).read_text())
        except ValueError as e:
            raise ValueError(f"--label_map file {label_map!r} is not valid JSON ({e}).") from e
        source = f"file {label_map!r}"
        if not isinstance(mapping, dict):
            raise ValueError(
                f"--label_map {source} holds a {type(mapping).__name__}; it must be a JSON object mapping each "
                'model label to a dataset label or null, e.g. {"amusement": "positive", "disgust": null}.'
            )
    else:
        raise ValueError(
            f"--label_map {label_map!r} is neither a preset ({list(LABEL_MAP_PRESETS)}) nor an existing JSON file."
        )
    mapping = {normalise_label(k): (None if v is None else normalise_label(v)) for k, v in mapping.items()}
    missing = [label for label in model_labels if label not in mapping]
    unknown = [label for label in mapping if label not in model_labels]
    if missing or unknown:
        raise ValueError(
            f"--label_map {source} must name every model label exactly once (null drops one). Model labels: "
            f"{model_labels}; missing from the map: {missing}; in the map but not model labels: {unknown}."
        )
    targets = list(dict.fromkeys(v for v in (mapping[label] for label in model_labels) if v is not None))
    if len(targets) < 2:
        raise ValueError(f"--label_map {source} leaves {targets} as the dataset labels; it needs at least two.")
    return {label: mapping[label] for label in model_labels}, targets


@dataclass(frozen=True)
class LabelMapping:
    """A model's labels scored as a dataset's: `mapping` sends each of `model_labels` to a dataset label or None
    (dropped), `targets` are the dataset labels it keeps (the metrics' classes, in order of first appearance) and
    `target_of` gives each model label's index in `targets` (None when dropped)."""

    model_labels: list[str]
    mapping: dict[str, str | None]
    targets: list[str]
    target_of: list[int | None]


def label_mapping(label_map: str | None, model_labels: list[str]) -> LabelMapping:
    """`--label_map` (a preset, a JSON file, or None for the model's own labels) resolved for `model_labels`; see
    `resolve_label_map` for what is refused."""
    mapping, targets = resolve_label_map(label_map, model_labels)
    return LabelMapping(model_labels, mapping, targets, target_indices(model_labels, mapping, targets))


def reference_indices(dataset_labels: list[str], mapping: dict, targets: list[str]) -> list[int]:
    """Dataset labels -> indices into `targets`. A dataset label that is a model label goes through the map."""
    indices, unknown = [], set()
    for label in dataset_labels:
        if label in targets:
            indices.append(targets.index(label))
        elif mapping.get(label) is not None:
            indices.append(targets.index(mapping[label]))
        else:
            unknown.add(label)
    if unknown:
        raise ValueError(
            f"The dataset has labels {sorted(unknown)} that the model's labels do not cover (after the label map, "
            f"the model predicts {targets}). Pass --label_map with a preset ({list(LABEL_MAP_PRESETS)}) or a JSON "
            "file mapping each model label to one of the dataset's labels."
        )
    return indices


def target_indices(model_labels: list[str], mapping: dict, targets: list[str]) -> list[int | None]:
    """For each model label, the index in `targets` of the dataset label it maps to, or None if the map drops it."""
    return [None if mapping[label] is None else targets.index(mapping[label]) for label in model_labels]


def map_scores(probabilities: list[float], target_of: list[int | None], num_targets: int) -> list[float]:
    """Model-label probabilities -> dataset-label probabilities.

    Each dataset label gets the summed probability of the model labels that map to it; the result is renormalised
    over the labels the map keeps (dropped labels' mass is removed). If every kept label underflowed to 0 the zeros
    are returned as they are.
    """
    mapped = [0.0] * num_targets
    for k, probability in enumerate(probabilities):
        if target_of[k] is not None:
            mapped[target_of[k]] += probability
    total = sum(mapped) or 1.0
    return [p / total for p in mapped]
