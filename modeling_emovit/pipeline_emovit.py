# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""The `visual-emotion-recognition` pipeline: image classification's contract over EmoVIT's emotion labels, with an
optional generated explanation.

Saved with every EmoVIT model (its file and `custom_pipelines` in `config.json`), so that where this project is not
installed

    pipeline("visual-emotion-recognition", model=FOLDER_OR_HUB_ID, trust_remote_code=True)(image, top_k=3)

returns `[{"label": "awe", "score": 0.91}, ...]`, highest score first, all labels by default.
"""

import inspect

from PIL import Image
from transformers import GenerationConfig, Pipeline
from transformers.image_utils import load_image

from .image_utils import open_image
from .processing_emovit import ranked_scores


# Keywords of `generate` that are not generation-config fields; the fields themselves are taken from GenerationConfig.
GENERATE_ARGUMENTS = ("logits_processor", "stopping_criteria", "streamer")


class VisualEmotionRecognitionPipeline(Pipeline):
    """Recognises the emotion an image evokes with an EmoVIT model.

    Call it with an image (PIL image, path or URL) or a list of them:

    - `top_k` (`int`, *optional*): how many labels to return per image; all by default.
    - `method` (`"score"` or `"generate"`, default `"score"`): as [`EmoVitForConditionalGeneration.classify`]. With
      `"score"` the scores are the probabilities of every label (summing to 1); with `"generate"` the named label
      scores 1 and the others 0.
    - `explain` (`bool`, default `False`): also generate an explanation
      ([`EmoVitForConditionalGeneration.explain`]). The returned list is unchanged; its first entry, the predicted
      label, additionally carries `"explanation"`, `"mentioned"` (the emotions the text names) and `"agreement"`
      (`"agrees"`, `"names_other"`, `"names_none"` or `"no_label"`).
    - `preset` (`"label"`, `"free"`, `"humour"`), `instruction`, `max_new_tokens` and other `generate` options:
      passed to `explain`.
    - `timeout`: seconds to wait for an image URL.

    Each image is one forward pass; for many images use `predict.py` or `classify`/`explain` with `batch_size`.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __call__(self, inputs, *args, **kwargs):
        # The base class reads the first element of a list before anything else, so an empty one would end in an
        # IndexError from inside transformers.
        if isinstance(inputs, (list, tuple)) and not inputs:
            raise ValueError("Got no images (an empty list); pass a PIL image, an image file path or URL, or a "
                             "non-empty list of them.")
        return super().__call__(inputs, *args, **kwargs)

    def _explain_options(self) -> set[str]:
        """The keywords passed on to `explain`: its own options and `generate`'s."""
        own = set(inspect.signature(self.model.explain).parameters) - {"images", "processor", "method", "batch_size",
                                                                         "generate_kwargs"}
        return own | set(GenerationConfig().to_dict()) | set(GENERATE_ARGUMENTS)

    def _sanitize_parameters(self, top_k=None, method=None, explain=None, timeout=None, **explain_kwargs):
        unknown = sorted(set(explain_kwargs) - self._explain_options())
        if unknown:
            raise ValueError(
                f"unknown keyword argument {unknown[0]!r}{f' (and {unknown[1:]})' if unknown[1:] else ''}; the "
                "pipeline takes top_k, method, explain and timeout, and with explain=True preset, instruction, "
                "max_new_tokens, do_sample and other `generate` options (temperature, top_p, num_beams, ...)."
            )
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"`top_k` must be a positive integer or None (all labels), got {top_k!r}.")
        if method is not None and method not in ("score", "generate"):
            raise ValueError(f"Unknown method {method!r}; use 'score' or 'generate'.")
        if explain_kwargs and not explain:
            raise ValueError(f"{sorted(explain_kwargs)} only apply with `explain=True`.")
        forward = {"method": method or "score", "explain": bool(explain), **explain_kwargs}
        return {"timeout": timeout}, forward, {"top_k": top_k}

    def preprocess(self, image, timeout=None):
        # Files are read by the project's one image rule, as classify's callers read them, so the pipeline's scores
        # equal classify's for the same file (transformers' `load_image` would flatten RGBA and 16-bit differently).
        if isinstance(image, Image.Image):
            return {"image": image}
        if isinstance(image, str) and image.startswith(("http://", "https://")):
            try:
                return {"image": load_image(image, timeout=timeout)}
            except Exception as e:
                raise ValueError(f"Image {image} could not be fetched or read ({type(e).__name__}: {e}).") from e
        if not isinstance(image, str):
            raise TypeError(f"Got a {type(image).__name__}; pass a PIL image, an image file path or an http(s) URL.")
        return {"image": open_image(image)}

    def _forward(self, model_inputs, method="score", explain=False, **explain_kwargs):
        image = model_inputs["image"]
        if not explain:
            prediction = self.model.classify([image], self.processor, method=method)
            return {"scores": prediction.scores[0]}
        result = self.model.explain([image], self.processor, method=method, **explain_kwargs)
        return {"scores": result.scores[0], "explanation": result.explanations[0], "mentioned": result.mentioned[0],
                "agreement": result.agreement[0]}

    def postprocess(self, model_outputs, top_k=None):
        entries = ranked_scores(model_outputs["scores"].tolist(), self.model.config.emotion_labels, top_k)
        if "explanation" in model_outputs:
            entries[0].update({key: model_outputs[key] for key in ("explanation", "mentioned", "agreement")})
        return entries
