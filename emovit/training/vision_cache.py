"""A memory-mapped cache of the frozen ViT's features, keyed by everything they depend on, built by every process of
a launch together: each encodes its own share of the images."""

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from emovit.distributed import from_every_process, from_main_process
from modeling_emovit.image_utils import open_image


logger = logging.getLogger(__name__)

# The names of the folders the cache makes in its folder: an entry (its key's 16-hex fingerprint) and the temporary
# folder it is built in.
_CACHE_FOLDER_NAME = re.compile(r"[0-9a-f]{16}|\.building-[0-9a-f]{16}-.+")


def _launch_state():
    """accelerate's process state: the launch's when started by accelerate/torchrun, a lone process otherwise."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # Without cpu=True a launch on a machine without CUDA would run every process as a lone one (gloo needs it).
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def share_of(count: int, process_index: int, num_processes: int) -> range:
    """The contiguous rows process `process_index` of `num_processes` encodes: sizes differ by at most one."""
    return range(count * process_index // num_processes, count * (process_index + 1) // num_processes)


class VisionCache:
    """The frozen ViT's output before its (trained) post-LayerNorm, one row per image, in a .npy file that is
    memory-mapped (EVA ViT-g gives 257 x 1408 values per image: the cache can exceed RAM).

    The features depend on more than the image list, so an entry is stored under a fingerprint of everything they
    depend on (`cache_key`): the vision tower's weights and configuration, their dtype, the image processor's
    settings (size, normalisation) and each image's identity (file size and modification time, or the pixels of an
    already decoded image). An entry is `<folder>/<fingerprint>/` with `features.npy` and `key.json`; it is written
    into a temporary `.building-*` folder and renamed into place in one step, so a reader finds a whole entry or none
    (a build killed midway leaves only a `.building-*` folder, which no lookup reads), and a run with another base
    model, dtype, image size or changed image files builds a new one instead of reusing stale features. Entries with
    other fingerprints, and `.building-*` folders left by killed builds, are removed once a new entry is built (each
    can be very large).

    Under a launch of N processes, every process calls `build`: the main process creates the temporary folder and
    the whole `features.npy`, each process encodes a contiguous 1/N of the distinct images into its own rows, and
    the main process renames the finished folder into place while the others wait. The folder must therefore be one
    that every process sees (on several nodes: a shared filesystem).
    """

    def __init__(self, entry: Path, keys: list[str], encoded: int = 0):
        self.index = {key: row for row, key in enumerate(keys)}
        self.array = np.load(entry / "features.npy", mmap_mode="r")
        self.encoded = encoded  # images this process ran through the vision tower for this cache (0: reused)

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
    def _open_finished(cls, entry: Path, key: dict, keys: list[str]):
        """The entry if it is whole and was built from `key`, else None."""
        try:
            if json.loads((entry / "key.json").read_text()) == key:
                cache = cls(entry, keys)
                if cache.array.shape[0] == len(keys):
                    return cache
        except (OSError, ValueError):
            pass  # no entry yet, or a damaged one
        return None

    @classmethod
    def build(cls, model, processor, examples, folder: Path, batch_size: int = 64):
        """The cache of `examples`' distinct images under `folder`, reused when an earlier run built the same one.
        Every process of a launch must call it with the same examples and the same vision weights."""
        state = _launch_state()
        images = {}
        for example in examples:
            images.setdefault(example["image_key"], example["image"])
        keys = list(images)
        key = json.loads(json.dumps(cls.cache_key(model, processor, images)))  # as it reads back from key.json
        fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        fingerprints = from_every_process(fingerprint)
        if len(set(fingerprints)) > 1:
            differing = [k for k, f in enumerate(fingerprints) if f != fingerprints[0]]
            raise ValueError(
                f"the vision-feature cache key differs between processes (fingerprints {fingerprints}; processes "
                f"{differing} differ from the main process): every process must load the same vision weights in the "
                "same dtype and see the same image files. Load the model from one saved checkpoint on every process.")
        folder = Path(folder)
        entry = folder / fingerprint

        # ---- an entry built earlier: the main process decides, so that every process takes the same path
        cache = cls._open_finished(entry, key, keys) if state.is_main_process else None
        if from_main_process(cache is not None):
            return cache if cache is not None else cls(entry, keys)

        # ---- the temporary folder and the whole array, made by the main process before anyone writes a row
        vision = model.config.vision_config
        size = tuple(vision.image_size) if isinstance(vision.image_size, (list, tuple)) else (vision.image_size,) * 2
        row_shape = ((size[0] // vision.patch_size) * (size[1] // vision.patch_size) + 1, vision.hidden_size)
        tmp, problem = None, None
        if state.is_main_process:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".building-{fingerprint}-"))
                # The whole file, sized once: each process then writes its own rows into it.
                np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=np.float32,
                                          shape=(len(keys), *row_shape)).flush()
            except OSError as e:
                problem = f"process 0 could not create the vision-feature cache in {folder}: {e}"
        tmp, problem = from_main_process((tmp, problem))
        if problem is None and not (tmp / "features.npy").is_file():
            problem = (f"process {state.process_index} does not see {tmp}, which the main process created: the "
                       f"vision-feature cache folder {folder} must be on a filesystem every process shares "
                       "(put --output_dir there)")
        mine = share_of(len(keys), state.process_index, state.num_processes)
        encoded, own_error = 0, None
        if problem is None:
            try:
                encoded = cls._encode_rows(model, processor, images, keys, mine, tmp / "features.npy", batch_size,
                                           row_shape, state)
            except Exception as e:  # noqa: BLE001 - reported on every process below, so none waits forever
                problem = f"process {state.process_index}: {type(e).__name__}: {e}"
                own_error = e
        problems = [p for p in from_every_process(problem) if p is not None]  # also the barrier after the last row
        if problems:
            if state.is_main_process and tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if own_error is not None:
                raise own_error
            raise RuntimeError("building the vision-feature cache failed: " + "; ".join(problems))

        # ---- the finished folder renamed into place once, then opened by everyone
        if state.is_main_process:
            try:
                (tmp / "key.json").write_text(json.dumps(key))
                if entry.exists():
                    shutil.rmtree(entry)  # an entry without a matching key.json: left by an interrupted removal
                os.replace(tmp, entry)
            except BaseException as e:
                shutil.rmtree(tmp, ignore_errors=True)
                own_error = e
            else:
                for stale in folder.iterdir():
                    # Other fingerprints and killed builds' leftovers, by their names: whatever else is in the
                    # folder is not the cache's to delete.
                    if stale != entry and stale.is_dir() and _CACHE_FOLDER_NAME.fullmatch(stale.name):
                        shutil.rmtree(stale, ignore_errors=True)
                logger.info("vision features of %d images cached in %s by %d process(es)", len(keys), entry,
                            state.num_processes)
        problem = from_main_process(None if own_error is None else f"process 0: {type(own_error).__name__}: "
                                                                   f"{own_error}")  # also the barrier before reading
        if own_error is not None:
            raise own_error
        if problem is not None:
            raise RuntimeError(f"finishing the vision-feature cache in {folder} failed: {problem}")
        return cls(entry, keys, encoded)

    @staticmethod
    def _encode_rows(model, processor, images, keys, rows: range, path: Path, batch_size: int, row_shape, state) -> int:
        """Runs the vision tower over the images of `rows` and writes their features into those rows of `path`."""
        from tqdm.auto import tqdm

        model.eval()
        dtype = model.vision_model.embeddings.patch_embedding.weight.dtype
        # train.py builds the cache before the Trainer moves the model to its device: the tower goes to this
        # process's accelerator for the encoding (the ViT is most of the work) and back to where it was.
        home = model.vision_model.embeddings.patch_embedding.weight.device
        model.vision_model.to(state.device)
        store = np.load(path, mmap_mode="r+")
        try:
            with torch.inference_mode():
                for start in tqdm(range(rows.start, rows.stop, batch_size), disable=not state.is_local_main_process,
                                  desc=f"caching vision features ({len(rows)} of {len(keys)} on this process)"):
                    batch_keys = keys[start : min(start + batch_size, rows.stop)]
                    batch = [open_image(images[k], source=k) for k in batch_keys]
                    pixels = processor.preprocess_images(batch).to(state.device, dtype)
                    hidden = model.encode_vision(pixels).float().cpu().numpy()
                    assert hidden.shape[1:] == row_shape, (hidden.shape, row_shape)
                    store[start : start + len(batch)] = hidden
            store.flush()
        finally:
            del store
            model.vision_model.to(home)
        return len(rows)
