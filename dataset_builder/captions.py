"""Captions stage: one caption per image from a transformers image-to-text model (BLIP-2 by default).

Captions are cached in a JSONL file keyed by (model id, SHA-1 of the image bytes), so a rerun, or a
second build over the same images, captions nothing twice. Lines are appended and fsynced per batch.

Captioning can also run sharded over processes (`accelerate launch -m dataset_builder caption ...`,
`caption_images_sharded`): every process reads the same cache, the batches still to caption are dealt out
round-robin, and each process appends to its own shard file beside the cache (`captions.rank<N>.jsonl`).
After a barrier the main process merges the shards into the cache (one atomic rewrite) and removes them.
A killed run leaves its shards; the next run, sharded or not, reads them and captions only what is missing.
Because the batches are cut from one sorted list before they are dealt out, a run on N processes feeds the
model the same batches as a run on one and writes the same captions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from emovit_utils.files import atomic_write_text
from emovit_utils.jsonl_cache import JsonlCache
from modeling_emovit.image_utils import open_image


logger = logging.getLogger(__name__)

DEFAULT_CAPTIONER = "Salesforce/blip2-opt-2.7b"
CAPTIONS_FILE = "captions.jsonl"


def _image_key(model_id: str, image_path: str) -> str:
    with open(image_path, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()
    return f"{model_id}|{digest}"


def _is_caption_entry(entry: dict) -> bool:
    return isinstance(entry.get("caption"), str)


def shard_path(cache_path: str | os.PathLike, rank: int) -> Path:
    """The shard file process `rank` appends to: `captions.rank<rank>.jsonl` beside `captions.jsonl`."""
    cache_path = Path(cache_path)
    return cache_path.with_name(f"{cache_path.stem}.rank{rank}{cache_path.suffix}")


def shard_paths(cache_path: str | os.PathLike) -> list[Path]:
    """The shard files beside the cache, whatever number of processes wrote them."""
    cache_path = Path(cache_path)
    return sorted(p for p in cache_path.parent.glob(f"{cache_path.stem}.rank*{cache_path.suffix}")
                  if p.name[len(cache_path.stem) + 5 : -len(cache_path.suffix)].isdigit())


def read_caption_cache(cache_path: str | os.PathLike) -> dict[str, dict]:
    """{key: entry} of the cache and the shards beside it. Torn or foreign lines are skipped (and logged by the
    cache): their images are captioned again."""
    entries = dict(JsonlCache(cache_path, is_entry=_is_caption_entry).entries)
    for path in shard_paths(cache_path):
        for key, entry in JsonlCache(path, is_entry=_is_caption_entry).entries.items():
            entries.setdefault(key, entry)
    return entries


def merge_caption_shards(cache_path: str | os.PathLike) -> int:
    """Moves the entries of the shard files into the cache and removes the shards; returns how many entries were
    new. The cache is rewritten whole (temporary file + rename): the cache's entries in their order, then the new
    ones sorted by image path, so the merged file does not depend on how many processes wrote the shards. A crash
    before the shards are removed loses nothing: merging them again adds no entry twice."""
    cache_path = Path(cache_path)
    shards = shard_paths(cache_path)
    if not shards:
        return 0
    merged = dict(JsonlCache(cache_path, is_entry=_is_caption_entry).entries)
    new = {}
    for path in shards:
        for key, entry in JsonlCache(path, is_entry=_is_caption_entry).entries.items():
            if key not in merged:
                new.setdefault(key, entry)
    entries = list(merged.values()) + sorted(new.values(), key=lambda e: (str(e.get("image", "")), e["key"]))
    atomic_write_text(cache_path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
    for path in shards:
        path.unlink()
    logger.info("captions: merged %d new caption(s) from %d shard file(s) into %s", len(new), len(shards), cache_path)
    return len(new)


def load_captioner(model_id: str, dtype: str = "float32"):
    """(model, processor) of an image-to-text model id or folder, in eval mode on the CPU."""
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
    return model.eval(), processor


def generate_captions(model, processor, images: list, max_new_tokens: int = 30) -> list[str]:
    """Greedy captions of a batch of RGB images, whitespace collapsed."""
    import torch

    inputs = processor(images=images, return_tensors="pt").to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    # Decoder-only captioners return the prompt (here: only image tokens) before the caption.
    if "input_ids" in inputs and generated.shape[1] > inputs["input_ids"].shape[1]:
        generated = generated[:, inputs["input_ids"].shape[1] :]
    return [" ".join(text.split()) for text in processor.batch_decode(generated, skip_special_tokens=True)]


def caption_images(image_paths: list[str], model_id: str = DEFAULT_CAPTIONER, cache_path: str | os.PathLike | None = None,
                   batch_size: int = 16, max_new_tokens: int = 30, dtype: str = "float32") -> dict[str, str]:
    """{image path: caption}. Loads the model only when some image is not cached yet. Shards left by a sharded run
    are merged into the cache first, so their captions are reused."""
    if cache_path is not None:
        merge_caption_shards(cache_path)
    cache = JsonlCache(cache_path, is_entry=_is_caption_entry) if cache_path is not None else None
    keys = {path: _image_key(model_id, path) for path in image_paths}
    captions = {path: cache.get(key)["caption"] for path, key in keys.items() if cache is not None and key in cache}
    todo = [path for path in image_paths if path not in captions]
    logger.info("captions: %d cached, %d to compute with %s", len(captions), len(todo), model_id)
    if not todo:
        return captions

    import torch

    model, processor = load_captioner(model_id, dtype)
    if torch.cuda.is_available():
        model.to("cuda")
    for start in tqdm(range(0, len(todo), batch_size), desc="captions", unit="batch"):
        batch = todo[start : start + batch_size]
        texts = generate_captions(model, processor, [open_image(path) for path in batch], max_new_tokens)
        entries = []
        for path, text in zip(batch, texts):
            captions[path] = text
            entries.append({"key": keys[path], "image": path, "caption": text})
        if cache is not None:
            cache.append(*entries)
    return captions


@dataclass
class ShardedCaptions:
    """What a sharded captioning run did, on the main process."""

    captions: dict[str, str]
    cached: int
    captioned: int
    # {"image", "reason"} for each image that could not be read; it has no caption and is tried again next run.
    skipped: list[dict] = field(default_factory=list)
    processes: int = 1
    seconds: float = 0.0


def caption_images_sharded(image_paths: list[str], model_id: str, cache_path: str | os.PathLike, batch_size: int = 16,
                           max_new_tokens: int = 30, dtype: str = "float32", show_progress: bool = True,
                           folder_lock=None) -> ShardedCaptions | None:
    """Captions `image_paths` on every process of the launch (one process when not launched); every process must
    call it. Returns the run's `ShardedCaptions` on the main process and None on the others.

    `folder_lock`, when given, is a context manager the main process holds for the whole run (the build folder's
    lock); when entering it fails, every process raises that error. An image that cannot be read is a reported skip.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, gather_object, parse_flag_from_env

    # Without cpu=True a launch on a machine without CUDA would run every process as a lone one (gloo needs it).
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    started = time.perf_counter()
    with ExitStack() as stack:
        problem = None
        if state.is_main_process and folder_lock is not None:
            try:
                stack.enter_context(folder_lock)
            except Exception as e:  # noqa: BLE001 - re-raised on every process below
                problem = e
        if state.num_processes > 1:
            problem = broadcast_object_list([problem])[0]
        if problem is not None:
            raise problem

        # ---- what is missing: every process reads the same files, so all cut the same batches
        paths = sorted(dict.fromkeys(image_paths))
        entries = read_caption_cache(cache_path)
        keys = {path: _image_key(model_id, path) for path in paths}
        todo = [path for path in paths if keys[path] not in entries]
        state.wait_for_everyone()  # nobody appends to a shard before all have read them
        batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
        mine = batches[state.process_index :: state.num_processes]
        if state.is_main_process:
            logger.info("captions: %d cached, %d to compute with %s in %d batch(es) over %d process(es)",
                        len(paths) - len(todo), len(todo), model_id, len(batches), state.num_processes)

        # ---- this process's batches, appended to its own shard
        skipped = []
        if mine:
            model, processor = load_captioner(model_id, dtype)
            model.to(state.device)
            shard = JsonlCache(shard_path(cache_path, state.process_index), is_entry=_is_caption_entry)
            for batch in tqdm(mine, desc=f"captions (process {state.process_index})", unit="batch",
                              disable=not show_progress):
                images, readable = [], []
                for path in batch:
                    try:
                        images.append(open_image(path))
                        readable.append(path)
                    except ValueError as e:
                        skipped.append({"image": path, "reason": str(e)})
                if readable:
                    texts = generate_captions(model, processor, images, max_new_tokens)
                    shard.append(*({"key": keys[path], "image": path, "caption": text}
                                   for path, text in zip(readable, texts)))

        # ---- all shards into the cache, on the main process
        if state.num_processes > 1:
            skipped = gather_object(skipped)
        state.wait_for_everyone()
        if not state.is_main_process:
            return None
        merge_caption_shards(cache_path)
        entries = JsonlCache(cache_path, is_entry=_is_caption_entry).entries
        captions = {path: entries[keys[path]]["caption"] for path in paths if keys[path] in entries}
        skipped.sort(key=lambda s: s["image"])
        for skip in skipped:
            logger.warning("captions: skipped %s", skip["reason"])
        return ShardedCaptions(captions=captions, cached=len(paths) - len(todo),
                               captioned=len(todo) - len(skipped), skipped=skipped,
                               processes=state.num_processes, seconds=round(time.perf_counter() - started, 3))
