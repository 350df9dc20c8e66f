"""The tiny base's reading: a text corpus about drawn scenes that the offline miniature's language model learns from.

Vicuna comes to EmoVIT knowing language: it can describe a scene and say why it feels as it does, and it follows an
instruction. The tiny base's language model is given the same start, offline: before any EmoVIT training it is
pretrained as a causal LM on documents this module writes. Each document pairs what a picture shows, in words, with
one of the instructions EmoVIT trains on and its answer (categorical, conversation or reasoning), laid out as the
model sees them in training: `context <s> instruction answer </s>`. In training, the Q-Former's query outputs stand
where the context stands here, so the language model has learnt to let what comes first decide what it writes.

The pictures are drawn by the synthetic sample's own painter (`synthetic.draw_scene`), their brightness and
colourfulness measured as the attributes stage measures them, and the answers written by the template backend, so
the corpus speaks of exactly the scenes, objects and words the miniature's images and answers hold.
"""

from __future__ import annotations

import random

import numpy as np

from modeling_emovit.configuration_emovit import EMOSET_EMOTIONS
from modeling_emovit.processing_emovit import (
    CATEGORICAL_INSTRUCTION_VARIANTS,
    format_answer,
    format_categorical_instruction,
)

from .attributes import compute_brightness, compute_colorfulness
from .synthetic import draw_scene
from .template_backend import describe, describe_style, write_conversation, write_reasoning

# The share of documents without a context: the language model also answers when nothing comes first.
NO_CONTEXT_SHARE = 0.1


def corpus_documents(num_pictures: int, seed: int = 0) -> list[dict]:
    """`num_pictures` drawn pictures (the emotions in turn), each giving one categorical, one conversation and one
    reasoning document: dicts with `context`, `instruction` and `answer` strings."""
    rng = random.Random(seed)
    documents = []
    for index in range(num_pictures):
        emotion = EMOSET_EMOTIONS[index % len(EMOSET_EMOTIONS)]
        image, attributes = draw_scene(emotion, rng)
        pixels = np.asarray(image)
        attributes.update(brightness=compute_brightness(pixels), colorfulness=compute_colorfulness(pixels))
        context = f"{describe('', attributes)} {describe_style(attributes)}"
        image_id = f"corpus_{index:06d}"
        template = CATEGORICAL_INSTRUCTION_VARIANTS[index % len(CATEGORICAL_INSTRUCTION_VARIANTS)]
        pairs = [(format_categorical_instruction(EMOSET_EMOTIONS, template), format_answer(emotion)),
                 rng.choice(write_conversation(image_id, emotion, "", attributes)),
                 *write_reasoning(image_id, emotion, "", attributes)]
        for instruction, answer in pairs:
            shown = "" if rng.random() < NO_CONTEXT_SHARE else context
            documents.append({"context": shown, "instruction": instruction, "answer": answer})
    rng.shuffle(documents)
    return documents


def corpus_texts(documents: list[dict]) -> list[str]:
    """Every string of the documents, for training tokenizers."""
    return [text for document in documents for text in document.values() if text]
