"""Shared fixtures: a tiny random EmoVIT saved once per test session, and small PIL images."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor
from modeling_emovit.tiny import save_tiny_emovit

from testing_utils import BatchApiServer, random_images


# tests/transformers_conformance/ runs inside transformers' unpacked source distribution, where
# test_transformers_conformance.py copies it; its modules import from that tree, so they are not collected here.
collect_ignore = ["transformers_conformance"]


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


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-emovit-t5")
    save_tiny_emovit(path, seed=0, language_model="t5")
    return path


@pytest.fixture()
def tiny_t5_model(tiny_t5_dir):
    return EmoVitForConditionalGeneration.from_pretrained(tiny_t5_dir).eval()


@pytest.fixture(scope="session")
def tiny_t5_processor(tiny_t5_dir):
    return EmoVitProcessor.from_pretrained(tiny_t5_dir)


@pytest.fixture()
def images():
    return random_images(4)


# ---- data: a synthetic EmoSet and instruction data built from it; a fake Batch API server

@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic EmoSet-shaped sample: 6 images per emotion (4 train, 1 val, 1 test). Read-only for tests;
    copy it to change it."""
    from dataset_builder.synthetic import write_synthetic_emoset

    root = tmp_path_factory.mktemp("emoset-synthetic")
    # Clean labels: tests count images per emotion and split (the label noise is tested in test_dataset_synthetic).
    write_synthetic_emoset(root, images_per_class=6, seed=0, label_noise=0.0)
    return root


@pytest.fixture(scope="session")
def instructions_dir(tmp_path_factory, synthetic_root):
    """Template-backend instruction data built from 3 train images per emotion and type of `synthetic_root`: 24
    categorical, 72 conversation and 24 reasoning records."""
    from dataset_builder.build import BuildOptions, run_build

    out = tmp_path_factory.mktemp("instructions")
    run_build(BuildOptions(emoset_root=str(synthetic_root), output_dir=str(out), llm_backend="template",
                           per_class={"categorical": 3, "conversation": 3, "reasoning": 3}, captioner="none", seed=0,
                           show_progress=False))
    return out


@pytest.fixture()
def batch_api():
    """A scripted Batch API server on loopback (`BatchApiServer`), stopped after the test."""
    server = BatchApiServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


# ----------------------------------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="session")
def eval_emoset_dir(tmp_path_factory):
    """A synthetic EmoSet sample whose test split has 2 images per emotion (16 in all)."""
    from dataset_builder.synthetic import write_synthetic_emoset

    path = tmp_path_factory.mktemp("synthetic-emoset-eval")
    write_synthetic_emoset(path, images_per_class=10, seed=0, label_noise=0.0)  # 2 test images per emotion exactly
    return path


@pytest.fixture(scope="session")
def run_evaluation(tiny_dir):
    """`run_evaluation(parent, dataset, name="out", **arguments)` runs `emovit.evaluation.run.evaluate_model` on the
    tiny model (test split, batches of 5, unless `arguments` say otherwise) into `parent/name`; returns (metrics,
    the lines of predictions.jsonl, the output folder)."""
    import json

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


# ----------------------------------------------------------------------------------------------------- prediction


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """A folder as a person's photos come: 9 readable images in several modes and formats, some in sub-folders
    (RGB JPEG, greyscale PNG, RGBA PNG, CMYK JPEG, 16-bit PNG, palette GIF, WebP, 16-bit TIFF, BMP), 4 files that
    cannot be predicted under bad/ (text named .jpg, a truncated JPEG, an empty PNG, a 1x1 PNG) and a text file. Returns
    (folder, {"readable": [paths], "unreadable": {path: words its reason contains}}), paths sorted. Read-only."""
    root = tmp_path_factory.mktemp("photos")
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "bad").mkdir()
    rgb = random_images(3, seed=7, size=(48, 40))
    grey16 = np.random.default_rng(1).integers(0, 65536, (30, 34), dtype=np.uint16)
    rgb[0].save(root / "a_rgb.jpg")
    rgb[1].convert("L").save(root / "b_grey.png")
    rgba = rgb[2].convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "c_rgba.png")
    rgb[0].convert("CMYK").save(root / "d_cmyk.jpg")
    Image.fromarray(grey16).save(root / "e_16bit.png")
    rgb[1].convert("P").save(root / "f_palette.gif")
    rgb[2].save(root / "nested" / "deeper" / "g.webp")
    Image.fromarray(grey16).save(root / "nested" / "h_16bit.tif")
    rgb[2].resize((64, 30)).save(root / "nested" / "i.bmp")
    (root / "notes.txt").write_text("not an image")
    (root / "bad" / "text.jpg").write_text("this is text, not a JPEG")
    random_images(1, seed=3, size=(64, 64))[0].save(root / "bad" / "truncated.jpg", quality=95)
    data = (root / "bad" / "truncated.jpg").read_bytes()
    (root / "bad" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "bad" / "empty.png").write_bytes(b"")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(root / "bad" / "one_pixel.png")
    readable = sorted(str(path) for path in root.rglob("*") if path.is_file() and "bad" not in path.parts
                      and path.suffix != ".txt")
    unreadable = {str(root / "bad" / "empty.png"): "empty", str(root / "bad" / "one_pixel.png"): "1x1",
                  str(root / "bad" / "text.jpg"): "could not be read",
                  str(root / "bad" / "truncated.jpg"): "could not be read"}
    return root, {"readable": readable, "unreadable": unreadable}
