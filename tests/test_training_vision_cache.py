"""emovit.training.vision_cache: what the cache key covers, and rebuilding half-written entries."""

import os
import shutil
from pathlib import Path

import numpy as np
import torch

from emovit.training.arguments import DataArguments
from emovit.training.data import load_examples
from emovit.training.vision_cache import VisionCache


def test_vision_cache_key_covers_dtype_image_files_and_half_written_entries(tiny_model, tiny_processor,
                                                                            instructions_dir, tmp_path):
    processor, model = tiny_processor, tiny_model
    examples, _ = load_examples(DataArguments(dataset=str(instructions_dir), types="categorical"))
    images = tmp_path / "images"
    shutil.copytree(Path(examples[0]["image"]).parent, images)
    examples = [{**e, "image": str(images / Path(e["image"]).name), "image_key": str(images / Path(e["image"]).name)}
                for e in examples[:4] if (images / Path(e["image"]).name).is_file()]
    folder = tmp_path / "vision_cache"

    def entry():
        (found,) = [p for p in folder.iterdir() if not p.name.startswith(".")]
        return found

    first = VisionCache.build(model, processor, examples, folder)
    built = entry()
    assert VisionCache.build(model, processor, examples, folder).array.shape == first.array.shape
    assert entry() == built  # same inputs: reused
    # an entry whose key file is missing (a build that never finished) or whose array is torn is rebuilt
    (built / "key.json").unlink()
    VisionCache.build(model, processor, examples, folder)
    assert (entry() / "key.json").is_file()
    (entry() / "features.npy").write_bytes((entry() / "features.npy").read_bytes()[:200])
    rebuilt = VisionCache.build(model, processor, examples, folder)
    assert rebuilt.array.shape == first.array.shape and np.array_equal(rebuilt.array, first.array)
    # another image file content (new size and mtime) gives a new entry
    path = Path(examples[0]["image"])
    path.write_bytes(path.read_bytes() + b"\0")
    os.utime(path, ns=(1, 1))
    VisionCache.build(model, processor, examples, folder)
    assert entry() != built
    changed = entry()
    # another dtype too
    model.vision_model.embeddings.to(torch.bfloat16)
    model.vision_model.encoder.to(torch.bfloat16)
    VisionCache.build(model, processor, examples, folder)
    assert entry() != changed


def test_cached_rows_are_the_vision_towers_output(tiny_model, tiny_processor, images, tmp_path):
    examples = [{"image": image, "image_key": f"img{i}"} for i, image in enumerate(images)]
    cache = VisionCache.build(tiny_model, tiny_processor, examples + examples[:1], tmp_path / "cache")
    assert cache.array.shape[0] == len(images)  # one row per distinct image key
    with torch.no_grad():
        expected = tiny_model.encode_vision(tiny_processor.preprocess_images(images))
    for i in range(len(images)):
        assert torch.allclose(cache[f"img{i}"], expected[i], atol=1e-6)
