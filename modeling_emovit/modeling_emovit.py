# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""EmoVIT model: InstructBLIP with Q-Former-side instruction tuning and emotion classification."""

import functools
import inspect
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GenerationMixin, InstructBlipForConditionalGeneration, InstructBlipModel
from transformers.loss.loss_utils import fixed_cross_entropy
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.instructblip.modeling_instructblip import (
    BaseModelOutputWithVisionQformerOutputs,
    InstructBlipForConditionalGenerationModelOutput,
)
from transformers.utils import logging
from transformers.utils.generic import can_return_tuple

from .configuration_emovit import CUSTOM_PIPELINES, EmoVitConfig
from .processing_emovit import EXPLANATION_PRESETS, mentioned_emotions, parse_emotion_answer, ranked_scores


logger = logging.get_logger(__name__)

# How `classify` (and everything built on it) picks a label: by scoring every label's answer, or by parsing a generated
# one.
CLASSIFY_METHODS = ("score", "generate")


@dataclass
class EmotionPrediction:
    """Result of [`EmoVitForConditionalGeneration.classify`] for a batch of images.

    Attributes:
        labels (`list[str | None]`): the predicted emotion per image; `None` when a generated answer named no label.
        scores (`torch.FloatTensor` of shape `(batch_size, num_labels)`): per-label scores in `config.emotion_labels`
            order. `score`: the probability of each label's answer, the softmax of `log_likelihoods /
            config.score_temperature` (rows sum to 1). `generate`: 1 for the label the answer names and 0 elsewhere
            (an all-zero row for an invalid answer).
        texts (`list[str] | None`): the generated answers (`generate` only).
        log_likelihoods (`torch.FloatTensor` of shape `(batch_size, num_labels)`, *optional*): `score` only: each
            label answer's summed log-probability, before the temperature (what a temperature is fitted on).
    """

    labels: list
    scores: torch.Tensor
    texts: list | None = None
    log_likelihoods: torch.Tensor | None = None

    @property
    def valid(self) -> list[bool]:
        return [label is not None for label in self.labels]


@dataclass
class EmotionExplanation:
    """Result of [`EmoVitForConditionalGeneration.explain`] for a batch of images.

    Attributes:
        labels (`list[str | None]`): the label per image, as [`~EmoVitForConditionalGeneration.classify`] gives it.
        scores (`torch.FloatTensor` of shape `(batch_size, num_labels)`): classify's scores, in
            `config.emotion_labels` order.
        explanations (`list[str]`): the generated explanation per image.
        mentioned (`list[list[str]]`): the labels each explanation names, in order of appearance.
        agreement (`list[str]`): per image, `"agrees"` (the explanation names the label and no other), `"names_other"`
            (it names another label: the explanation contradicts the prediction; also logged as a warning),
            `"names_none"` (it names no label), or `"no_label"` (a `generate` answer named no label).
    """

    labels: list
    scores: torch.Tensor
    explanations: list
    mentioned: list
    agreement: list

    def rows(self, labels, top_k: int | None = None) -> list[dict]:
        """One dict per image: `label`, `scores` (`[{"label", "score"}]`, highest first, `top_k` of them; all by
        default), `explanation`, `mentioned`, `agreement`. `labels` is `config.emotion_labels`."""
        rows = []
        for row, label in enumerate(self.labels):
            rows.append({
                "label": label,
                "scores": ranked_scores(self.scores[row].tolist(), labels, top_k),
                "explanation": self.explanations[row],
                "mentioned": self.mentioned[row],
                "agreement": self.agreement[row],
            })
        return rows


def agreement_of(label: str | None, mentioned: list[str]) -> str:
    """How an explanation that names `mentioned` relates to the predicted `label` (see [`EmotionExplanation`])."""
    if label is None:
        return "no_label"
    if any(other != label for other in mentioned):
        return "names_other"
    return "agrees" if mentioned else "names_none"


@dataclass
class EmoVitForConditionalGenerationModelOutput(InstructBlipForConditionalGenerationModelOutput):
    r"""
    InstructBLIP's output plus the multimodal encoder output that current transformers VLMs return:

    image_outputs (`BaseModelOutputWithVisionQformerOutputs`): the image branch's output as
        [`EmoVitForConditionalGeneration.get_image_features`] returns it: `pooler_output` holds the projected query
        features `(batch_size, num_query_tokens, text_hidden_size)` placed into the `<image>` tokens, and
        `vision_outputs` / `qformer_outputs` the ViT's and the Q-Former's outputs.
    """

    image_outputs: BaseModelOutputWithVisionQformerOutputs | None = None

    def to_tuple(self) -> tuple:
        nested = ("vision_outputs", "qformer_outputs", "language_model_outputs", "image_outputs")
        return tuple(self[k] if k not in nested else getattr(self, k).to_tuple() for k in self.keys())


@functools.cache
def _cache_keyword(language_model_class) -> str:
    """The keyword a decoder-only language model takes its key/value cache under (transformers renamed
    `past_key_values` to `cache`); decided once per class."""
    return "cache" if "cache" in inspect.signature(language_model_class.forward).parameters else "past_key_values"


class EmoVitModel(InstructBlipModel):
    """InstructBLIP's base model (no language-model head) under EmoVIT's configuration, for `AutoModel`."""

    config_class = EmoVitConfig
    config: EmoVitConfig


class EmoVitForConditionalGeneration(InstructBlipForConditionalGeneration, GenerationMixin):
    r"""
    InstructBLIP instruction-tuned for visual emotion recognition and reasoning (EmoVIT, CVPR 2024).

    Same weights and forward pass as [`InstructBlipForConditionalGeneration`]; EmoVIT adds
    - `freeze_for_instruction_tuning()`: only the Q-Former side (Q-Former, query tokens, language projection, the
      vision post-LayerNorm) learns;
    - `classify()` / `score_emotions()`: emotion classification over `config.emotion_labels` by greedy generation
      or by the likelihood of each label's answer;
    - `vision_hidden_states`: the frozen ViT's output before its post-LayerNorm can be passed instead of
      `pixel_values`, so training can compute it once per image.
    """

    config_class = EmoVitConfig
    config: EmoVitConfig

    # What EmoVIT instruction tuning trains (LAVIS: Qformer, query_tokens, llm_proj, ln_vision).
    TRAINABLE_PREFIXES = ("qformer.", "query_tokens", "language_projection.", "vision_model.post_layernorm.")
    # Tensors of the Q-Former that no loss can reach: the last layer's feed-forward block for the *instruction*
    # tokens is computed, then sliced away (only the query outputs go on to the language model).
    unused_qformer_suffixes = ("intermediate.dense", "output.dense", "output.LayerNorm")

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if model.config.image_token_index is None:
            model._add_image_token()
        return loaded

    def save_pretrained(self, save_directory, *args, **kwargs):
        """As [`PreTrainedModel.save_pretrained`], and the folder also offers the `visual-emotion-recognition`
        pipeline: `custom_pipelines` goes into `config.json` and the pipeline's file is copied beside the model code.
        The model never imports its pipeline; the file is copied by name, with the pipeline's own relative imports
        (the processor and the image rule), which the model's code needs too."""
        pipeline_file = Path(__file__).with_name("pipeline_emovit.py")
        offers_pipeline = pipeline_file.is_file()
        if offers_pipeline:
            self.config.custom_pipelines = {task: dict(info) for task, info in CUSTOM_PIPELINES.items()}
        else:  # loaded from a folder that came without it: save what there is rather than name a missing file
            logger.warning(f"{pipeline_file} is missing, so the saved folder will not offer the pipeline.")
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if offers_pipeline and self._auto_class is not None and kwargs.get("is_main_process", True):
            shutil.copy(pipeline_file, Path(save_directory) / pipeline_file.name)
        return result

    def _add_image_token(self):
        """Configs from transformers < 4.47 (and LAVIS) have no `<image>` placeholder token. The processor appends
        it to the tokenizer, so it gets the id right after the current vocabulary; give it an embedding row there.
        The row's value never matters: query outputs overwrite it."""
        vocab_size = self.get_input_embeddings().weight.shape[0]
        logger.warning(
            "The configuration has no `image_token_index` (saved by an older transformers); adding the `<image>` "
            f"placeholder as token {vocab_size} and growing the language model's embeddings to {vocab_size + 1}."
        )
        self.resize_token_embeddings(vocab_size + 1, mean_resizing=False)
        self.config.image_token_index = vocab_size

    # ------------------------------------------------------------------ training

    def qformer_unused_parameter_names(self) -> list[str]:
        last = self.config.qformer_config.num_hidden_layers - 1
        prefix = f"qformer.encoder.layer.{last}."
        return [
            name
            for name, _ in self.named_parameters()
            if name.startswith(prefix) and name[len(prefix) :].rsplit(".", 1)[0] in self.unused_qformer_suffixes
        ]

    def freeze_for_instruction_tuning(self, freeze_unused: bool = False) -> dict:
        """Freezes the model for EmoVIT instruction tuning. Trainable: the Q-Former, the query tokens, the language
        projection and the vision post-LayerNorm (LAVIS's `ln_vision`); the ViT and the language model are frozen.

        `freeze_unused=True` also freezes the last Q-Former layer's instruction feed-forward block, whose gradient is
        zero by construction (see `qformer_unused_parameter_names`). That changes no loss; it keeps weight decay
        from shrinking tensors no gradient defends, saves their optimizer state, and lets DDP run with
        `find_unused_parameters=False`.

        Returns `{"trainable": int, "total": int}` parameter counts.
        """
        unused = set(self.qformer_unused_parameter_names()) if freeze_unused else set()
        for name, param in self.named_parameters():
            param.requires_grad_(name.startswith(self.TRAINABLE_PREFIXES) and name not in unused)
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        logger.info(f"EmoVIT instruction tuning: {trainable:,} trainable of {total:,} parameters "
                    f"({100 * trainable / total:.2f}%)")
        return {"trainable": trainable, "total": total}

    def cast_frozen_towers(self, dtype: torch.dtype) -> None:
        """Holds the frozen ViT and the language model in `dtype` (mixed-precision training). The ViT's
        post-LayerNorm, the Q-Former, the query tokens and the language projection keep their float32 weights, and
        so does the loss, which InstructBLIP computes in float32 from the logits."""
        self.vision_model.embeddings.to(dtype)
        self.vision_model.encoder.to(dtype)
        self.language_model.to(dtype)

    def add_lora(self, r: int, alpha: int = 16, dropout: float = 0.05, target_modules=("q_proj", "v_proj")) -> int:
        """Adds trainable LoRA adapters (peft) to the language model's attention projections, in place; returns the
        number of trainable parameters after. `merge_lora()` folds them back in before saving, so a saved model is a
        plain EmoVIT."""
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules))
        lora_model = get_peft_model(self.language_model, config).base_model  # injects the adapters in place
        # Kept outside the module tree (object.__setattr__), so that state_dict and parameters() see no copy.
        object.__setattr__(self, "_lora_model", lora_model)
        self.language_model = lora_model.model
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def merge_lora(self) -> None:
        """Folds the adapters of `add_lora` into the language model's weights and removes them."""
        lora_model = self.__dict__.pop("_lora_model", None)
        if lora_model is None:
            raise ValueError("The model has no LoRA adapters to merge; call `add_lora` first.")
        self.language_model = lora_model.merge_and_unload()

    # ------------------------------------------------------------------ forward

    def _check_pixel_values(self, pixel_values, interpolate_pos_encoding):
        if pixel_values is None or interpolate_pos_encoding:
            return
        expected = self.config.vision_config.image_size
        expected = tuple(expected) if isinstance(expected, (list, tuple)) else (expected, expected)
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3 or tuple(pixel_values.shape[-2:]) != expected:
            raise ValueError(
                f"pixel_values have shape {tuple(pixel_values.shape)}, but the vision encoder expects "
                f"(batch, 3, {expected[0]}, {expected[1]}). Prepare images with the model's processor, or pass "
                "`interpolate_pos_encoding=True` to run at another resolution."
            )

    def encode_vision(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen ViT's last hidden state *before* the post-LayerNorm (which trains), to cache across epochs.

        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`).
        Returns `(batch_size, num_patches + 1, vision_hidden_size)`.
        """
        self._check_pixel_values(pixel_values, False)
        embeddings = self.vision_model.embeddings(pixel_values)
        return self.vision_model.encoder(inputs_embeds=embeddings).last_hidden_state

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.FloatTensor | None = None,
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.LongTensor | None = None,
        interpolate_pos_encoding: bool = False,
        vision_hidden_states: torch.FloatTensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithVisionQformerOutputs:
        r"""
        As [`InstructBlipForConditionalGeneration.get_image_features`], plus:

        vision_hidden_states (`torch.FloatTensor` of shape `(batch_size, num_patches + 1, vision_hidden_size)`,
            *optional*): output of `encode_vision`; replaces `pixel_values`.

        With `pixel_values`, this is InstructBLIP's own method. With `vision_hidden_states`, it runs the rest of that
        method from the frozen ViT's output before its post-LayerNorm: step 1 keeps only the post-LayerNorm
        (`vision_model.post_layernorm`, which trains), then steps 2 and 3 are InstructBLIP's unchanged: the query
        tokens and the instruction go through the Q-Former with cross-attention to every image position (all-ones
        image mask), and the query outputs through `language_projection`. The returned `vision_outputs` then holds
        the post-LayerNorm states as `last_hidden_state` and no `pooler_output`. The test
        `test_cached_features_match_pixel_path` checks that both paths give the same outputs.
        """
        if vision_hidden_states is None:
            self._check_pixel_values(pixel_values, interpolate_pos_encoding)
            return super().get_image_features(
                pixel_values,
                qformer_input_ids=qformer_input_ids,
                qformer_attention_mask=qformer_attention_mask,
                interpolate_pos_encoding=interpolate_pos_encoding,
                return_dict=True,
                **kwargs,
            )
        if pixel_values is not None:
            raise ValueError("Pass either `pixel_values` or `vision_hidden_states`, not both.")
        image_embeds = self.vision_model.post_layernorm(vision_hidden_states)
        vision_outputs = BaseModelOutputWithPooling(last_hidden_state=image_embeds)
        image_attention_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        query_tokens = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        query_attention_mask = torch.ones(query_tokens.shape[:-1], dtype=torch.long, device=image_embeds.device)
        if qformer_attention_mask is None:
            qformer_attention_mask = torch.ones_like(qformer_input_ids)
        qformer_outputs = self.qformer(
            input_ids=qformer_input_ids,
            attention_mask=torch.cat([query_attention_mask, qformer_attention_mask.to(image_embeds.device)], dim=1),
            query_embeds=query_tokens,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_attention_mask,
            return_dict=True,
            **kwargs,
        )
        image_features = self.language_projection(qformer_outputs[0][:, : query_tokens.shape[1], :])
        outputs = BaseModelOutputWithVisionQformerOutputs(
            last_hidden_state=image_embeds, pooler_output=image_features, vision_outputs=vision_outputs
        )
        outputs.qformer_outputs = qformer_outputs
        return outputs

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.LongTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        interpolate_pos_encoding: bool = False,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        vision_hidden_states: torch.FloatTensor | None = None,
        **kwargs,
    ) -> EmoVitForConditionalGenerationModelOutput:
        r"""
        As [`InstructBlipForConditionalGeneration.forward`] (same arguments, same computation), plus:

        vision_hidden_states (`torch.FloatTensor` of shape `(batch_size, num_patches + 1, vision_hidden_size)`,
            *optional*): cached output of `encode_vision`, used instead of `pixel_values`.

        The arguments are spelled out rather than forwarded as `*args, **kwargs` because the `Trainer` reads this
        signature to find the label names and the dataset columns to keep.

        Returns [`EmoVitForConditionalGenerationModelOutput`]: InstructBLIP's output plus `image_outputs`.
        """
        mm_encoder_outputs = dict(mm_encoder_outputs or {})
        if mm_encoder_outputs.get("image") is None:
            mm_encoder_outputs["image"] = self.get_image_features(
                pixel_values,
                qformer_input_ids=qformer_input_ids,
                qformer_attention_mask=qformer_attention_mask,
                interpolate_pos_encoding=interpolate_pos_encoding,
                vision_hidden_states=vision_hidden_states,
            )
        elif pixel_values is not None or vision_hidden_states is not None:
            raise ValueError("Pass `pixel_values`, `vision_hidden_states` or `mm_encoder_outputs`, only one of them.")
        outputs = super().forward(
            pixel_values=None,
            qformer_input_ids=qformer_input_ids,
            qformer_attention_mask=qformer_attention_mask,
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            inputs_embeds=inputs_embeds,
            labels=labels,
            interpolate_pos_encoding=interpolate_pos_encoding,
            mm_encoder_outputs=mm_encoder_outputs,
            return_dict=True,
            **kwargs,
        )
        num_items_in_batch = kwargs.get("num_items_in_batch")
        if labels is not None and num_items_in_batch is not None and not self.config.use_decoder_only_language_model:
            # The encoder-decoder language model averages its loss over this batch's answer tokens and ignores
            # `num_items_in_batch`; the Trainer, which sees `**kwargs` here, then expects a sum over the tokens of
            # all accumulated batches divided by it, as the decoder-only path computes it.
            outputs.loss = fixed_cross_entropy(
                outputs.logits.float().flatten(0, 1), labels.to(outputs.logits.device).flatten(),
                num_items_in_batch=num_items_in_batch,
            )
        return EmoVitForConditionalGenerationModelOutput(**outputs, image_outputs=mm_encoder_outputs["image"])

    # ------------------------------------------------------------------ classification

    def _embed_prompt(self, image_features, input_ids):
        inputs_embeds = self.get_input_embeddings()(input_ids)
        mask = self.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds)
        return inputs_embeds.masked_scatter(mask, image_features.to(inputs_embeds.device, inputs_embeds.dtype))

    def score_emotions(
        self,
        pixel_values: torch.Tensor,
        qformer_input_ids: torch.Tensor,
        input_ids: torch.Tensor,
        candidate_input_ids: torch.Tensor,
        candidate_attention_mask: torch.Tensor,
        qformer_attention_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        vision_hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""
        Log-likelihood of every candidate answer given each image and its instruction, in one batched pass.

        pixel_values (`(batch_size, 3, H, W)`), qformer_input_ids / qformer_attention_mask (`(batch_size, q_len)`),
        input_ids / attention_mask (`(batch_size, prompt_len)`: image placeholders + instruction, *unpadded* or
        left-padded), candidate_input_ids / candidate_attention_mask (`(num_candidates, answer_len)`, right-padded,
        each ending in EOS, as [`EmoVitProcessor.classification_inputs`] builds them).

        Returns `(batch_size, num_candidates)` summed log-probabilities (float32). The EOS is part of each answer, so
        a label that is the prefix of another is not favoured.
        """
        features = self.get_image_features(
            pixel_values,
            qformer_input_ids=qformer_input_ids,
            qformer_attention_mask=qformer_attention_mask,
            vision_hidden_states=vision_hidden_states,
        ).pooler_output
        batch_size, num_candidates = features.shape[0], candidate_input_ids.shape[0]
        prompt_embeds = self._embed_prompt(features, input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Row b * num_candidates + c pairs image b with candidate c.
        prompt_mask = attention_mask.repeat_interleave(num_candidates, dim=0)
        targets = candidate_input_ids.repeat(batch_size, 1)
        target_mask = candidate_attention_mask.repeat(batch_size, 1).to(prompt_mask.dtype)

        if self.config.use_decoder_only_language_model:
            # Every candidate shares its image's prompt: run the prompt once per image, then all candidates on copies
            # of its key/value cache (prompt_len + num_candidates * answer_len tokens per image instead of
            # num_candidates * (prompt_len + answer_len)).
            prompt_out = self.language_model(
                inputs_embeds=prompt_embeds, attention_mask=attention_mask, use_cache=True, logits_to_keep=1
            )
            cache_keyword = _cache_keyword(type(self.language_model))
            cache = getattr(prompt_out, cache_keyword)
            cache.batch_repeat_interleave(num_candidates)
            answer_logits = self.language_model(
                inputs_embeds=self.get_input_embeddings()(targets),
                attention_mask=torch.cat([prompt_mask, target_mask], dim=1),
                **{cache_keyword: cache},
            ).logits
            # The prompt's last logit predicts the first answer token; answer position t predicts token t + 1.
            first = prompt_out.logits[:, -1:].repeat_interleave(num_candidates, dim=0)
            logits = torch.cat([first, answer_logits[:, :-1]], dim=1)
        else:
            logits = self.language_model(
                inputs_embeds=prompt_embeds.repeat_interleave(num_candidates, dim=0),
                attention_mask=prompt_mask,
                labels=targets.masked_fill(target_mask == 0, -100),
            ).logits
        token_logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return (token_logprobs * target_mask).sum(-1).view(batch_size, num_candidates)

    def check_processor(self, processor):
        """Raises if the processor's labels or image placeholder disagree with this model's configuration."""
        if list(processor.emotion_labels) != list(self.config.emotion_labels):
            raise ValueError(
                f"The processor's emotion_labels {processor.emotion_labels} differ from the model's "
                f"config.emotion_labels {self.config.emotion_labels}: the prompt and the label list are out of sync. "
                "Load both from the same folder, or build the processor with `emotion_labels=model.config."
                "emotion_labels`."
            )
        if processor.image_token_id != self.config.image_token_index:
            raise ValueError(
                f"The processor's `<image>` token has id {processor.image_token_id} but the model expects "
                f"{self.config.image_token_index}; load the processor that was saved with this model."
            )
        if getattr(processor, "use_decoder_only_language_model", True) != self.config.use_decoder_only_language_model:
            kind = "decoder-only" if self.config.use_decoder_only_language_model else "encoder-decoder"
            raise ValueError(
                f"The processor lays out training batches with use_decoder_only_language_model="
                f"{processor.use_decoder_only_language_model}, but the model's language model is {kind} "
                f"({self.config.text_config.model_type}); training on such batches would put the answer in the wrong "
                "place. Build the processor with `use_decoder_only_language_model=model.config."
                "use_decoder_only_language_model`, or load the processor saved with this model."
            )
        if processor.num_query_tokens != self.config.num_query_tokens:
            raise ValueError(
                f"The processor inserts {processor.num_query_tokens} image placeholders but the model has "
                f"{self.config.num_query_tokens} query tokens; set `processor.num_query_tokens`."
            )

    @torch.inference_mode()
    def classify(self, images, processor, method: str = "score", instruction: str | None = None,
                 max_new_tokens: int | None = None, batch_size: int = 32) -> EmotionPrediction:
        """Classifies the emotion each image evokes into `config.emotion_labels`.

        Args:
            images: a PIL image or a list of them (any size; the processor resizes).
            processor ([`EmoVitProcessor`]): the model's processor.
            method: `"score"` picks the label whose answer is most likely (never invalid; the probabilities are
                tempered by `config.score_temperature`); `"generate"` decodes greedily and parses
                `Predict emotion: <label>` (anything else counts as invalid, label `None`).
            instruction: the categorical instruction; the processor's by default. It must name every label.
            max_new_tokens: generation budget; by default the longest label answer plus a margin.
            batch_size: images per forward pass. Memory is bounded by the batch, not by the length of `images`;
                the result does not depend on it.
        """
        if method not in CLASSIFY_METHODS:
            raise ValueError(f"Unknown classification method {method!r}; use one of {list(CLASSIFY_METHODS)}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        self.check_processor(processor)
        if not isinstance(images, (list, tuple)):
            images = [images]
        parts = [
            self._classify_batch(images[start : start + batch_size], processor, method, instruction, max_new_tokens)
            for start in range(0, len(images), batch_size)
        ] or [self._classify_batch(images, processor, method, instruction, max_new_tokens)]  # empty: processor says so
        scores = torch.cat([part.scores for part in parts])
        # argmax takes NaN for the largest value: a label read off such scores would be arbitrary, never a result.
        broken = (~torch.isfinite(scores).all(-1)).nonzero().flatten().tolist()
        if broken:
            raise ValueError(
                f"The label scores of image {broken[0]} (of {len(broken)} such image(s): {broken[:20]}) are not finite "
                f"({scores[broken[0]].tolist()}): the model's log-likelihoods overflowed or its weights hold NaN or "
                "inf. Load the checkpoint in float32 or bfloat16 rather than float16, or check the checkpoint."
            )
        return EmotionPrediction(
            labels=[label for part in parts for label in part.labels],
            scores=scores,
            texts=None if method == "score" else [text for part in parts for text in part.texts],
            log_likelihoods=torch.cat([part.log_likelihoods for part in parts]) if method == "score" else None,
        )

    @torch.inference_mode()
    def explain(self, images, processor, preset: str = "label", instruction: str | None = None,
                method: str = "score", max_new_tokens: int = 128, do_sample: bool = False, batch_size: int = 8,
                **generate_kwargs) -> EmotionExplanation:
        """Classifies each image and explains, in generated prose, what in it evokes the emotion.

        The label and scores are [`classify`]'s (same `method`). The explanation answers a question chosen by
        `preset` (`EXPLANATION_PRESETS`):
        - `"label"` (default) names the predicted label and asks what in the image makes a viewer feel it, as EmoVIT's
          reasoning instructions name the image's emotion: the explanation is *conditioned on* the label.
        - `"free"` asks which emotion the image evokes and why, without naming one: the explanation is independent of
          the label, and `agreement` says whether the two meet.
        - `"humour"` asks why the image is funny (the paper's humour comprehension).
        Either way the labels the explanation names are found (`mentioned`) and compared with the label (`agreement`);
        an explanation that names another emotion is logged as a warning with the image indices, never passed over.
        When a `generate` answer names no label, the `"label"` question falls back to the `"free"` one.

        Args:
            images: a PIL image or a list of them.
            processor ([`EmoVitProcessor`]): the model's processor.
            preset: `"label"`, `"free"` or `"humour"`.
            instruction: an own question instead of the preset; `{emotion}` in it is replaced by the label.
            method: `"score"` or `"generate"`, as in [`classify`].
            max_new_tokens: the explanation's length budget.
            do_sample: greedy decoding (deterministic) unless True; `temperature`, `top_p`, `num_beams`,
                `repetition_penalty` and other `generate` options pass through `generate_kwargs`. Seed sampling
                with `transformers.set_seed`.
            batch_size: images per forward pass.
        """
        if preset not in EXPLANATION_PRESETS:
            raise ValueError(f"Unknown explanation preset {preset!r}; use one of {list(EXPLANATION_PRESETS)}.")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be a positive integer, got {max_new_tokens!r}.")
        if not isinstance(images, (list, tuple)):
            images = [images]
        prediction = self.classify(images, processor, method=method, batch_size=batch_size)
        template = instruction if instruction is not None else EXPLANATION_PRESETS[preset]
        questions = []
        for label in prediction.labels:
            if label is None and "{emotion}" in template:
                questions.append(EXPLANATION_PRESETS["free"])
            else:
                questions.append(template.replace("{emotion}", label or ""))
        explanations = []
        for start in range(0, len(images), batch_size):
            inputs = processor.generation_inputs(images[start : start + batch_size], questions[start : start + batch_size])
            inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(self.vision_model.embeddings.patch_embedding.weight.dtype)
            generated = self.generate(
                **inputs,
                do_sample=do_sample,
                max_new_tokens=max_new_tokens,
                pad_token_id=processor.tokenizer.pad_token_id,
                **generate_kwargs,
            )
            if self.config.use_decoder_only_language_model:
                generated = generated[:, inputs["input_ids"].shape[1] :]
            explanations += [text.strip() for text in processor.tokenizer.batch_decode(generated, skip_special_tokens=True)]

        labels = self.config.emotion_labels
        mentioned = [mentioned_emotions(text, labels) for text in explanations]
        agreement = [agreement_of(label, named) for label, named in zip(prediction.labels, mentioned)]
        contradicting = [row for row, status in enumerate(agreement) if status == "names_other"]
        if contradicting:
            logger.warning(
                f"{len(contradicting)} of {len(images)} explanations name another emotion than their label (images "
                f"{contradicting[:20]}{' ...' if len(contradicting) > 20 else ''}); see `agreement` and `mentioned`."
            )
        return EmotionExplanation(
            labels=prediction.labels, scores=prediction.scores, explanations=explanations, mentioned=mentioned,
            agreement=agreement,
        )

    def _classify_batch(self, images, processor, method, instruction, max_new_tokens) -> EmotionPrediction:
        inputs = processor.classification_inputs(images, instruction=instruction)
        inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.vision_model.embeddings.patch_embedding.weight.dtype)
        labels = self.config.emotion_labels
        if method == "score":
            log_likelihoods = self.score_emotions(**inputs)
            temperature = self.config.score_temperature
            # Skipped at 1.0, so scores without a stored temperature stay bit-identical.
            scaled = log_likelihoods / temperature if temperature != 1.0 else log_likelihoods
            probs = torch.softmax(scaled, dim=-1).cpu()
            return EmotionPrediction(labels=[labels[i] for i in probs.argmax(-1).tolist()], scores=probs,
                                     log_likelihoods=log_likelihoods.cpu())

        if max_new_tokens is None:
            max_new_tokens = int(inputs["candidate_attention_mask"].sum(-1).max()) + 4
        prompt = {k: v for k, v in inputs.items() if not k.startswith("candidate_")}
        generated = self.generate(
            **prompt,
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            pad_token_id=processor.tokenizer.pad_token_id,
        )
        if self.config.use_decoder_only_language_model:
            generated = generated[:, inputs["input_ids"].shape[1] :]
        texts = [text.strip() for text in processor.tokenizer.batch_decode(generated, skip_special_tokens=True)]
        predicted = [parse_emotion_answer(text, labels) for text in texts]
        scores = torch.zeros(len(texts), len(labels))
        for row, label in enumerate(predicted):
            if label is not None:
                scores[row, labels.index(label)] = 1.0
        return EmotionPrediction(labels=predicted, scores=scores, texts=texts)


__all__ = [
    "CLASSIFY_METHODS",
    "EmotionExplanation",
    "EmoVitForConditionalGeneration",
    "EmoVitForConditionalGenerationModelOutput",
    "EmoVitModel",
    "EmotionPrediction",
]
