"""evaluate.py on the tiny random EmoVIT and a synthetic EmoSet sample; the metric module; the `evaluate` name.

The script is loaded by path (`evaluate_script`): `import evaluate` must keep meaning the library.
"""

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from PIL import Image

from dataset_builder.emoset import read_split
from dataset_builder.synthetic import write_synthetic_emoset
from modeling_emovit import (
    CATEGORICAL_INSTRUCTION_VARIANTS,
    EMOSET_EMOTIONS,
    EmotionPrediction,
    EmoVitForConditionalGeneration,
    EmoVitProcessor,
    format_categorical_instruction,
)


REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("evaluate_script", REPO / "evaluate.py")
evaluate_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(evaluate_script)

# Written out here rather than taken from evaluate.py, so a wrong preset fails the test.
BINARY = {"amusement": "positive", "awe": "positive", "contentment": "positive", "excitement": "positive",
          "anger": "negative", "disgust": "negative", "fear": "negative", "sadness": "negative"}


@pytest.fixture(scope="module")
def emoset_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic-emoset")
    write_synthetic_emoset(path, images_per_class=10, seed=0)  # test split: 2 images per class
    return path


def run(tmp_path_factory_or_dir, tiny_dir, dataset, *extra, name="out"):
    out = Path(tmp_path_factory_or_dir) / name
    argv = ["--model", str(tiny_dir), "--dataset", str(dataset), "--split", "test", "--batch_size", "5",
            "--output_dir", str(out), *extra]
    metrics = evaluate_script.main(argv)
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return metrics, lines, out


@pytest.fixture(scope="module")
def score_run(tmp_path_factory, tiny_dir, emoset_dir):
    return run(tmp_path_factory.mktemp("score"), tiny_dir, emoset_dir)


def accuracy_of(lines):
    return sum(line["prediction"] == line["label"] for line in lines) / len(lines)


# ----------------------------------------------------------------------------------------------------- outputs


def test_score_run_writes_consistent_outputs(score_run, emoset_dir):
    metrics, lines, out = score_run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["accuracy"] == metrics["accuracy"]
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(out)) == ["confusion_matrix.png", "metrics.json", "predictions.jsonl"]  # no temp files

    items = read_split(emoset_dir, "test").items
    assert [line["id"] for line in lines] == [item.image_id for item in items]
    assert [line["label"] for line in lines] == [item.emotion for item in items]
    assert metrics["num_images"] == len(lines) == 16

    assert metrics["accuracy"] == pytest.approx(accuracy_of(lines))
    assert all(line["correct"] == (line["prediction"] == line["label"]) for line in lines)
    for label in EMOSET_EMOTIONS:
        mine = [line for line in lines if line["label"] == label]
        assert metrics["per_class_accuracy"][label] == pytest.approx(accuracy_of(mine))
    confusion = metrics["confusion_matrix"]
    assert sum(map(sum, confusion)) == 16 and [sum(row) for row in confusion] == [2] * 8
    assert sum(confusion[k][k] for k in range(8)) == sum(line["correct"] for line in lines)
    assert metrics["invalid_rate"] == 0.0

    for line in lines:
        assert list(line["scores"]) == list(EMOSET_EMOTIONS)
        assert sum(line["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert line["prediction"] == max(line["scores"], key=line["scores"].get)
    assert metrics["images_per_second"] > 0
    assert on_disk["arguments"]["method"] == "score" and on_disk["arguments"]["batch_size"] == 5


def test_score_run_matches_classify_on_the_whole_split(score_run, tiny_dir, emoset_dir):
    """Batches of 5 (with a short last batch) give what one call on all images gives."""
    _, lines, _ = score_run
    model = EmoVitForConditionalGeneration.from_pretrained(tiny_dir).eval()
    processor = EmoVitProcessor.from_pretrained(tiny_dir)
    images = [Image.open(item.image_path) for item in read_split(emoset_dir, "test").items]
    expected = model.classify(images, processor, method="score")
    assert [line["prediction"] for line in lines] == expected.labels
    got = torch.tensor([list(line["scores"].values()) for line in lines])
    torch.testing.assert_close(got, expected.scores.double(), atol=1e-5, rtol=1e-4, check_dtype=False)


def test_generate_counts_invalid_answers_as_wrong(tmp_path, tiny_dir, emoset_dir):
    metrics, lines, _ = run(tmp_path, tiny_dir, emoset_dir, "--method", "generate")
    invalid = [line for line in lines if line["prediction"] is None]
    assert metrics["invalid_rate"] == pytest.approx(len(invalid) / len(lines))
    assert all(isinstance(line["text"], str) for line in lines)
    assert not any(line["correct"] for line in invalid)
    assert metrics["accuracy"] == pytest.approx(accuracy_of(lines))
    assert sum(metrics["invalid_per_class"]) == len(invalid)


def test_generate_maps_parsed_answers_through_binary_map(tmp_path, tiny_dir, emoset_dir, monkeypatch):
    """The random tiny model never answers in format, so replace its answers by a known mix of valid and invalid
    ones and check what evaluate.py makes of them."""
    calls = []

    def fake_classify(self, images, processor, method="score", instruction=None):
        labels, texts = [], []
        for _ in images:
            i = len(calls)
            calls.append(i)
            label = None if i % 3 == 0 else EMOSET_EMOTIONS[(i * 5) % 8]
            labels.append(label)
            texts.append(f"Predict emotion: {label}" if label else "no idea")
        return EmotionPrediction(labels=labels, scores=torch.zeros(len(images), 8), texts=texts)

    monkeypatch.setattr(EmoVitForConditionalGeneration, "classify", fake_classify)
    metrics, lines, _ = run(tmp_path, tiny_dir, emoset_dir, "--method", "generate", "--label_map", "binary")
    assert metrics["labels"] == ["positive", "negative"]
    items = read_split(emoset_dir, "test").items
    assert [line["label"] for line in lines] == [BINARY[item.emotion] for item in items]
    for line in lines:
        expected = BINARY[line["model_prediction"]] if line["model_prediction"] else None
        assert line["prediction"] == expected
    n_invalid = sum(line["prediction"] is None for line in lines)
    assert n_invalid == len(range(0, 16, 3))
    assert metrics["invalid_rate"] == pytest.approx(n_invalid / 16)
    assert metrics["accuracy"] == pytest.approx(accuracy_of(lines))
    assert 0 < metrics["accuracy"] < 1
    for label in ("positive", "negative"):
        mine = [line for line in lines if line["label"] == label]
        assert metrics["per_class_accuracy"][label] == pytest.approx(accuracy_of(mine))


def test_binary_score_sums_the_eight_way_probabilities(tmp_path, score_run, tiny_dir, emoset_dir):
    _, eight_way, _ = score_run
    metrics, lines, _ = run(tmp_path, tiny_dir, emoset_dir, "--label_map", "binary")
    assert metrics["labels"] == ["positive", "negative"]
    assert list(metrics["per_class_accuracy"]) == ["positive", "negative"]
    assert len(metrics["confusion_matrix"]) == 2 and all(len(row) == 2 for row in metrics["confusion_matrix"])
    for line, full in zip(lines, eight_way):
        positive = sum(p for label, p in full["scores"].items() if BINARY[label] == "positive")
        assert line["scores"]["positive"] == pytest.approx(positive, abs=1e-6)
        assert sum(line["scores"].values()) == pytest.approx(1.0, abs=1e-6)
        assert line["label"] == BINARY[full["label"]]
    assert metrics["accuracy"] == pytest.approx(accuracy_of(lines))


def test_prompt_variants_report_each_accuracy_and_spread(tmp_path, tiny_dir, emoset_dir):
    config = {"model": str(tiny_dir), "dataset": str(emoset_dir), "output_dir": str(tmp_path / "out"),
              "prompt_variants": 3, "batch_size": 8}
    (tmp_path / "eval.json").write_text(json.dumps(config))
    metrics = evaluate_script.main([str(tmp_path / "eval.json")])  # arguments from one JSON file
    variants = metrics["prompt_variants"]
    assert [v["instruction"] for v in variants] == [
        format_categorical_instruction(EMOSET_EMOTIONS, template) for template in CATEGORICAL_INSTRUCTION_VARIANTS[:3]
    ]
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 3 * 16
    accuracies = [accuracy_of([line for line in lines if line["prompt_variant"] == k]) for k in range(3)]
    assert [v["accuracy"] for v in variants] == pytest.approx(accuracies)
    assert metrics["accuracy"] == pytest.approx(accuracies[0])
    assert metrics["prompt_accuracy_spread"] == pytest.approx(max(accuracies) - min(accuracies))
    mean = sum(accuracies) / 3
    assert metrics["prompt_accuracy_std"] == pytest.approx(math.sqrt(sum((a - mean) ** 2 for a in accuracies) / 3))
    # The instruction reaches the model: different paraphrases give different probabilities.
    first, second = lines[0]["scores"], lines[16]["scores"]
    assert lines[16]["id"] == lines[0]["id"] and first != second


def test_two_processes_split_gather_and_write_once(tmp_path, score_run, tiny_dir, emoset_dir):
    """torchrun with 2 CPU processes (gloo): an uneven split (4 + 3 images) gathered back in dataset order, metrics
    over all of them, one set of outputs."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    out = tmp_path / "out"
    # Calls main() as train.py does, to see what each process gets back.
    (tmp_path / "launch.py").write_text(
        "import importlib.util, os, sys\n"
        f"spec = importlib.util.spec_from_file_location('evaluate_script', {str(REPO / 'evaluate.py')!r})\n"
        "script = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(script)\n"
        "metrics = script.main(sys.argv[1:])\n"
        "print(f\"\\nrank {os.environ['RANK']} got accuracy {metrics['accuracy']!r}\", flush=True)\n"
    )
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(tmp_path / "launch.py"), "--model",
               str(tiny_dir), "--dataset", str(emoset_dir), "--output_dir", str(out), "--batch_size", "3",
               "--max_images", "7"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # only the main process writes
    metrics = json.loads((out / "metrics.json").read_text())
    for rank in (0, 1):
        assert f"rank {rank} got accuracy {metrics['accuracy']!r}" in done.stdout
    assert metrics["num_processes"] == 2 and metrics["num_images"] == 7
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    _, expected, _ = score_run
    assert [line["id"] for line in lines] == [line["id"] for line in expected[:7]]
    assert [line["prediction"] for line in lines] == [line["prediction"] for line in expected[:7]]
    assert metrics["accuracy"] == pytest.approx(accuracy_of(lines))


# ----------------------------------------------------------------------------------------------------- other datasets


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_hf_dataset_gives_the_same_predictions(tmp_path, score_run, tiny_dir, emoset_dir, layout):
    """The `datasets` paths (load_from_disk; load_dataset on a Hub-style parquet folder, as for a Hub id)."""
    items = read_split(emoset_dir, "test").items
    table = datasets.Dataset.from_dict(
        {"image": [item.image_path for item in items], "label": [item.emotion for item in items]}
    ).cast_column("image", datasets.Image()).class_encode_column("label")
    if layout == "save_to_disk":
        datasets.DatasetDict({"test": table}).save_to_disk(str(tmp_path / "hf"))
    else:
        (tmp_path / "hf" / "data").mkdir(parents=True)
        table.to_parquet(str(tmp_path / "hf" / "data" / "test-00000-of-00001.parquet"))
    _, lines, _ = run(tmp_path, tiny_dir, tmp_path / "hf")
    _, expected, _ = score_run
    assert [line["label"] for line in lines] == [line["label"] for line in expected]
    assert [line["prediction"] for line in lines] == [line["prediction"] for line in expected]
    assert lines[3]["id"] == "test/3"


def emotion6_folder(root: Path, emoset_dir: Path) -> Path:
    """An ImageFolder with Emotion6's labels, filled with synthetic images."""
    items = read_split(emoset_dir, "test").items
    for k, label in enumerate(("anger", "disgust", "fear", "joy", "sadness", "surprise")):
        (root / "test" / label).mkdir(parents=True)
        for item in items[2 * k : 2 * k + 2]:
            shutil.copy(item.image_path, root / "test" / label / Path(item.image_path).name)
    return root


def test_emotion6_folder_needs_and_uses_a_label_map(tmp_path, tiny_dir, emoset_dir):
    folder = emotion6_folder(tmp_path / "emotion6", emoset_dir)
    with pytest.raises(ValueError, match=r"\['joy', 'surprise'\].*--label_map"):
        run(tmp_path, tiny_dir, folder, name="no-map")
    metrics, lines, _ = run(tmp_path, tiny_dir, folder, "--label_map", "emotion6")
    assert sorted(metrics["labels"]) == ["anger", "disgust", "fear", "joy", "sadness", "surprise"]
    assert metrics["label_map"]["awe"] == "surprise" and metrics["label_map"]["contentment"] == "joy"
    assert len(lines) == 12 and metrics["accuracy"] == pytest.approx(accuracy_of(lines))


def test_label_map_file_drops_labels_and_renormalises(tmp_path, tiny_dir, emoset_dir):
    folder = emotion6_folder(tmp_path / "emotion6", emoset_dir)
    for label in ("anger", "disgust", "fear", "surprise"):
        shutil.rmtree(folder / "test" / label)
    mapping = {label: None for label in EMOSET_EMOTIONS}
    mapping.update(amusement="Joy", excitement="joy", sadness="sadness")  # case is normalised
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    metrics, lines, _ = run(tmp_path, tiny_dir, folder, "--label_map", str(tmp_path / "map.json"))
    assert metrics["labels"] == ["joy", "sadness"]
    assert all(sum(line["scores"].values()) == pytest.approx(1.0, abs=1e-6) for line in lines)


# ----------------------------------------------------------------------------------------------------- bad input


def test_unknown_method_is_refused(tmp_path, tiny_dir, emoset_dir):
    with pytest.raises(ValueError, match=r"--method is 'vote'.*'score', 'generate'"):
        run(tmp_path, tiny_dir, emoset_dir, "--method", "vote")


def test_model_folder_that_is_not_emovit_is_refused(tmp_path, emoset_dir):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    with pytest.raises(ValueError, match=r"holds a 'bert' model.*emovit"):
        run(tmp_path, bert, emoset_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"without config\.json"):
        run(tmp_path, empty, emoset_dir)


def test_dataset_labels_outside_the_models_are_refused(tmp_path, tiny_dir, emoset_dir):
    # UnbiasedEmo has no disgust: EmoSet's disgust images have nothing to be compared with.
    with pytest.raises(ValueError, match=r"\['disgust'\].*--label_map"):
        run(tmp_path, tiny_dir, emoset_dir, "--label_map", "unbiasedemo")
    (tmp_path / "partial.json").write_text(json.dumps({"amusement": "positive", "anger": "negative"}))
    with pytest.raises(ValueError, match=r"missing from the map: \['awe'"):
        run(tmp_path, tiny_dir, emoset_dir, "--label_map", str(tmp_path / "partial.json"))


def test_empty_split_is_refused(tmp_path, tiny_dir, emoset_dir):
    root = tmp_path / "broken"
    shutil.copytree(emoset_dir, root)
    entries = json.loads((root / "test.json").read_text())
    for entry in entries:
        (root / entry[1]).unlink()  # every test image missing: all entries are skipped
    with pytest.raises(ValueError, match=r"'test'.*no usable images"):
        run(tmp_path, tiny_dir, root)
    (root / "test.json").write_text("[]")
    with pytest.raises(ValueError, match="empty"):
        run(tmp_path, tiny_dir, root)


# ----------------------------------------------------------------------------------------------------- metric module


def test_metric_module_counts_invalid_answers_as_wrong_and_not_as_a_class():
    import evaluate

    metric = evaluate.load(str(REPO / "metrics" / "emotion_classification"), keep_in_memory=True)
    result = metric.compute(predictions=[0, 1, -1, 1, 2], references=[0, 1, 1, 0, 2], label_names=["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["per_class_accuracy"] == {"a": 0.5, "b": 0.5, "c": 1.0}
    # F1: a = 2/3 (P 1, R 1/2), b = 1/2 (P 1/2, R 1/2), c = 1; the invalid answer only lowers b's recall.
    assert result["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert result["invalid_rate"] == pytest.approx(1 / 5) and result["invalid_per_class"] == [0, 1, 0]
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        metric.compute(predictions=[3], references=[0], num_labels=3)


# ----------------------------------------------------------------------------------------------------- the name


def test_import_evaluate_in_tests_is_the_library():
    import evaluate

    assert hasattr(evaluate, "load") and "site-packages" in evaluate.__file__


@pytest.mark.parametrize("flags", [["-P"], []], ids=["pytest-style-path", "cwd-on-path"])
def test_import_evaluate_from_repo_root_is_the_library(flags):
    # `pytest` (the console script) does not put the working directory on sys.path; `-P` does the same for python.
    # Plain `python -c` from the repository root does, so `import evaluate` first finds the script, which runs its
    # imports, steps aside, and leaves the library under the name.
    code = "import evaluate; print(evaluate.__file__); print(callable(evaluate.load))"
    done = subprocess.run([sys.executable, *flags, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    path, has_load = done.stdout.split()[-2:]
    assert "site-packages" in path and path.endswith(os.path.join("evaluate", "__init__.py")) and has_load == "True"


def test_script_help_runs_from_repo_root():
    done = subprocess.run([sys.executable, "evaluate.py", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    for flag in ("--model", "--dataset", "--method", "--label_map", "--prompt_variants", "--dtype"):
        assert flag in done.stdout


# ----------------------------------------------------------------------------------------------------- bad images


def test_unreadable_images_are_counted_and_the_rest_evaluated(tmp_path, tiny_dir, emoset_dir, monkeypatch):
    import numpy as np

    root = tmp_path / "damaged"
    shutil.copytree(emoset_dir, root)
    items = read_split(root, "test").items
    truncated, bomb, deep = items[1], items[6], items[9]
    (root / truncated.relative_path).write_bytes((root / truncated.relative_path).read_bytes()[:150])
    Image.new("RGB", (1100, 1000)).save(root / bomb.relative_path, format="PNG")
    Image.fromarray(np.full((64, 64), 30000, dtype=np.uint16)).save(root / deep.relative_path, format="PNG")
    (tmp_path / "outside.jpg").write_bytes((root / items[0].relative_path).read_bytes())
    entries = json.loads((root / "test.json").read_text())
    entries.append(["awe", "escapee", "../outside.jpg", "annotation/awe/x.json"])
    (root / "test.json").write_text(json.dumps(entries))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # the 1100 x 1000 image is over it

    metrics, lines, out = run(tmp_path, tiny_dir, root, "--prompt_variants", "2")
    assert metrics["num_images"] == len(lines) // 2 == 14
    assert metrics["num_skipped"] == 3
    skipped = {entry["id"]: entry["reason"] for entry in json.loads((out / "metrics.json").read_text())["skipped"]}
    assert sorted(skipped) == sorted(["test.json[16] (escapee)", truncated.image_id, bomb.image_id])
    assert "outside the dataset root" in skipped["test.json[16] (escapee)"]
    assert truncated.image_path in skipped[truncated.image_id]
    assert bomb.image_path in skipped[bomb.image_id] and "DecompressionBomb" in skipped[bomb.image_id]
    assert {line["id"] for line in lines} == {item.image_id for item in items} - {truncated.image_id, bomb.image_id}
    assert sum(map(sum, metrics["confusion_matrix"])) == 14
    assert metrics["accuracy"] == pytest.approx(accuracy_of(lines[:14]))


def test_a_split_with_no_readable_image_is_an_error(tmp_path, tiny_dir, emoset_dir):
    root = tmp_path / "all-broken"
    shutil.copytree(emoset_dir, root)
    for item in read_split(root, "test").items:
        (root / item.relative_path).write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"None of the 16 images .* could be read"):
        run(tmp_path, tiny_dir, root)


def test_an_undecodable_image_in_a_saved_dataset_is_counted(tmp_path, tiny_dir, emoset_dir):
    items = read_split(emoset_dir, "test").items
    images = [{"bytes": Path(item.image_path).read_bytes(), "path": None} for item in items]
    images[2] = {"bytes": b"not an image", "path": None}
    table = datasets.Dataset.from_dict(
        {"image": images, "label": [item.emotion for item in items]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}),
    )
    datasets.DatasetDict({"test": table}).save_to_disk(str(tmp_path / "hf"))
    metrics, lines, _ = run(tmp_path, tiny_dir, tmp_path / "hf")
    assert metrics["num_images"] == len(lines) == 15 and "test/2" not in {line["id"] for line in lines}
    assert [entry["id"] for entry in metrics["skipped"]] == ["test/2"]
    assert "test/2 (row 2) could not be read" in metrics["skipped"][0]["reason"]
