# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""EmoVIT configuration: InstructBLIP's configuration plus the emotion label set and the score temperature."""

import math

from huggingface_hub.dataclasses import strict
from transformers import InstructBlipConfig
from transformers.utils import logging


logger = logging.get_logger(__name__)

# The pipeline every saved EmoVIT folder offers, as `config.custom_pipelines` holds it: `impl` is
# "<module file>.<class>" inside the saved folder (`EmoVitForConditionalGeneration.save_pretrained` copies the file).
PIPELINE_TASK = "visual-emotion-recognition"
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {
        "impl": "pipeline_emovit.VisualEmotionRecognitionPipeline",
        "pt": ["AutoModelForImageTextToText"],
        "type": "multimodal",
    }
}

# EmoSet's emotion index order (info.json): the first four are positive, the last four negative.
EMOSET_EMOTIONS = ("amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness")
# The values `score_temperature` may take (and the range calibration searches). An answer's log-likelihood is a sum
# of token log-probabilities, each above about -104 in float32, so at T >= 0.01 log-likelihood / T stays far inside
# float32's range and the softmax finite; at T = 1e-40 a log-likelihood of -5 is already -inf and every score NaN.
# Above 100 the scores are uniform to within a few percent for any answers the model tells apart, so a larger T
# says nothing more.
SCORE_TEMPERATURE_RANGE = (0.01, 100.0)


@strict
class EmoVitConfig(InstructBlipConfig):
    r"""
    Configuration of [`EmoVitForConditionalGeneration`]: an InstructBLIP model (vision encoder, instruction-aware
    Q-Former, language model) instruction-tuned to recognise the emotion an image evokes.

    All InstructBLIP arguments are accepted unchanged. On top of them:

    emotion_labels (`list[str]`, *optional*, defaults to EmoSet's 8 emotions in EmoSet's index order):
        The emotions the model classifies into, and the labels of the categorical instruction of
        [`EmoVitProcessor`]. Labels are stored stripped and lower-case, must be unique, and are matched exactly
        (ignoring case) when generated answers are parsed.

    score_temperature (`float`, *optional*, defaults to 1.0):
        The temperature `T` of `classify(method="score")`: its probabilities are the softmax of the answers'
        log-likelihoods divided by `T`. 1.0 leaves them as the language model gives them; `evaluate.py
        --calibrate_on SPLIT --save_temperature` stores the value that minimises a held-out split's negative
        log-likelihood. It never changes which label ranks first. Must lie in `SCORE_TEMPERATURE_RANGE` (0.01 to
        100), where the scores stay finite.

    `emotion_labels` is the single source of truth for the label set: `id2label`, `label2id` and `num_labels` always
    follow it, on construction and on every later assignment.
    - Construction: `emotion_labels` wins; without it, the names of a given `id2label` are used; without either,
      EmoSet's 8 emotions. A named `id2label` that disagrees with `emotion_labels` is an error; a `num_labels` that
      disagrees with the named labels is ignored with a warning (as transformers ignores it beside `id2label`).
      `num_labels=N` alone, for N other than 8, gives placeholder labels `label_0` ... `label_{N-1}` (with a
      warning), as transformers does for any classifier whose labels are not named.
    - Assignment: setting `emotion_labels` or `id2label` renames the labels everywhere; setting `num_labels` to a
      new count replaces the labels by placeholders, exactly as transformers' `num_labels` setter does for
      `id2label`; setting `label2id` to anything but the inverse of the labels is an error.

    A configuration saved by InstructBLIP (`model_type="instructblip"`) loads into this class, which is how
    Salesforce checkpoints become EmoVIT models.
    """

    model_type = "emovit"

    emotion_labels: list[str] | tuple[str, ...] | None = None
    score_temperature: float | int = 1.0

    def __post_init__(self, **kwargs):
        # An InstructBLIP config.json carries `model_type="instructblip"`; stored on the instance it would shadow
        # ours and make the saved folder load as plain InstructBLIP.
        kwargs.pop("model_type", None)
        given_id2label, given_num_labels = self.id2label, kwargs.get("num_labels")
        super().__post_init__(**kwargs)
        named = _label_names(given_id2label)
        labels = self.emotion_labels
        if labels is None:
            if named is not None:
                labels = named
            elif given_num_labels is not None and given_num_labels != len(EMOSET_EMOTIONS):
                labels = _placeholder_labels(given_num_labels)
            else:
                labels = list(EMOSET_EMOTIONS)
        labels = validate_emotion_labels(labels, field="emotion_labels")
        if named is not None and validate_emotion_labels(named, field="id2label") != labels:
            raise ValueError(
                f"`emotion_labels` {labels} and `id2label` {given_id2label} name different labels. `emotion_labels` "
                "is the source of truth: drop `id2label` (it is derived) or make the two agree."
            )
        if given_num_labels is not None and given_num_labels != len(labels):
            # As transformers does when `num_labels` disagrees with `id2label`: the named labels win.
            logger.warning(
                f"`num_labels={given_num_labels}` disagrees with the {len(labels)} labels {labels}; keeping the labels. "
                "Set `config.num_labels` afterwards to replace them by placeholders, or pass other `emotion_labels`."
            )
        self.emotion_labels = labels  # through __setattr__: fills id2label and label2id
        self.score_temperature = self.score_temperature  # through __setattr__: validated

    def __setattr__(self, key, value):
        # Until the base __post_init__ has run, fields are being filled one by one and are not yet in step.
        if not self.__dict__.get("_post_init_done", False):
            super().__setattr__(key, value)
        elif key == "emotion_labels":
            labels = validate_emotion_labels(value, field="emotion_labels")
            super().__setattr__("emotion_labels", labels)
            super().__setattr__("id2label", dict(enumerate(labels)))
            super().__setattr__("label2id", {label: index for index, label in enumerate(labels)})
        elif key == "id2label":
            if value is None:
                raise ValueError("`id2label` follows `emotion_labels` and cannot be None; set `emotion_labels`.")
            names = _label_names(value)
            if names is None:  # transformers' `num_labels` setter writes LABEL_i placeholders
                names = _placeholder_labels(len(value))
            self.emotion_labels = names
        elif key == "score_temperature":
            super().__setattr__(key, validate_temperature(value))
        elif key == "label2id":
            expected = {label: index for index, label in self.id2label.items()}
            if value is not None and {normalise_label(k): int(v) for k, v in value.items()} != expected:
                raise ValueError(
                    f"`label2id` {value} is not the inverse of the labels {self.emotion_labels}; it is derived from "
                    "`emotion_labels`, so set that instead."
                )
        else:
            super().__setattr__(key, value)


def _label_names(id2label) -> list[str] | None:
    """The label names of an `id2label` map in id order, or None when it has none (absent, or transformers'
    `LABEL_i` placeholders)."""
    if not id2label:
        return None
    names = [id2label[key] for key in sorted(id2label, key=int)]
    if all(isinstance(name, str) and name.strip().upper() == f"LABEL_{i}" for i, name in enumerate(names)):
        return None
    return names


def _placeholder_labels(count: int) -> list[str]:
    labels = [f"label_{i}" for i in range(count)]
    logger.warning(
        f"EmoVitConfig: {count} labels without names; using placeholders {labels[:3]}{'...' if count > 3 else ''}. "
        "Set `emotion_labels` to name them (the categorical instruction lists them)."
    )
    return labels


def normalise_label(label) -> str:
    """How the project compares label names: stripped, lower-case, inner whitespace collapsed."""
    return " ".join(str(label).strip().lower().split())


def validate_temperature(value) -> float:
    """Checks `score_temperature` (a number in SCORE_TEMPERATURE_RANGE) and returns it as a float."""
    low, high = SCORE_TEMPERATURE_RANGE
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not low <= value <= high):
        raise ValueError(
            f"`score_temperature` must be a number between {low:g} and {high:g} (where the scores stay finite), got "
            f"{value!r}. 1.0 leaves the scores unchanged; fix the value in config.json or refit it with evaluate.py "
            "--calibrate_on."
        )
    return float(value)


def validate_emotion_labels(labels, field: str = "emotion_labels") -> list[str]:
    """Checks a label list and returns it normalised (stripped, lower-case); errors name `field` and the value."""
    if isinstance(labels, str) or not isinstance(labels, (list, tuple)):
        raise ValueError(f"`{field}` must be a list of label strings, got {labels!r}.")
    if len(labels) < 2:
        raise ValueError(
            f"`{field}` must hold at least two emotions to classify between, got {list(labels)!r}. "
            f"Leave it unset for EmoSet's {len(EMOSET_EMOTIONS)} emotions."
        )
    normalised = []
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"`{field}` holds {label!r}, which is not a non-empty string: {list(labels)!r}.")
        normalised.append(normalise_label(label))
    duplicates = sorted({label for label in normalised if normalised.count(label) > 1})
    if duplicates:
        raise ValueError(f"`{field}` repeats {duplicates} in {list(labels)!r}; each emotion must appear once.")
    return normalised


__all__ = ["EMOSET_EMOTIONS", "SCORE_TEMPERATURE_RANGE", "EmoVitConfig", "normalise_label", "validate_emotion_labels", "validate_temperature"]
