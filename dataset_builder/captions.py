"""Captions stage: one caption per image from a transformers image-to-text model (BLIP-2 by default).

Captions are cached in a JSONL file keyed by (model id, SHA-1 of the image bytes), so a rerun, or a
second build over the same images, captions nothing twice. Lines are appended and fsynced per batch.
"""

from __future__ import annotations

import hashlib
import logging
import os

from tqdm.auto import tqdm

from modeling_emovit.io_utils import JsonlCache, open_image

logger = logging.getLogger(__name__)

DEFAULT_CAPTIONER = "Salesforce/blip2-opt-2.7b"
CAPTIONS_FILE = "captions.jsonl"


def _image_key(model_id: str, image_path: str) -> str:
    with open(image_path, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()
    return f"{model_id}|{digest}"


def _is_caption_entry(entry: dict) -> bool:
    return isinstance(entry.get("caption"), str)


def caption_images(image_paths: list[str], model_id: str = DEFAULT_CAPTIONER, cache_path: str | os.PathLike | None = None,
                   batch_size: int = 16, max_new_tokens: int = 30, dtype: str = "float32") -> dict[str, str]:
    """{image path: caption}. Loads the model only when some image is not cached yet."""
    cache = JsonlCache(cache_path, is_entry=_is_caption_entry) if cache_path is not None else None
    keys = {path: _image_key(model_id, path) for path in image_paths}
    captions = {path: cache.get(key)["caption"] for path, key in keys.items() if cache is not None and key in cache}
    todo = [path for path in image_paths if path not in captions]
    logger.info("captions: %d cached, %d to compute with %s", len(captions), len(todo), model_id)
    if not todo:
        return captions

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(model_id)
        model = AutoModelForImageTextToText.from_pretrained(model_id, dtype=getattr(torch, dtype))
    except OSError as e:
        raise OSError(
            f"Cannot load the captioner {model_id!r} ({e}). Pass a local folder or a Hub id you can download with "
            "--captioner, or --captioner none to build without captions."
        ) from e
    model.eval()
    if torch.cuda.is_available():
        model.to("cuda")
    for start in tqdm(range(0, len(todo), batch_size), desc="captions", unit="batch"):
        batch = todo[start : start + batch_size]
        images = [open_image(path) for path in batch]
        inputs = processor(images=images, return_tensors="pt").to(model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        # Decoder-only captioners return the prompt (here: only image tokens) before the caption.
        if "input_ids" in inputs and generated.shape[1] > inputs["input_ids"].shape[1]:
            generated = generated[:, inputs["input_ids"].shape[1] :]
        texts = processor.batch_decode(generated, skip_special_tokens=True)
        entries = []
        for path, text in zip(batch, texts):
            captions[path] = " ".join(text.split())
            entries.append({"key": keys[path], "image": path, "caption": captions[path]})
        if cache is not None:
            cache.append(*entries)
    return captions
