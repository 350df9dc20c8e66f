# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""EmoVIT (CVPR 2024) as a transformers model.

Importing this package registers EmoVIT with the Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForImageTextToText`, `AutoProcessor`) and marks the classes so that `save_pretrained` writes `auto_map`
and copies this code: a saved folder then loads with `trust_remote_code=True` where the project is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_emovit import EMOSET_EMOTIONS, PIPELINE_TASK, EmoVitConfig, validate_emotion_labels
from .modeling_emovit import (
    CLASSIFY_METHODS,
    EmotionExplanation,
    EmotionPrediction,
    EmoVitForConditionalGeneration,
    EmoVitForConditionalGenerationModelOutput,
    EmoVitModel,
)
from .pipeline_emovit import VisualEmotionRecognitionPipeline
from .processing_emovit import (
    ANSWER_PREFIX,
    CATEGORICAL_INSTRUCTION,
    CATEGORICAL_INSTRUCTION_VARIANTS,
    EMOTION_WORDS,
    EXPLANATION_PRESETS,
    REASONING_QUESTION,
    EmoVitProcessor,
    format_answer,
    format_categorical_instruction,
    mentioned_emotions,
    parse_emotion_answer,
    ranked_scores,
)


AutoConfig.register(EmoVitConfig.model_type, EmoVitConfig, exist_ok=True)
AutoModel.register(EmoVitConfig, EmoVitModel, exist_ok=True)
AutoModelForImageTextToText.register(EmoVitConfig, EmoVitForConditionalGeneration, exist_ok=True)
AutoProcessor.register(EmoVitConfig, EmoVitProcessor, exist_ok=True)
# In a process that imports this package, `pipeline("visual-emotion-recognition", model=emovit_model)` works for an
# in-memory model too; saved folders name the pipeline in `config.custom_pipelines`.
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=VisualEmotionRecognitionPipeline, pt_model=AutoModelForImageTextToText,
    type="multimodal",
)

EmoVitConfig.register_for_auto_class()
EmoVitModel.register_for_auto_class("AutoModel")
EmoVitForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
EmoVitProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "ANSWER_PREFIX",
    "CATEGORICAL_INSTRUCTION",
    "CLASSIFY_METHODS",
    "CATEGORICAL_INSTRUCTION_VARIANTS",
    "EMOSET_EMOTIONS",
    "EMOTION_WORDS",
    "PIPELINE_TASK",
    "EXPLANATION_PRESETS",
    "REASONING_QUESTION",
    "EmoVitConfig",
    "EmoVitForConditionalGeneration",
    "EmoVitForConditionalGenerationModelOutput",
    "EmoVitModel",
    "EmoVitProcessor",
    "EmotionExplanation",
    "EmotionPrediction",
    "VisualEmotionRecognitionPipeline",
    "format_answer",
    "format_categorical_instruction",
    "mentioned_emotions",
    "parse_emotion_answer",
    "ranked_scores",
    "validate_emotion_labels",
]
