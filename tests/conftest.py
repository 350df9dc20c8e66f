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
