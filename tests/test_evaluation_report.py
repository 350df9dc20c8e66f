"""emovit.evaluation.report: predictions.jsonl lines, the confusion-matrix figure, whole-file writes."""

import json
import os

import pytest

from emovit.evaluation.report import (
    plot_confusion_matrix,
    plot_reliability,
    plot_risk_coverage,
    prediction_line,
    write_report,
)


PNG = b"\x89PNG\r\n\x1a\n"


def test_prediction_line_names_labels_and_keeps_the_methods_fields():
    ids, references, targets = ["a", "b"], [1, 0], ["positive", "negative"]
    row = {"index": 0, "prompt_variant": 2, "prediction": 1, "scores": {"positive": 0.2, "negative": 0.8}}
    line = prediction_line(row, ids, references, targets)
    assert line == {"id": "a", "label": "negative", "prediction": "negative", "correct": True, "prompt_variant": 2,
                    "scores": {"positive": 0.2, "negative": 0.8}}
    assert list(line)[:4] == ["id", "label", "prediction", "correct"]
    invalid = prediction_line({"index": 1, "prompt_variant": 0, "prediction": None, "model_prediction": None,
                               "text": "no idea"}, ids, references, targets)
    assert invalid["prediction"] is None and invalid["correct"] is False and invalid["text"] == "no idea"
    assert row["index"] == 0  # the row is left as it was


def test_confusion_matrix_adds_an_invalid_column_only_when_needed():
    figure = plot_confusion_matrix([[2, 1], [0, 3]], [0, 0], ["x", "y"], "t")
    labels = [tick.get_text() for tick in figure.axes[0].get_xticklabels()]
    assert labels == ["x", "y"]
    figure = plot_confusion_matrix([[2, 1], [0, 3]], [1, 0], ["x", "y"], "t")
    assert [tick.get_text() for tick in figure.axes[0].get_xticklabels()] == ["x", "y", "(invalid)"]
    assert figure.axes[0].get_title() == "t"
    assert sorted(text.get_text() for text in figure.axes[0].texts) == ["0", "0", "1", "1", "2", "3"]


def test_write_report_writes_three_whole_files(tmp_path):
    metrics = {"accuracy": 0.5, "confusion_matrix": [[1, 1], [0, 0]], "invalid_per_class": [0, 1],
               "labels": ["x", "y"]}
    lines = [{"id": "a", "prediction": "x"}, {"id": "b", "prediction": None}]
    write_report(tmp_path / "out", metrics, lines, "a title")
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["confusion_matrix.png", "metrics.json", "predictions.jsonl"]  # no temp files
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()] == lines
    assert (out / "predictions.jsonl").read_text().endswith("}\n")
    assert (out / "confusion_matrix.png").read_bytes()[:8] == PNG


def test_a_failed_write_leaves_no_half_file(tmp_path):
    out = tmp_path / "out"
    write_report(out, {"confusion_matrix": [[1]], "invalid_per_class": [0], "labels": ["x"]}, [], "first")
    before = (out / "metrics.json").read_text()
    with pytest.raises(TypeError):
        write_report(out, {"confusion_matrix": [[1]], "invalid_per_class": [0], "labels": ["x"], "bad": {1j}}, [],
                     "second")
    assert (out / "metrics.json").read_text() == before
    assert sorted(os.listdir(out)) == ["confusion_matrix.png", "metrics.json", "predictions.jsonl"]


def bins(filled: dict) -> list[dict]:
    """15 reliability bins, `filled` mapping a bin index to (count, accuracy, confidence)."""
    return [{"lower": b / 15, "upper": (b + 1) / 15, "count": filled.get(b, (0,))[0],
             "accuracy": filled[b][1] if b in filled else None, "confidence": filled[b][2] if b in filled else None}
            for b in range(15)]


def test_reliability_diagram_is_written_for_runs_with_calibration_bins(tmp_path):
    raw = bins({7: (1, 0.0, 0.5), 14: (3, 1.0, 0.98)})
    calibrated = {"temperature": 1.5, "ece": 0.1, "reliability": bins({6: (4, 0.75, 0.45)})}
    figure = plot_reliability(raw, 0.2, "t", calibrated)
    axes = figure.axes[0]
    assert axes.get_title() == "t" and axes.get_xlim() == (0, 1)
    assert [text.get_text() for text in axes.get_legend().get_texts()] == [
        "perfect calibration", "raw: ECE 0.200", "T = 1.5: ECE 0.100"]
    assert sorted(bar.get_height() for bar in axes.patches) == [0.0, 0.75, 1.0]  # one bar per filled bin
    assert sorted(round(bar.get_height(), 4) for bar in figure.axes[1].patches) == [0.25, 0.75, 1.0]  # shares
    metrics = {"confusion_matrix": [[1]], "invalid_per_class": [0], "labels": ["x"], "ece": 0.2, "reliability": raw}
    write_report(tmp_path / "out", metrics, [], "a title")
    assert sorted(os.listdir(tmp_path / "out")) == ["confusion_matrix.png", "metrics.json", "predictions.jsonl",
                                                    "reliability_diagram.png"]
    assert (tmp_path / "out" / "reliability_diagram.png").read_bytes()[:8] == PNG


def test_risk_coverage_curve_is_plotted_and_written_beside_metrics_json(tmp_path):
    raw = {"coverage": [0.25, 0.5, 0.75, 1.0], "risk": [0.0, 0.0, 1 / 3, 0.5]}
    calibrated = {"temperature": 2.0, "aurc": 0.25, "risk_coverage": {"coverage": [0.5, 1.0], "risk": [0.0, 0.5]}}
    figure = plot_risk_coverage(raw, 5 / 24, "t", calibrated)
    axes = figure.axes[0]
    assert axes.get_title() == "t" and axes.get_xlim() == (0, 1)
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["raw: AURC 0.208", "T = 2: AURC 0.250"]
    assert list(axes.lines[0].get_ydata()) == raw["risk"] and list(axes.lines[1].get_xdata()) == [0.5, 1.0]
    metrics = {"confusion_matrix": [[1]], "invalid_per_class": [0], "labels": ["x"], "aurc": 5 / 24,
               "risk_coverage": raw}
    write_report(tmp_path / "out", metrics, [], "a title")
    assert sorted(os.listdir(tmp_path / "out")) == ["confusion_matrix.png", "metrics.json", "predictions.jsonl",
                                                    "risk_coverage.png"]
    assert (tmp_path / "out" / "risk_coverage.png").read_bytes()[:8] == PNG
