"""A memory-mapped cache of the frozen ViT's features, keyed by everything they depend on."""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from modeling_emovit.io_utils import open_image


class VisionCache:
    """The frozen ViT's output before its (trained) post-LayerNorm, one row per image, in a .npy file that is
    memory-mapped (EVA ViT-g gives 257 x 1408 values per image: the cache can exceed RAM).

    The features depend on more than the image list, so an entry is stored under a fingerprint of everything they
    depend on (`cache_key`): the vision tower's weights and configuration, their dtype, the image processor's
    settings (size, normalisation) and each image's identity (file size and modification time, or the pixels of an
    already decoded image). An entry is `<folder>/<fingerprint>/` with `features.npy` and `key.json`; it is written
    into a temporary folder and renamed into place in one step, so a reader finds a whole entry or none, and a run
    with another base model, dtype, image size or changed image files builds a new one instead of reusing stale
    features. Entries with other fingerprints are removed once a new one is built (each can be very large).
    """

    def __init__(self, entry: Path, keys: list[str]):
        self.index = {key: row for row, key in enumerate(keys)}
        self.array = np.load(entry / "features.npy", mmap_mode="r")

    def __getitem__(self, key) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[self.index[key]]))

    @staticmethod
    def cache_key(model, processor, images: dict) -> dict:
        """Everything the cached features depend on; `images` maps image keys to paths or decoded PIL images."""
        weights = hashlib.sha256()
        tower = {**{f"embeddings.{n}": t for n, t in model.vision_model.embeddings.state_dict().items()},
                 **{f"encoder.{n}": t for n, t in model.vision_model.encoder.state_dict().items()}}
        for name in sorted(tower):
            tensor = tower[name].detach().cpu().contiguous()
            weights.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            weights.update(tensor.reshape(-1).view(torch.uint8).numpy())
        identities = []
        for key, image in images.items():
            if isinstance(image, (str, os.PathLike)):
                stat = os.stat(image)
                identities.append([key, f"size={stat.st_size} mtime_ns={stat.st_mtime_ns}"])
            else:
                pixels = hashlib.sha256(image.tobytes()).hexdigest()
                identities.append([key, f"{image.mode} {image.size} sha256={pixels}"])
        return {
            "vision_weights_sha256": weights.hexdigest(),
            "vision_config": json.loads(model.config.vision_config.to_json_string()),
            "dtype": str(model.vision_model.embeddings.patch_embedding.weight.dtype),
            "image_processor": json.loads(processor.image_processor.to_json_string()),
            "images": identities,
        }

    @classmethod
    def build(cls, model, processor, examples, folder: Path, batch_size: int = 64):
        images = {}
        for example in examples:
            images.setdefault(example["image_key"], example["image"])
        keys = list(images)
        key = json.loads(json.dumps(cls.cache_key(model, processor, images)))  # as it reads back from key.json
        fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        folder = Path(folder)
        entry = folder / fingerprint
        try:
            if json.loads((entry / "key.json").read_text()) == key:
                cache = cls(entry, keys)  # computed by an earlier run or by the main process
                if cache.array.shape[0] == len(keys):
                    return cache
        except (OSError, ValueError):
            pass  # no entry yet, or a damaged one: build it
        model.eval()
        dtype = model.vision_model.embeddings.patch_embedding.weight.dtype
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".building-"))
        try:
            store = None
            from tqdm.auto import tqdm

            with torch.inference_mode():
                for start in tqdm(range(0, len(keys), batch_size), desc="caching vision features"):
                    batch = [open_image(images[k], source=k) for k in keys[start : start + batch_size]]
                    pixels = processor.preprocess_images(batch).to(model.device, dtype)
                    hidden = model.encode_vision(pixels).float().cpu().numpy()
                    if store is None:
                        store = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=np.float32,
                                                          shape=(len(keys), *hidden.shape[1:]))
                    store[start : start + len(batch)] = hidden
            store.flush()
            del store
            (tmp / "key.json").write_text(json.dumps(key))
            if entry.exists():
                shutil.rmtree(entry)  # an entry without a matching key.json: left by an interrupted removal
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for stale in folder.iterdir():
            if stale != entry and stale.is_dir() and not stale.name.startswith(".building-"):
                shutil.rmtree(stale, ignore_errors=True)
        return cls(entry, keys)
