"""emovit.evaluation.run: evaluate_model on the tiny random EmoVIT and a synthetic EmoSet sample (16 test images),
in one process and under torchrun; model checks; the skipped-image accounting; the `evaluate` library's name."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from dataset_builder.emoset import read_split
from modeling_emovit import (
    CATEGORICAL_INSTRUCTION_VARIANTS,
    EMOSET_EMOTIONS,
    EmotionPrediction,
    EmoVitForConditionalGeneration,
    EmoVitProcessor,
    format_categorical_instruction,
)


REPO = Path(__file__).resolve().parents[1]
# Written out here rather than taken from the library, so a wrong preset fails the test.
BINARY = {"amusement": "positive", "awe": "positive", "contentment": "positive", "excitement": "positive",
          "anger": "negative", "disgust": "negative", "fear": "negative", "sadness": "negative"}


def accuracy_of(lines):
    return sum(line["prediction"] == line["label"] for line in lines) / len(lines)


# ----------------------------------------------------------------------------------------------------- outputs


def test_score_run_writes_consistent_outputs(eval_score_run, eval_emoset_dir):
    metrics, lines, out = eval_score_run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["accuracy"] == metrics["accuracy"]
    assert on_disk == metrics
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(out)) == ["confusion_matrix.png", "metrics.json", "predictions.jsonl",
                                      "reliability_diagram.png", "risk_coverage.png"]  # no temp files

    items = read_split(eval_emoset_dir, "test").items
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
    assert (metrics["num_skipped"], metrics["skipped"], metrics["num_processes"]) == (0, [], 1)
    assert metrics["labels"] == metrics["model_labels"] == list(EMOSET_EMOTIONS)
    assert "prompt_accuracy_spread" not in metrics and len(metrics["prompt_variants"]) == 1


def test_score_run_matches_classify_on_the_whole_split(eval_score_run, tiny_dir, eval_emoset_dir):
    """Batches of 5 (with a short last batch) give what one call on all images gives."""
    _, lines, _ = eval_score_run
    model = EmoVitForConditionalGeneration.from_pretrained(tiny_dir).eval()
    processor = EmoVitProcessor.from_pretrained(tiny_dir)
    images = [Image.open(item.image_path) for item in read_split(eval_emoset_dir, "test").items]
    expected = model.classify(images, processor, method="score")
    assert [line["prediction"] for line in lines] == expected.labels
    got = torch.tensor([list(line["scores"].values()) for line in lines])
    torch.testing.assert_close(got, expected.scores.double(), atol=1e-5, rtol=1e-4, check_dtype=False)


def test_generate_counts_invalid_answers_as_wrong(tmp_path, run_evaluation, eval_emoset_dir):
    metrics, lines, _ = run_evaluation(tmp_path, eval_emoset_dir, method="generate")
    invalid = [line for line in lines if line["prediction"] is None]
    assert metrics["invalid_rate"] == pytest.approx(len(invalid) / len(lines))
    assert all(isinstance(line["text"], str) for line in lines)
    assert not any(line["correct"] for line in invalid)
    assert metrics["accuracy"] == pytest.approx(accuracy_of(lines))
    assert sum(metrics["invalid_per_class"]) == len(invalid)


def test_generate_maps_parsed_answers_through_binary_map(tmp_path, run_evaluation, eval_emoset_dir, monkeypatch):
    """The random tiny model never answers in format, so replace its answers by a known mix of valid and invalid
    ones and check what the run makes of them."""
    calls = []

    def fake_classify(self, images, processor, method="score", instruction=None, batch_size=32):
        labels, texts = [], []
        for _ in images:
            i = len(calls)
            calls.append(i)
            label = None if i % 3 == 0 else EMOSET_EMOTIONS[(i * 5) % 8]
            labels.append(label)
            texts.append(f"Predict emotion: {label}" if label else "no idea")
        return EmotionPrediction(labels=labels, scores=torch.zeros(len(images), 8), texts=texts)

    monkeypatch.setattr(EmoVitForConditionalGeneration, "classify", fake_classify)
    metrics, lines, _ = run_evaluation(tmp_path, eval_emoset_dir, method="generate", label_map="binary")
    assert metrics["labels"] == ["positive", "negative"]
    items = read_split(eval_emoset_dir, "test").items
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


def test_binary_score_sums_the_eight_way_probabilities(tmp_path, eval_score_run, run_evaluation, eval_emoset_dir):
    _, eight_way, _ = eval_score_run
    metrics, lines, _ = run_evaluation(tmp_path, eval_emoset_dir, label_map="binary")
    assert metrics["labels"] == ["positive", "negative"]
    assert list(metrics["per_class_accuracy"]) == ["positive", "negative"]
    assert len(metrics["confusion_matrix"]) == 2 and all(len(row) == 2 for row in metrics["confusion_matrix"])
    for line, full in zip(lines, eight_way):
        positive = sum(p for label, p in full["scores"].items() if BINARY[label] == "positive")
        assert line["scores"]["positive"] == pytest.approx(positive, abs=1e-6)
        assert sum(line["scores"].values()) == pytest.approx(1.0, abs=1e-6)
        assert line["label"] == BINARY[full["label"]]
    assert metrics["accuracy"] == pytest.approx(accuracy_of(lines))


def test_prompt_variants_report_each_accuracy_and_spread(tmp_path, run_evaluation, eval_emoset_dir):
    metrics, lines, _ = run_evaluation(tmp_path, eval_emoset_dir, prompt_variants=3, batch_size=8)
    variants = metrics["prompt_variants"]
    assert [v["instruction"] for v in variants] == [
        format_categorical_instruction(EMOSET_EMOTIONS, template) for template in CATEGORICAL_INSTRUCTION_VARIANTS[:3]
    ]
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


@pytest.mark.integration
def test_two_processes_split_gather_and_return_to_every_process(tmp_path, eval_score_run, tiny_dir, eval_emoset_dir):
    """torchrun with 2 CPU processes (gloo): an uneven split (4 + 3 images) gathered back in dataset order, metrics
    over all of them, one set of outputs, and the metrics returned to both processes."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    out = tmp_path / "out"
    (tmp_path / "launch.py").write_text(
        "import os\n"
        "from emovit.evaluation.arguments import EvalArguments\n"
        "from emovit.evaluation.run import evaluate_model\n"
        f"metrics = evaluate_model(EvalArguments(model={str(tiny_dir)!r}, dataset={str(eval_emoset_dir)!r}, "
        f"output_dir={str(out)!r}, batch_size=3, max_images=7))\n"
        "print(f\"\\nrank {os.environ['RANK']} got accuracy {metrics['accuracy']!r}\", flush=True)\n"
        "import torch.distributed\n"
        "torch.distributed.destroy_process_group()  # as the scripts end a launch\n"
    )
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(tmp_path / "launch.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for rank in (0, 1):
        assert f"rank {rank} got accuracy {metrics['accuracy']!r}" in done.stdout
    assert metrics["num_processes"] == 2 and metrics["num_images"] == 7
    assert sorted(os.listdir(out)) == ["confusion_matrix.png", "metrics.json", "predictions.jsonl",
                                      "reliability_diagram.png", "risk_coverage.png"]
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    _, expected, _ = eval_score_run
    assert [line["id"] for line in lines] == [line["id"] for line in expected[:7]]
    assert [line["prediction"] for line in lines] == [line["prediction"] for line in expected[:7]]
    assert metrics["accuracy"] == pytest.approx(accuracy_of(lines))


# ----------------------------------------------------------------------------------------------------- label maps


def emotion6_folder(root: Path, emoset_dir: Path) -> Path:
    """An ImageFolder with Emotion6's labels, filled with synthetic images."""
    items = read_split(emoset_dir, "test").items
    for k, label in enumerate(("anger", "disgust", "fear", "joy", "sadness", "surprise")):
        (root / "test" / label).mkdir(parents=True)
        for item in items[2 * k : 2 * k + 2]:
            shutil.copy(item.image_path, root / "test" / label / Path(item.image_path).name)
    return root


def test_emotion6_folder_needs_and_uses_a_label_map(tmp_path, run_evaluation, eval_emoset_dir):
    folder = emotion6_folder(tmp_path / "emotion6", eval_emoset_dir)
    with pytest.raises(ValueError, match=r"\['joy', 'surprise'\].*--label_map"):
        run_evaluation(tmp_path, folder, name="no-map")
    metrics, lines, _ = run_evaluation(tmp_path, folder, label_map="emotion6")
    assert sorted(metrics["labels"]) == ["anger", "disgust", "fear", "joy", "sadness", "surprise"]
    assert metrics["label_map"]["awe"] == "surprise" and metrics["label_map"]["contentment"] == "joy"
    assert len(lines) == 12 and metrics["accuracy"] == pytest.approx(accuracy_of(lines))


def test_label_map_file_drops_labels_and_renormalises(tmp_path, run_evaluation, eval_emoset_dir):
    folder = emotion6_folder(tmp_path / "emotion6", eval_emoset_dir)
    for label in ("anger", "disgust", "fear", "surprise"):
        shutil.rmtree(folder / "test" / label)
    mapping = {label: None for label in EMOSET_EMOTIONS}
    mapping.update(amusement="Joy", excitement="joy", sadness="sadness")  # case is normalised
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    metrics, lines, _ = run_evaluation(tmp_path, folder, label_map=str(tmp_path / "map.json"))
    assert metrics["labels"] == ["joy", "sadness"]
    assert all(sum(line["scores"].values()) == pytest.approx(1.0, abs=1e-6) for line in lines)


def test_dataset_labels_outside_the_models_are_refused_before_classifying(tmp_path, run_evaluation, eval_emoset_dir):
    with pytest.raises(ValueError, match=r"\['disgust'\].*--label_map"):
        run_evaluation(tmp_path, eval_emoset_dir, label_map="unbiasedemo")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------- the model


def test_model_folder_that_is_not_emovit_is_refused(tmp_path, run_evaluation, eval_emoset_dir):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    with pytest.raises(ValueError, match=r"holds a 'bert' model.*emovit"):
        run_evaluation(tmp_path, eval_emoset_dir, model=str(bert))
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------- bad images


def test_unreadable_images_are_counted_and_the_rest_evaluated(tmp_path, run_evaluation, eval_emoset_dir,
                                                              monkeypatch):
    import numpy as np

    root = tmp_path / "damaged"
    shutil.copytree(eval_emoset_dir, root)
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

    metrics, lines, out = run_evaluation(tmp_path, root, prompt_variants=2)
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


def test_a_split_with_no_readable_image_is_an_error(tmp_path, run_evaluation, eval_emoset_dir):
    root = tmp_path / "all-broken"
    shutil.copytree(eval_emoset_dir, root)
    for item in read_split(root, "test").items:
        (root / item.relative_path).write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"None of the 16 images .* could be read"):
        run_evaluation(tmp_path, root)


def test_an_undecodable_image_in_a_saved_dataset_is_counted(tmp_path, run_evaluation, eval_emoset_dir):
    items = read_split(eval_emoset_dir, "test").items
    images = [{"bytes": Path(item.image_path).read_bytes(), "path": None} for item in items]
    images[2] = {"bytes": b"not an image", "path": None}
    table = datasets.Dataset.from_dict(
        {"image": images, "label": [item.emotion for item in items]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}),
    )
    datasets.DatasetDict({"test": table}).save_to_disk(str(tmp_path / "hf"))
    metrics, lines, _ = run_evaluation(tmp_path, tmp_path / "hf")
    assert metrics["num_images"] == len(lines) == 15 and "test/2" not in {line["id"] for line in lines}
    assert [entry["id"] for entry in metrics["skipped"]] == ["test/2"]
    assert "test/2 (row 2) could not be read" in metrics["skipped"][0]["reason"]


def test_batch_size_reaches_the_model_unsplit(tmp_path, run_evaluation, tiny_dir):
    """--batch_size is the number of images per forward pass, also above classify's own default of 32."""
    from dataset_builder.synthetic import write_synthetic_emoset
    from emovit.evaluation import run as run_module

    write_synthetic_emoset(tmp_path / "emoset", images_per_class=25, seed=1)  # 40 test images
    seen = []
    load_model = run_module.load_model

    def load_and_watch(*args, **kwargs):
        model, processor = load_model(*args, **kwargs)
        model.vision_model.register_forward_hook(lambda module, inputs, output: seen.append(len(output[0])))
        return model, processor

    run_module.load_model = load_and_watch
    try:
        metrics, _, _ = run_evaluation(tmp_path, tmp_path / "emoset", batch_size=40)
    finally:
        run_module.load_model = load_model
    assert metrics["num_images"] == 40 and seen == [40]  # one pass, not 32 + 8


# ----------------------------------------------------------------------------------------------------- calibration


def softmax_rows(log_likelihoods, temperature):
    return torch.softmax(torch.tensor(log_likelihoods, dtype=torch.float64) / temperature, dim=-1).numpy()


def test_score_run_reports_calibration_consistent_with_its_predictions(eval_score_run):
    metrics, lines, out = eval_score_run
    labels = metrics["labels"]
    probabilities = np.array([list(line["scores"].values()) for line in lines])
    references = [labels.index(line["label"]) for line in lines]
    # The scores written are the softmax of the log-likelihoods written (T = 1).
    assert probabilities == pytest.approx(softmax_rows([list(l["log_likelihoods"].values()) for l in lines], 1.0),
                                          abs=1e-6)
    assert metrics["score_temperature"] == 1.0
    assert metrics["nll"] == pytest.approx(-np.mean(np.log(probabilities[range(16), references])), abs=1e-6)
    one_hot = np.eye(8)[references]
    assert metrics["brier"] == pytest.approx(((probabilities - one_hot) ** 2).sum(1).mean(), abs=1e-6)
    bins = metrics["reliability"]
    assert sum(b["count"] for b in bins) == 16
    assert metrics["ece"] == pytest.approx(sum(b["count"] / 16 * abs(b["accuracy"] - b["confidence"])
                                               for b in bins if b["count"]))
    # The bins' accuracy is the run's accuracy.
    assert sum(b["count"] * b["accuracy"] for b in bins if b["count"]) / 16 == pytest.approx(metrics["accuracy"])
    assert 0 <= metrics["auroc_macro"] <= 1 and list(metrics["per_class_auroc"]) == labels
    assert set(metrics["definitions"]) >= {"ece", "brier", "nll", "auroc_macro"}
    assert (out / "reliability_diagram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_run_reports_selective_prediction_consistent_with_its_predictions(eval_score_run):
    metrics, lines, out = eval_score_run
    confidence = np.array([max(line["scores"].values()) for line in lines])
    correct = np.array([line["correct"] for line in lines])
    assert [row["threshold"] for row in metrics["selective"]] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    for row in metrics["selective"]:
        kept = confidence >= row["threshold"] - 1e-9
        assert row["num_kept"] == kept.sum() and row["coverage"] == pytest.approx(kept.mean())
        assert row["accuracy"] == (pytest.approx(correct[kept].mean()) if kept.any() else None)
    # The whole curve's last point is every image: the run's error rate.
    assert metrics["risk_coverage"]["coverage"][-1] == 1.0 and len(metrics["risk_coverage"]["risk"]) == 16
    assert metrics["risk_coverage"]["risk"][-1] == pytest.approx(1 - metrics["accuracy"])
    assert metrics["aurc"] == pytest.approx(np.mean(metrics["risk_coverage"]["risk"]))
    assert 0 <= metrics["weighted_f1"] <= 1 and metrics["prompt_variants"][0]["weighted_f1"] == metrics["weighted_f1"]
    assert (out / "risk_coverage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrate_on_fits_reports_and_stores_a_temperature(run_evaluation, eval_emoset_dir, eval_score_run,
                                                             tiny_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    before = {str(path.relative_to(model)): path.read_bytes() for path in model.rglob("*") if path.is_file()}
    metrics, lines, out = run_evaluation(tmp_path, eval_emoset_dir, model=str(model), calibrate_on="val",
                                         save_temperature=True, save_unreliable_temperature=True)
    raw, raw_lines, _ = eval_score_run
    for key in ("accuracy", "ece", "brier", "nll", "auroc_macro"):  # the raw metrics are the uncalibrated run's
        assert metrics[key] == pytest.approx(raw[key], abs=1e-6)
    calibrated = metrics["calibrated"]
    temperature = calibrated["temperature"]
    assert (calibrated["split"], calibrated["num_images"], calibrated["num_skipped"]) == ("val", 8, 0)
    assert 0.01 <= temperature <= 100 and temperature != pytest.approx(1.0)
    assert "8 images" in calibrated["warnings"][0]  # stored all the same: --save_unreliable_temperature
    # The calibrated metrics follow from the evaluated images' log-likelihoods at the fitted temperature.
    tempered = softmax_rows([list(line["log_likelihoods"].values()) for line in lines], temperature)
    references = [metrics["labels"].index(line["label"]) for line in lines]
    assert calibrated["nll"] == pytest.approx(-np.mean(np.log(tempered[range(16), references])), abs=1e-6)
    assert calibrated["accuracy"] == metrics["accuracy"]  # without a label map, a temperature keeps the ranking
    # The thresholds keep the images whose tempered top-1 probability reaches them.
    assert [row["num_kept"] for row in calibrated["selective"]] == [
        int((tempered.max(axis=1) >= row["threshold"] - 1e-9).sum()) for row in calibrated["selective"]]
    # Stored: config.json gains the temperature, every other file is untouched.
    after = {str(path.relative_to(model)): path.read_bytes() for path in model.rglob("*") if path.is_file()}
    assert sorted(after) == sorted(before)
    assert json.loads(after["config.json"]) == {**json.loads(before["config.json"]), "score_temperature": temperature}
    assert all(after[name] == before[name] for name in before if name != "config.json")
    # Evaluated again, the stored model's raw metrics are the calibrated ones.
    again, _, _ = run_evaluation(tmp_path, eval_emoset_dir, name="again", model=str(model))
    assert again["score_temperature"] == temperature and "calibrated" not in again
    for key in ("accuracy", "ece", "brier", "nll", "auroc_macro"):
        assert again[key] == pytest.approx(calibrated[key], abs=1e-5)


def test_calibrate_on_sums_mapped_probabilities_at_the_temperature(run_evaluation, eval_emoset_dir, tmp_path):
    metrics, lines, _ = run_evaluation(tmp_path, eval_emoset_dir, label_map="binary", calibrate_on="val")
    temperature = metrics["calibrated"]["temperature"]
    tempered = softmax_rows([list(line["log_likelihoods"].values()) for line in lines], temperature)
    positive = tempered[:, :4].sum(1)  # EmoSet's first four emotions are the positive ones
    references = [metrics["labels"].index(line["label"]) for line in lines]
    picked = np.where(np.array(references) == 0, positive, 1 - positive)
    assert metrics["calibrated"]["nll"] == pytest.approx(-np.mean(np.log(picked)), abs=1e-6)
    assert metrics["calibrated"]["accuracy"] == pytest.approx(np.mean((positive < 0.5) == np.array(references)))


@pytest.mark.parametrize("max_images", [1, None], ids=["one-image", "eight-images"])
def test_save_temperature_refuses_a_small_or_single_class_split_before_evaluating(run_evaluation, eval_emoset_dir,
                                                                                   tiny_dir, tmp_path, max_images):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    config = (model / "config.json").read_bytes()
    with pytest.raises(ValueError, match=r"--calibrate_on 'val'.*(1 image|8 images).*--save_unreliable_temperature"):
        run_evaluation(tmp_path, eval_emoset_dir, model=str(model), calibrate_on="val", save_temperature=True,
                       max_images=max_images)
    assert not (tmp_path / "out").exists()  # refused before the evaluation ran
    assert (model / "config.json").read_bytes() == config


def test_save_temperature_refuses_a_fit_at_the_edge_and_keeps_the_report(run_evaluation, eval_emoset_dir, tiny_dir,
                                                                         tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    (model / "README.md").write_text("# Tiny\n")
    config = (model / "config.json").read_bytes()
    # 56 images of 8 classes, but the random model's answers are worse than uniform: T runs to the upper end.
    with pytest.raises(ValueError, match=r"not stored.*upper end of the search range.*--save_unreliable_temperature"):
        run_evaluation(tmp_path, eval_emoset_dir, model=str(model), calibrate_on="train", save_temperature=True,
                       update_card=str(model))
    assert (model / "config.json").read_bytes() == config and (model / "README.md").read_text() == "# Tiny\n"
    calibrated = json.loads((tmp_path / "out" / "metrics.json").read_text())["calibrated"]
    assert calibrated["temperature"] == 100.0 and calibrated["num_images"] == 56
    assert len(calibrated["warnings"]) == 1 and "upper end" in calibrated["warnings"][0]


def test_an_unreliable_fit_is_reported_with_its_warnings(run_evaluation, eval_emoset_dir, tmp_path):
    metrics, _, _ = run_evaluation(tmp_path, eval_emoset_dir, calibrate_on="val", max_images=1)
    warnings = metrics["calibrated"]["warnings"]
    assert "1 image" in warnings[0] and "one class" in warnings[1]
