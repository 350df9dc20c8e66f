# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""EmoVIT processor: InstructBLIP's processor plus EmoVIT's prompts and training-example builder.

Every prompt the project uses is defined in this file, once: the data pipeline, train.py and evaluate.py import them.
"""

import json
import math
import os
import re

import numpy as np
import torch
from PIL import Image
from transformers import InstructBlipProcessor
from transformers.feature_extraction_utils import BatchFeature
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.utils import CONFIG_NAME, PROCESSOR_NAME, cached_file

from .configuration_emovit import EMOSET_EMOTIONS, validate_emotion_labels
from .image_utils import to_rgb


# The categorical instruction. `{labels}` is replaced by the label list ("amusement, awe, ..., sadness").
CATEGORICAL_INSTRUCTION = (
    "Which emotion does this image evoke in the people who look at it? "
    "Choose one of: {labels}. Reply as 'Predict emotion: <emotion>'."
)
# Paraphrases of the categorical instruction for evaluate.py's instruction-sensitivity test. Index 0 is the one
# the model is trained with.
CATEGORICAL_INSTRUCTION_VARIANTS = (
    CATEGORICAL_INSTRUCTION,
    "Look at the picture and name the feeling it is most likely to stir in a viewer, picking from: {labels}. "
    "Answer in the form 'Predict emotion: <emotion>'.",
    "Out of these emotions: {labels}, which one fits the mood this photo creates best? "
    "Write your answer as 'Predict emotion: <emotion>'.",
    "Classify the emotion this image conveys. The options are {labels}. Respond with 'Predict emotion: <emotion>'.",
    "Imagine seeing this image for the first time. Which of {labels} would you feel? "
    "Give the answer as 'Predict emotion: <emotion>'.",
)
ANSWER_PREFIX = "Predict emotion:"
# Free questions used by the offline demo and evaluate.py's reasoning sample; any text works as a question.
REASONING_QUESTION = "What emotion does this image evoke, and what in the image makes it feel that way?"

# Questions for [`EmoVitForConditionalGeneration.explain`]. "label" names the label the model has just predicted, as
# EmoVIT's reasoning instructions name the image's emotion; "free" lets the model name the emotion itself; "humour"
# is the paper's humour-comprehension question. `{emotion}` is replaced by the predicted label.
EXPLANATION_PRESETS = {
    "label": "This image evokes {emotion}. What in it makes a viewer feel {emotion}? Point at what can be seen: the "
             "scene, the objects, the people and their expressions, the light and the colours.",
    "free": REASONING_QUESTION,
    "humour": "Why is this image funny? Explain the joke by pointing at what can be seen in it.",
}
# Words that name an EmoSet emotion in free text, beyond the label itself. Only forms that mean the emotion and
# nothing else ("content" and "awesome" are left out: "the content of the image", "an awesome view").
EMOTION_WORDS = {
    "amusement": ("amusement", "amused", "amusing"),
    "awe": ("awe", "awed", "awestruck", "awe-inspiring"),
    "contentment": ("contentment", "contented"),
    "excitement": ("excitement", "excited", "exciting"),
    "anger": ("anger", "angry", "angered", "angrily"),
    "disgust": ("disgust", "disgusted", "disgusting"),
    "fear": ("fear", "fearful", "afraid", "scared", "scary", "frightened", "frightening"),
    "sadness": ("sadness", "sad", "saddened", "saddening"),
}

_ANSWER_PATTERN = re.compile(r"^\s*predict\s+emotion\s*:\s*(?P<label>.+?)\s*[.!]?\s*$", re.IGNORECASE | re.DOTALL)

_MIN_IMAGE_SIDE = 2
# What `from_pretrained` passes on to locate config.json next to the processor's files.
_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "local_files_only", "revision", "subfolder")


def format_label_list(labels) -> str:
    return ", ".join(labels)


def format_categorical_instruction(labels, template: str = CATEGORICAL_INSTRUCTION) -> str:
    """Renders the categorical instruction for `labels`; refuses a template that would hide some of them."""
    if "{labels}" not in template:
        raise ValueError(
            f"The categorical instruction template {template!r} has no '{{labels}}' placeholder, so the model "
            f"would never see the label list {list(labels)!r}. Add '{{labels}}' where the emotions should go."
        )
    return template.replace("{labels}", format_label_list(labels))


def format_answer(label: str) -> str:
    """The answer a categorical example is trained on: `Predict emotion: <label>`."""
    return f"{ANSWER_PREFIX} {label}"


def parse_emotion_answer(text: str, labels) -> str | None:
    """Returns the label a generated answer names, or None when the answer is not `Predict emotion: <label>`
    with one of `labels` (never a guess: an answer like "Predict emotion: joy" is invalid, not mapped)."""
    match = _ANSWER_PATTERN.match(text or "")
    if match is None:
        return None
    named = " ".join(match.group("label").lower().split())
    return named if named in labels else None


def mentioned_emotions(text: str, labels) -> list[str]:
    """The labels a free text names, in the order they first appear: the label itself or, for EmoSet's labels, one
    of its `EMOTION_WORDS` ("sad" names sadness), as whole words, case-insensitively. Negation is not understood:
    "not sad" names sadness too, which errs on the side of flagging an explanation for a human to read."""
    found = []
    for label in labels:
        words = sorted({label, *EMOTION_WORDS.get(label, ())}, key=len, reverse=True)
        pattern = r"(?<![\w-])(?:" + "|".join(re.escape(word) for word in words) + r")(?![\w-])"
        match = re.search(pattern, text or "", flags=re.IGNORECASE)
        if match is not None:
            found.append((match.start(), label))
    return [label for _, label in sorted(found)]


def ranked_scores(scores, labels, top_k: int | None = None) -> list[dict]:
    """Image classification's output: `[{"label", "score"}, ...]` from most to least likely (ties in label order),
    the first `top_k` of them (all by default). `scores` is a sequence of floats in `labels` order; a NaN score
    ranks after every number, so it is never the top label."""
    ranked = sorted(zip(labels, [float(score) for score in scores]),
                    key=lambda pair: (math.isnan(pair[1]), -pair[1]))
    return [{"label": label, "score": score} for label, score in ranked[:top_k]]


def _layout_name(decoder_only: bool) -> str:
    return "decoder-only" if decoder_only else "encoder-decoder"


def _decoder_only_from_model_config(pretrained_model_name_or_path, **hub_kwargs) -> bool | None:
    """`use_decoder_only_language_model` as the model's config.json has it (worked out from the language model's
    type, as [`InstructBlipConfig`] does, when the file leaves it out); None without a config.json beside the
    processor (a processor saved on its own, or a path to processor_config.json itself)."""
    if os.path.isfile(pretrained_model_name_or_path):
        return None
    path = cached_file(pretrained_model_name_or_path, CONFIG_NAME, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False, **hub_kwargs)
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if "use_decoder_only_language_model" in config:
        return bool(config["use_decoder_only_language_model"])
    model_type = config.get("text_config", {}).get("model_type")
    return None if model_type is None else model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


class EmoVitProcessor(InstructBlipProcessor):
    r"""
    Wraps a BLIP image processor, the language model's tokenizer and the Q-Former's tokenizer (as
    [`InstructBlipProcessor`] does) and adds what EmoVIT needs on top:

    - the categorical instruction for `emotion_labels` (`categorical_instruction`),
    - inputs for emotion classification by scoring or generation (`classification_inputs`),
    - training examples with the language-model labels masked to the answer (`training_features`), laid out for a
      decoder-only or an encoder-decoder language model.

    Instructions and answers are tokenised as text: a literal `<image>`, `</s>` or `[SEP]` inside them becomes
    ordinary characters, never a special token, so generated data cannot add image placeholders or end a sequence.

    Args:
        image_processor ([`BlipImageProcessor`]): resizes and normalises images.
        tokenizer: the language model's tokenizer. The `<image>` placeholder token is added if missing.
        qformer_tokenizer: the Q-Former's (BERT) tokenizer; the Q-Former reads the instruction too.
        num_query_tokens (`int`): number of query tokens, as in the model's config.
        emotion_labels (`list[str]`, *optional*): the labels to classify into; EmoSet's 8 by default. Must equal the
            model's `config.emotion_labels`.
        categorical_template (`str`, *optional*): the categorical instruction with a `{labels}` placeholder.
        use_decoder_only_language_model (`bool`, *optional*, defaults to `True`): how training batches are laid out,
            as the model's `config.use_decoder_only_language_model`: the answer follows the instruction in one
            sequence (decoder-only), or is the decoder's target only (encoder-decoder, e.g. FlanT5). `from_pretrained`
            takes it from the folder's config.json when processor_config.json does not set it.
    """

    def __init__(
        self,
        image_processor,
        tokenizer,
        qformer_tokenizer,
        num_query_tokens=None,
        emotion_labels=None,
        categorical_template=None,
        use_decoder_only_language_model=True,
        **kwargs,
    ):
        super().__init__(image_processor, tokenizer, qformer_tokenizer, num_query_tokens=num_query_tokens, **kwargs)
        self.emotion_labels = validate_emotion_labels(
            list(EMOSET_EMOTIONS) if emotion_labels is None else emotion_labels, field="processor.emotion_labels"
        )
        self.categorical_template = categorical_template or CATEGORICAL_INSTRUCTION
        if not isinstance(use_decoder_only_language_model, bool):
            raise TypeError(
                f"`use_decoder_only_language_model` must be True or False, got {use_decoder_only_language_model!r}; "
                "take it from the model's `config.use_decoder_only_language_model`."
            )
        self.use_decoder_only_language_model = use_decoder_only_language_model
        # Rendering once here turns a template without `{labels}` into an error at construction time.
        format_categorical_instruction(self.emotion_labels, self.categorical_template)

    @classmethod
    def get_processor_dict(cls, pretrained_model_name_or_path, **kwargs):
        """As [`ProcessorMixin.get_processor_dict`], with `use_decoder_only_language_model` taken from the model's
        config.json when processor_config.json does not set it (an InstructBLIP folder such as Salesforce's FlanT5
        ones, or a processor saved before the setting existed): a FlanT5 folder then lays out encoder-decoder
        batches without being told. A processor_config.json that contradicts config.json is refused; a value passed
        to `from_pretrained` is used as given."""
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        processor_dict, kwargs = super().get_processor_dict(pretrained_model_name_or_path, **kwargs)
        if "use_decoder_only_language_model" in kwargs:
            return processor_dict, kwargs
        from_model = _decoder_only_from_model_config(pretrained_model_name_or_path, **hub_kwargs)
        if from_model is None:
            return processor_dict, kwargs
        saved = processor_dict.get("use_decoder_only_language_model")
        if saved is not None and saved != from_model:
            raise ValueError(
                f"{pretrained_model_name_or_path!r}: {PROCESSOR_NAME} sets use_decoder_only_language_model={saved!r} "
                f"but {CONFIG_NAME} says the language model is {_layout_name(from_model)} "
                f"(use_decoder_only_language_model={from_model}); training batches would put the answer in the "
                f"wrong place. Set it to {from_model} in {PROCESSOR_NAME} (or remove it there), or save the processor "
                "that belongs to this model next to it."
            )
        processor_dict["use_decoder_only_language_model"] = from_model
        return processor_dict, kwargs

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """As [`ProcessorMixin.save_pretrained`]. Saving writes `auto_map` into the saved files (so the folder loads
        with `trust_remote_code`) but leaves this processor as it was: the base class also sets `auto_map` on the
        live object, which a processor loaded back from the folder does not have."""
        had_auto_map = "auto_map" in self.__dict__
        try:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            if not had_auto_map:
                self.__dict__.pop("auto_map", None)

    @property
    def categorical_instruction(self) -> str:
        return format_categorical_instruction(self.emotion_labels, self.categorical_template)

    @property
    def image_token_id(self) -> int:
        # InstructBlipProcessor keeps an AddedToken, or the tokenizer's own `image_token` string when it has one
        return self.tokenizer.convert_tokens_to_ids(getattr(self.image_token, "content", self.image_token))

    # ------------------------------------------------------------------ images

    def preprocess_images(self, images) -> torch.Tensor:
        """Checks and converts images (PIL, or HWC uint8 arrays) to `pixel_values` of shape (batch, 3, H, W)."""
        if isinstance(images, (Image.Image, np.ndarray)):
            images = [images]
        if len(images) == 0:
            raise ValueError("No images were given; pass a list of at least one PIL image.")
        converted = [self._check_image(image, index) for index, image in enumerate(images)]
        return self.image_processor(converted, return_tensors="pt")["pixel_values"]

    @staticmethod
    def _check_image(image, index: int) -> Image.Image:
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise ValueError(
                    f"Image {index} is an array of shape {image.shape} and dtype {image.dtype}; expected an RGB "
                    "array of shape (height, width, 3) and dtype uint8, or a PIL image."
                )
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise TypeError(f"Image {index} is a {type(image).__name__}; expected a PIL image or a uint8 array.")
        if min(image.size) < _MIN_IMAGE_SIDE:
            raise ValueError(
                f"Image {index} is {image.size[0]}x{image.size[1]} pixels; an image needs at least "
                f"{_MIN_IMAGE_SIDE} pixels on each side. Check that the file decoded completely."
            )
        # The project's one image rule: 16-bit and float modes are scaled to 8 bits, not clipped.
        return to_rgb(image, index)

    # ------------------------------------------------------------------ text

    def _instruction_ids(self, instruction: str, max_length: int) -> list[int]:
        """Image placeholders + tokenised instruction; a long instruction loses its *start* (as LAVIS does),
        never the leading special token."""
        ids = self.tokenizer(instruction, add_special_tokens=True, split_special_tokens=True)["input_ids"]
        if len(ids) > max_length:
            bos = self.tokenizer.bos_token_id
            keep_first = 1 if bos is not None and ids[0] == bos else 0
            ids = ids[:keep_first] + ids[len(ids) - (max_length - keep_first) :]
        return [self.image_token_id] * self.num_query_tokens + ids

    def _answer_ids(self, answer: str, max_length: int) -> list[int]:
        """Answer tokens without BOS, cut to `max_length`, then EOS: the model learns to stop."""
        if self.tokenizer.eos_token_id is None:
            raise ValueError("The tokenizer has no EOS token; set `tokenizer.eos_token` before building answers.")
        ids = self.tokenizer(answer, add_special_tokens=False, split_special_tokens=True)["input_ids"][:max_length]
        return ids + [self.tokenizer.eos_token_id]

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            raise ValueError(
                "The tokenizer has no pad token. Add one (LAVIS uses '[PAD]': "
                "`tokenizer.add_special_tokens({'pad_token': '[PAD]'})`) and resize the model's embeddings."
            )
        return pad

    def _qformer_text(self, instructions: list[str], max_length: int) -> dict:
        encoded = self.qformer_tokenizer(
            instructions, padding="longest", truncation=True, max_length=max_length, return_tensors="pt",
            split_special_tokens=True,
        )
        return {"qformer_input_ids": encoded["input_ids"], "qformer_attention_mask": encoded["attention_mask"]}

    def classification_inputs(
        self, images, instruction: str | None = None, max_instruction_length: int = 128
    ) -> BatchFeature:
        """Inputs for [`EmoVitForConditionalGeneration.classify`]: the images, the categorical instruction for every
        image (unpadded, since it is the same text) and every label's answer as a candidate continuation.

        Returns a `BatchFeature` with `pixel_values` (batch, 3, H, W), `qformer_input_ids`/`qformer_attention_mask`
        (batch, q_len), `input_ids`/`attention_mask` (batch, prompt_len), and `candidate_input_ids`/
        `candidate_attention_mask` (num_labels, answer_len) right-padded, each ending in EOS.
        """
        pixel_values = self.preprocess_images(images)
        batch_size = pixel_values.shape[0]
        instruction = self.categorical_instruction if instruction is None else instruction
        missing = [label for label in self.emotion_labels if label not in instruction.lower()]
        if missing:
            raise ValueError(
                f"The classification instruction does not mention the labels {missing} of the processor's "
                f"emotion_labels {self.emotion_labels}: the prompt and label list are out of sync. Instruction: "
                f"{instruction!r}"
            )
        prompt = self._instruction_ids(instruction, max_instruction_length)
        candidates = [self._answer_ids(format_answer(label), max_length=64) for label in self.emotion_labels]
        longest = max(len(c) for c in candidates)
        pad = self._pad_id()
        features = {
            "pixel_values": pixel_values,
            "input_ids": torch.tensor([prompt] * batch_size),
            "attention_mask": torch.ones(batch_size, len(prompt), dtype=torch.long),
            "candidate_input_ids": torch.tensor([c + [pad] * (longest - len(c)) for c in candidates]),
            "candidate_attention_mask": torch.tensor([[1] * len(c) + [0] * (longest - len(c)) for c in candidates]),
        }
        features.update(self._qformer_text([instruction] * batch_size, max_instruction_length))
        return BatchFeature(features)

    def generation_inputs(self, images, instructions: list[str], max_instruction_length: int = 128) -> BatchFeature:
        """Inputs for `generate` with one instruction per image: `[pad][image placeholders][BOS instruction]`,
        *left*-padded so every row's next token comes right after its own prompt.

        Returns a `BatchFeature` with `pixel_values` (batch, 3, H, W), `input_ids`/`attention_mask`
        (batch, prompt_len) and `qformer_input_ids`/`qformer_attention_mask` (batch, q_len).
        """
        pixel_values = self.preprocess_images(images)
        if len(instructions) != pixel_values.shape[0]:
            raise ValueError(f"Got {pixel_values.shape[0]} images but {len(instructions)} instructions; one each.")
        pad = self._pad_id()
        prompts = [self._instruction_ids(instruction, max_instruction_length) for instruction in instructions]
        longest = max(len(prompt) for prompt in prompts)
        features = {
            "pixel_values": pixel_values,
            "input_ids": torch.tensor([[pad] * (longest - len(p)) + p for p in prompts]),
            "attention_mask": torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts]),
        }
        features.update(self._qformer_text(list(instructions), max_instruction_length))
        return BatchFeature(features)

    def training_features(
        self,
        instructions: list[str],
        answers: list[str],
        images=None,
        pixel_values: torch.Tensor | None = None,
        max_instruction_length: int = 128,
        max_answer_length: int = 256,
    ) -> BatchFeature:
        """Builds a training batch laid out as LAVIS does, for the language model named by
        `use_decoder_only_language_model`.

        Decoder-only (Vicuna, Llama): one right-padded sequence `[image placeholders][BOS instruction][answer EOS][pad]`
        in `input_ids`; `labels` copy it on the answer and its EOS and are -100 on the image placeholders, the
        instruction and the padding, so the loss covers the answer only.

        Encoder-decoder (FlanT5, as LAVIS's blip2_t5_instruct): `input_ids`/`attention_mask` hold the encoder's input
        `[image placeholders][instruction EOS]`, right-padded, and `labels` the answer and its EOS, right-padded with
        -100, with `decoder_attention_mask` over them. The answer is never in the encoder's input: the model sees it
        there neither at training nor at inference. The language model builds its decoder input from `labels`.

        The Q-Former gets the instruction text. Pass `images` (PIL) or ready `pixel_values`; with neither, no
        `pixel_values` are returned (cached features).
        """
        if len(instructions) != len(answers):
            raise ValueError(f"Got {len(instructions)} instructions but {len(answers)} answers; they pair up 1:1.")
        pad = self._pad_id()
        prompts = [self._instruction_ids(instruction, max_instruction_length) for instruction in instructions]
        targets = [self._answer_ids(answer, max_answer_length) for answer in answers]
        if self.use_decoder_only_language_model:
            rows = [prompt + target for prompt, target in zip(prompts, targets)]
            label_rows = [[-100] * len(prompt) + target for prompt, target in zip(prompts, targets)]
            longest = max(len(row) for row in rows)
            features = {
                "input_ids": torch.tensor([row + [pad] * (longest - len(row)) for row in rows]),
                "attention_mask": torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in rows]),
                "labels": torch.tensor([row + [-100] * (longest - len(row)) for row in label_rows]),
            }
        else:
            longest_prompt = max(len(prompt) for prompt in prompts)
            longest_target = max(len(target) for target in targets)
            features = {
                "input_ids": torch.tensor([p + [pad] * (longest_prompt - len(p)) for p in prompts]),
                "attention_mask": torch.tensor([[1] * len(p) + [0] * (longest_prompt - len(p)) for p in prompts]),
                "labels": torch.tensor([t + [-100] * (longest_target - len(t)) for t in targets]),
                "decoder_attention_mask": torch.tensor(
                    [[1] * len(t) + [0] * (longest_target - len(t)) for t in targets]
                ),
            }
        features.update(self._qformer_text(list(instructions), max_instruction_length))
        if images is not None:
            features["pixel_values"] = self.preprocess_images(images)
        elif pixel_values is not None:
            features["pixel_values"] = pixel_values
        return BatchFeature(features)


__all__ = [
    "ANSWER_PREFIX",
    "CATEGORICAL_INSTRUCTION",
    "CATEGORICAL_INSTRUCTION_VARIANTS",
    "EMOTION_WORDS",
    "EXPLANATION_PRESETS",
    "REASONING_QUESTION",
    "EmoVitProcessor",
    "format_answer",
    "format_categorical_instruction",
    "mentioned_emotions",
    "parse_emotion_answer",
]
