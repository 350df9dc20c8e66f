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


# ----------------------------------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="session")
def eval_emoset_dir(tmp_path_factory):
    """A synthetic EmoSet sample whose test split has 2 images per emotion (16 in all)."""
    from dataset_builder.synthetic import write_synthetic_emoset

    path = tmp_path_factory.mktemp("synthetic-emoset-eval")
    write_synthetic_emoset(path, images_per_class=10, seed=0)
    return path


@pytest.fixture(scope="session")
def run_evaluation(tiny_dir):
    """`run_evaluation(parent, dataset, name="out", **arguments)` runs `emovit.evaluation.run.evaluate_model` on the
    tiny model (test split, batches of 5, unless `arguments` say otherwise) into `parent/name`; returns (metrics,
    the lines of predictions.jsonl, the output folder)."""
    import json
    from pathlib import Path

    from emovit.evaluation.arguments import EvalArguments
    from emovit.evaluation.run import evaluate_model

    def run(parent, dataset, name="out", **arguments):
        out = Path(parent) / name
        arguments = {"model": str(tiny_dir), "split": "test", "batch_size": 5, **arguments}
        metrics = evaluate_model(EvalArguments(dataset=str(dataset), output_dir=str(out), **arguments))
        lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        return metrics, lines, out

    return run


@pytest.fixture(scope="session")
def eval_score_run(tmp_path_factory, run_evaluation, eval_emoset_dir):
    """The `score` run on `eval_emoset_dir`'s test split: (metrics, predictions lines, output folder)."""
    return run_evaluation(tmp_path_factory.mktemp("eval-score"), eval_emoset_dir)
