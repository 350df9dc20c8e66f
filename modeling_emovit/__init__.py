"""EmoVIT as a transformers model (temporary init: model classes land next)."""

from .configuration_emovit import EMOSET_EMOTIONS, EmoVitConfig, validate_emotion_labels
from .processing_emovit import (
    ANSWER_PREFIX,
    CATEGORICAL_INSTRUCTION,
    CATEGORICAL_INSTRUCTION_VARIANTS,
    REASONING_QUESTION,
    EmoVitProcessor,
    format_answer,
    format_categorical_instruction,
    parse_emotion_answer,
)
