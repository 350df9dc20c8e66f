"""Captions stage: one caption per image from a transformers image-to-text model (BLIP-2 by default).

Captions are cached in a JSONL file keyed by (model id, SHA-1 of the image bytes), so a rerun, or a
second build over the same images, captions nothing twice. Lines are appended and fsynced per batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from tqdm.auto import tqdm

from .emoset import open_image

logger = logging.getLogger(__name__)

DEFAULT_CAPTIONER = "Salesforce/blip2-opt-2.7b"
CAPTIONS_FILE = "captions.jsonl"


def _image_key(model_id: str, image_path: str) -> str:
    with open(image_path, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()
    return f"{model_id}|{digest}"


def _load_cache(path: Path) -> dict[str, str]:
    cache = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                cache[entry["key"]] = entry["caption"]
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash; that image is captioned again
    return cache


def caption_images(image_paths: list[str], model_id: str = DEFAULT_CAPTIONER, cache_path: str | os.PathLike | None = None,
                   batch_size: int = 16, max_new_tokens: int = 30, dtype: str = "float32") -> dict[str, str]:
    """{image path: caption}. Loads the model only when some image is not cached yet."""
    cache_path = Path(cache_path) if cache_path is not None else None
    cache = _load_cache(cache_path) if cache_path is not None else {}
    keys = {path: _image_key(model_id, path) for path in image_paths}
    captions = {path: cache[key] for path, key in keys.items() if key in cache}
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
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
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
        lines = []
        for path, text in zip(batch, texts):
            caption = " ".join(text.split())
            captions[path] = caption
            lines.append(json.dumps({"key": keys[path], "image": path, "caption": caption}) + "\n")
        if cache_path is not None:
            # A crash may have left a torn last line; start on a fresh one so this batch stays readable.
            if cache_path.exists() and cache_path.stat().st_size and not cache_path.read_bytes().endswith(b"\n"):
                lines.insert(0, "\n")
            with open(cache_path, "a", encoding="utf-8") as f:
                f.write("".join(lines))
                f.flush()
                os.fsync(f.fileno())
    return captions
