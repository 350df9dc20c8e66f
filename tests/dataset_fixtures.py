"""Shared helpers for the dataset_builder tests (imported by tests/test_dataset_*.py; not a conftest)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The project is installed (`pip install -e .`); the repo root stays off sys.path so that `import evaluate` means
# the library, not the top-level evaluate.py script.
REPO_ROOT = Path(__file__).resolve().parents[1]

CONVERSATION_REPLY = """Sure! Here are the pairs.

**Question 1:** What colour dominates the background of this picture?
**Answer:** The background is mostly a warm, bright yellow.

Question 2: What shape stands in the middle of the frame?
Answer: A large round shape sits near the centre.

Complex question: Why might this simple composition feel cheerful to a viewer?
Answer: The saturated warm colours and the soft, round form read as playful and friendly, which lifts the mood.
"""

REASONING_REPLY = (
    "Question: What in this picture makes it feel playful rather than calm?\n"
    "Answer: The bright, saturated background and the bold round shape in the middle give the scene a lively, "
    "toy-like quality. Nothing in the frame looks threatening, and the strong warm colours pull the eye in, so "
    "the viewer reads the image as light-hearted fun."
)

MALFORMED_REPLY = "I am sorry, but I cannot help with that request."


def write_synth(root: Path, images_per_class: int = 6, seed: int = 0) -> Path:
    from dataset_builder.synthetic import write_synthetic_emoset

    write_synthetic_emoset(root, images_per_class=images_per_class, seed=seed)
    return root


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic EmoSet (6 images per class: 4 train, 1 val, 1 test). Read-only for tests."""
    return write_synth(tmp_path_factory.mktemp("synth") / "emoset")


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env
