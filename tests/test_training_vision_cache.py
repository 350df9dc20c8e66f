"""emovit.training.vision_cache: what the cache key covers, rebuilding half-written entries, and a build shared by 2
processes (each encodes its share; the same features as one process; a killed process leaves no entry)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emovit.training.arguments import DataArguments
from emovit.training.data import load_examples
from emovit.training.vision_cache import VisionCache
from modeling_emovit import EmoVitForConditionalGeneration

from testing_utils import random_images, subprocess_env


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


def test_vision_cache_removes_only_its_own_stale_entries(tiny_model, tiny_processor, images, tmp_path):
    """A new entry replaces the cache's older entries and killed builds' leftovers, never a folder of someone
    else's that sits in the cache folder."""
    folder = tmp_path / "vision_cache"
    (folder / "my-notes").mkdir(parents=True)
    (folder / "my-notes" / "keep.txt").write_text("mine")
    (folder / "0123456789abcdef").mkdir()  # an older entry of the cache (another fingerprint)
    (folder / ".building-0123456789abcdef-x1y2").mkdir()  # a killed build's temporary folder
    for i, image in enumerate(images):
        image.save(tmp_path / f"{i}.png")
    examples = [{"image": str(tmp_path / f"{i}.png"), "image_key": str(tmp_path / f"{i}.png")} for i in range(4)]
    assert VisionCache.build(tiny_model, tiny_processor, examples, folder).encoded == 4
    assert (folder / "my-notes" / "keep.txt").read_text() == "mine"
    [entry] = [p.name for p in folder.iterdir() if p.name != "my-notes"]
    assert re.fullmatch("[0-9a-f]{16}", entry) and entry != "0123456789abcdef"


def test_cached_rows_are_the_vision_towers_output(tiny_model, tiny_processor, images, tmp_path):
    examples = [{"image": image, "image_key": f"img{i}"} for i, image in enumerate(images)]
    cache = VisionCache.build(tiny_model, tiny_processor, examples + examples[:1], tmp_path / "cache")
    assert cache.array.shape[0] == len(images)  # one row per distinct image key
    with torch.no_grad():
        expected = tiny_model.encode_vision(tiny_processor.preprocess_images(images))
    for i in range(len(images)):
        assert torch.allclose(cache[f"img{i}"], expected[i], atol=1e-6)


# ---- under a launch of 2 processes (torchrun, gloo on the CPU): each encodes its share of the images

BUILD_SCRIPT = """
import json, os, signal, sys
from pathlib import Path
from accelerate import PartialState
from emovit.training.vision_cache import VisionCache
from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor

model_dir, folder, kill_rank = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
images = sorted(str(p) for p in Path(sys.argv[4]).glob("*.png"))
model = EmoVitForConditionalGeneration.from_pretrained(model_dir).eval()
processor = EmoVitProcessor.from_pretrained(model_dir)
state = PartialState(cpu=True)
seen = []
encode = model.encode_vision
def counting(pixel_values):
    if state.process_index == kill_rank:
        os.kill(os.getpid(), signal.SIGKILL)  # a process dies in the middle of the build
    seen.append(len(pixel_values))
    return encode(pixel_values)
model.encode_vision = counting
examples = [{"image": p, "image_key": Path(p).name} for p in images]
cache = VisionCache.build(model, processor, examples + examples[:2], folder, batch_size=2)
again = VisionCache.build(model, processor, examples, folder, batch_size=2)
print("REPORT " + json.dumps({"rank": state.process_index, "world": state.num_processes, "encoded": sum(seen),
                              "reported": cache.encoded, "reused_encoded": again.encoded}), flush=True)
state.destroy_process_group()
"""


def _synthetic_image_files(folder: Path, count: int) -> list[str]:
    folder.mkdir()
    for i, image in enumerate(random_images(count, seed=3)):
        image.save(folder / f"img{i:02d}.png")
    return sorted(str(p) for p in folder.glob("*.png"))


def _launch_build(tmp_path, tiny_dir, folder, image_dir, kill_rank=-1):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    (tmp_path / "build.py").write_text(BUILD_SCRIPT)
    env = subprocess_env(ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    return subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(tmp_path / "build.py"),
                           str(tiny_dir), str(folder), str(kill_rank), str(image_dir)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


@pytest.mark.integration
def test_two_processes_each_encode_their_share_and_match_one_process(tiny_dir, tiny_processor, tmp_path):
    paths = _synthetic_image_files(tmp_path / "images", 9)
    done = _launch_build(tmp_path, tiny_dir, tmp_path / "sharded", tmp_path / "images")
    assert done.returncode == 0, done.stderr[-3000:]
    # the two processes share one stdout, so one's line may run into the other's: find each report by its braces
    reports = sorted((json.loads(found) for found in re.findall(r"REPORT (\{[^}]*\})", done.stdout)),
                     key=lambda r: r["rank"])
    assert [r["world"] for r in reports] == [2, 2]  # really two processes, not two lone ones
    # 9 distinct images (2 repeated examples are not encoded twice): rows 0-3 on process 0, rows 4-8 on process 1
    assert [r["encoded"] for r in reports] == [r["reported"] for r in reports] == [4, 5]
    assert [r["reused_encoded"] for r in reports] == [0, 0]  # the second build reuses the entry
    (entry,) = _entries(tmp_path / "sharded")
    assert not [p for p in (tmp_path / "sharded").iterdir() if p.name.startswith(".building-")]
    model = EmoVitForConditionalGeneration.from_pretrained(tiny_dir).eval()
    examples = [{"image": p, "image_key": Path(p).name} for p in paths]
    single = VisionCache.build(model, tiny_processor, examples, tmp_path / "single")
    assert single.encoded == 9 and entry.name == _entries(tmp_path / "single")[0].name  # the same fingerprint
    sharded = np.load(entry / "features.npy")
    assert sharded.shape == single.array.shape and np.abs(sharded - single.array).max() <= 1e-6


@pytest.mark.integration
def test_a_process_killed_mid_build_leaves_no_entry_and_the_next_build_replaces_its_leftovers(tiny_dir, tiny_processor,
                                                                                             tmp_path):
    paths = _synthetic_image_files(tmp_path / "images", 6)
    folder = tmp_path / "cache"
    done = _launch_build(tmp_path, tiny_dir, folder, tmp_path / "images", kill_rank=1)
    assert done.returncode != 0
    assert _entries(folder) == []  # nothing a later run could take for a finished entry
    assert [p for p in folder.iterdir() if p.name.startswith(".building-")]  # only the killed build's temp folder
    model = EmoVitForConditionalGeneration.from_pretrained(tiny_dir).eval()
    examples = [{"image": p, "image_key": Path(p).name} for p in paths]
    cache = VisionCache.build(model, tiny_processor, examples, folder)
    assert cache.encoded == 6 and [p.name for p in folder.iterdir()] == [_entries(folder)[0].name]
    with torch.no_grad():
        expected = model.encode_vision(tiny_processor.preprocess_images(
            [Image.open(p).convert("RGB") for p in paths]))
    assert torch.allclose(torch.from_numpy(np.array(cache.array)), expected, atol=1e-6)
