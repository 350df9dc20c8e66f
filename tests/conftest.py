"""Shared fixtures: a tiny random EmoVIT saved once per test session, and small PIL images."""

import numpy as np
import pytest
from PIL import Image

from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor
from modeling_emovit.tiny import save_tiny_emovit


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-emovit")
    save_tiny_emovit(path, seed=0)
    return path


@pytest.fixture()
def tiny_model(tiny_dir):
    return EmoVitForConditionalGeneration.from_pretrained(tiny_dir).eval()


@pytest.fixture(scope="session")
def tiny_processor(tiny_dir):
    return EmoVitProcessor.from_pretrained(tiny_dir)


def random_images(count, seed=0, size=(40, 36)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)]


@pytest.fixture()
def images():
    return random_images(4)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic EmoSet-shaped sample: 5 images per emotion (3 train, 1 val, 1 test)."""
    from dataset_builder.synthetic import write_synthetic_emoset

    root = tmp_path_factory.mktemp("emoset-synthetic")
    write_synthetic_emoset(root, images_per_class=5, seed=0)
    return root


@pytest.fixture(scope="session")
def instructions_dir(tmp_path_factory, synthetic_root):
    """Template-backend instruction data built from `synthetic_root`."""
    from dataset_builder.build import BuildOptions, run_build

    out = tmp_path_factory.mktemp("instructions")
    run_build(BuildOptions(emoset_root=str(synthetic_root), output_dir=str(out), llm_backend="template",
                           captioner="none", seed=0, show_progress=False))
    return out


def private_copy(synthetic_root, instructions_dir, tmp_path):
    """Copies of the synthetic EmoSet and its instruction data that a test may change; the copied data's summary
    points at the copied EmoSet."""
    import json
    import shutil

    root, data = tmp_path / "emoset", tmp_path / "instructions"
    shutil.copytree(synthetic_root, root)
    shutil.copytree(instructions_dir, data)
    summary = json.loads((data / "summary.json").read_text())
    (data / "summary.json").write_text(json.dumps({**summary, "emoset_root": str(root)}))
    return root, data


def categorical_images(data):
    """The image paths (relative to the EmoSet root) of the categorical records of a builder folder."""
    import json

    records = [json.loads(line) for line in (data / "instructions.jsonl").read_text().splitlines()]
    return [record["image"] for record in records if record["type"] == "categorical"]
