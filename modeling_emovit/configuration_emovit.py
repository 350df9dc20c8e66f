"""EmoVIT configuration: InstructBLIP's configuration plus the emotion label set."""

from huggingface_hub.dataclasses import strict
from transformers import InstructBlipConfig
from transformers.utils import logging


logger = logging.get_logger(__name__)

# EmoSet's emotion index order (info.json): the first four are positive, the last four negative.
EMOSET_EMOTIONS = ("amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness")


@strict
class EmoVitConfig(InstructBlipConfig):
    r"""
    Configuration of [`EmoVitForConditionalGeneration`]: an InstructBLIP model (vision encoder, instruction-aware
    Q-Former, language model) instruction-tuned to recognise the emotion an image evokes.

    All InstructBLIP arguments are accepted unchanged. On top of them:

    emotion_labels (`list[str]`, *optional*, defaults to EmoSet's 8 emotions in EmoSet's index order):
        The emotions the model classifies into. They fill `id2label`/`label2id` and the categorical instruction of
        [`EmoVitProcessor`]. Labels are stored stripped and lower-case, must be unique, and are matched exactly
        (ignoring case) when generated answers are parsed.

    A configuration saved by InstructBLIP (`model_type="instructblip"`) loads into this class, which is how
    Salesforce checkpoints become EmoVIT models.
    """

    model_type = "emovit"

    emotion_labels: list[str] | tuple[str, ...] | None = None

    def __post_init__(self, **kwargs):
        # An InstructBLIP config.json carries `model_type="instructblip"`; stored on the instance it would shadow
        # ours and make the saved folder load as plain InstructBLIP.
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)
        labels = self.emotion_labels
        if labels is None:
            # A config that only carries id2label (for instance edited by hand) keeps its labels; the
            # `LABEL_i` placeholders every PreTrainedConfig starts with are not emotion labels.
            id2label = self.id2label or {}
            names = [id2label[i] for i in sorted(id2label)]
            if names and not all(name == f"LABEL_{i}" for i, name in enumerate(names)):
                labels = names
            else:
                labels = list(EMOSET_EMOTIONS)
        self.emotion_labels = validate_emotion_labels(labels, field="emotion_labels")
        self.id2label = dict(enumerate(self.emotion_labels))
        self.label2id = {label: i for i, label in enumerate(self.emotion_labels)}


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
        normalised.append(" ".join(label.strip().lower().split()))
    duplicates = sorted({label for label in normalised if normalised.count(label) > 1})
    if duplicates:
        raise ValueError(f"`{field}` repeats {duplicates} in {list(labels)!r}; each emotion must appear once.")
    return normalised


__all__ = ["EMOSET_EMOTIONS", "EmoVitConfig", "validate_emotion_labels"]
