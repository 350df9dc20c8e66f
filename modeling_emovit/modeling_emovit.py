"""EmoVIT model: InstructBLIP with Q-Former-side instruction tuning and emotion classification."""

import inspect
from dataclasses import dataclass

import torch
from transformers import InstructBlipForConditionalGeneration, InstructBlipModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.instructblip.modeling_instructblip import BaseModelOutputWithVisionQformerOutputs
from transformers.utils import logging

from .configuration_emovit import EmoVitConfig
from .processing_emovit import parse_emotion_answer


logger = logging.get_logger(__name__)


@dataclass
class EmotionPrediction:
    """Result of [`EmoVitForConditionalGeneration.classify`] for a batch of images.

    Attributes:
        labels (`list[str | None]`): the predicted emotion per image; `None` when a generated answer named no label.
        scores (`torch.FloatTensor` of shape `(batch_size, num_labels)`): per-label scores in `config.emotion_labels`
            order. `score`: the probability of each label's answer (rows sum to 1). `generate`: 1 for the label the
            answer names and 0 elsewhere (an all-zero row for an invalid answer).
        texts (`list[str] | None`): the generated answers (`generate` only).
    """

    labels: list
    scores: torch.Tensor
    texts: list | None = None

    @property
    def valid(self) -> list[bool]:
        return [label is not None for label in self.labels]


class EmoVitModel(InstructBlipModel):
    """InstructBLIP's base model (no language-model head) under EmoVIT's configuration, for `AutoModel`."""

    config_class = EmoVitConfig
    config: EmoVitConfig


class EmoVitForConditionalGeneration(InstructBlipForConditionalGeneration):
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

    def get_image_features(
        self,
        pixel_values=None,
        qformer_input_ids=None,
        qformer_attention_mask=None,
        interpolate_pos_encoding=False,
        vision_hidden_states=None,
        **kwargs,
    ):
        r"""
        As InstructBLIP's, plus:
        vision_hidden_states (`torch.FloatTensor` of shape `(batch_size, num_patches + 1, vision_hidden_size)`,
            *optional*): output of `encode_vision`; replaces `pixel_values`.
        """
        if vision_hidden_states is None:
            self._check_pixel_values(pixel_values, interpolate_pos_encoding)
            return super().get_image_features(
                pixel_values,
                qformer_input_ids=qformer_input_ids,
                qformer_attention_mask=qformer_attention_mask,
                interpolate_pos_encoding=interpolate_pos_encoding,
                **kwargs,
            )
        # Cached path: run the rest of InstructBLIP's image branch from the pre-LayerNorm ViT output.
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
        )
        image_features = self.language_projection(qformer_outputs[0][:, : query_tokens.shape[1], :])
        outputs = BaseModelOutputWithVisionQformerOutputs(
            last_hidden_state=image_embeds, pooler_output=image_features, vision_outputs=vision_outputs
        )
        outputs.qformer_outputs = qformer_outputs
        return outputs

    def forward(self, pixel_values=None, qformer_input_ids=None, *args, vision_hidden_states=None, **kwargs):
        r"""
        As [`InstructBlipForConditionalGeneration.forward`], plus:
        vision_hidden_states (`torch.FloatTensor` of shape `(batch_size, num_patches + 1, vision_hidden_size)`,
            *optional*): cached output of `encode_vision`, used instead of `pixel_values`.
        """
        if vision_hidden_states is not None:
            if pixel_values is not None:
                raise ValueError("Pass either `pixel_values` or `vision_hidden_states`, not both.")
            features = self.get_image_features(
                qformer_input_ids=qformer_input_ids,
                qformer_attention_mask=kwargs.pop("qformer_attention_mask", None),
                vision_hidden_states=vision_hidden_states,
            )
            kwargs["mm_encoder_outputs"] = {"image": features}
        else:
            self._check_pixel_values(pixel_values, kwargs.get("interpolate_pos_encoding", False))
        return super().forward(pixel_values, qformer_input_ids, *args, **kwargs)

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
            # transformers 5.x renamed `past_key_values` to `cache`; accept both.
            cache = getattr(prompt_out, "cache", None) or prompt_out.past_key_values
            cache.batch_repeat_interleave(num_candidates)
            cache_argument = "cache" if "cache" in inspect.signature(self.language_model.forward).parameters else \
                "past_key_values"
            answer_logits = self.language_model(
                inputs_embeds=self.get_input_embeddings()(targets),
                attention_mask=torch.cat([prompt_mask, target_mask], dim=1),
                **{cache_argument: cache},
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
        if processor.num_query_tokens != self.config.num_query_tokens:
            raise ValueError(
                f"The processor inserts {processor.num_query_tokens} image placeholders but the model has "
                f"{self.config.num_query_tokens} query tokens; set `processor.num_query_tokens`."
            )

    @torch.inference_mode()
    def classify(self, images, processor, method: str = "score", instruction: str | None = None,
                 max_new_tokens: int | None = None) -> EmotionPrediction:
        """Classifies the emotion each image evokes into `config.emotion_labels`.

        Args:
            images: a PIL image or a list of them (any size; the processor resizes).
            processor ([`EmoVitProcessor`]): the model's processor.
            method: `"score"` picks the label whose answer is most likely (never invalid); `"generate"` decodes
                greedily and parses `Predict emotion: <label>` (anything else counts as invalid, label `None`).
            instruction: the categorical instruction; the processor's by default. It must name every label.
            max_new_tokens: generation budget; by default the longest label answer plus a margin.
        """
        if method not in ("score", "generate"):
            raise ValueError(f"Unknown classification method {method!r}; use 'score' or 'generate'.")
        self.check_processor(processor)
        inputs = processor.classification_inputs(images, instruction=instruction)
        inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.vision_model.embeddings.patch_embedding.weight.dtype)
        labels = self.config.emotion_labels
        if method == "score":
            probs = torch.softmax(self.score_emotions(**inputs), dim=-1).cpu()
            return EmotionPrediction(labels=[labels[i] for i in probs.argmax(-1).tolist()], scores=probs)

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


__all__ = ["EmoVitForConditionalGeneration", "EmoVitModel", "EmotionPrediction"]
