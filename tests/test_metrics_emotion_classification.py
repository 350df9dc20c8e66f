"""The metric module shipped in metrics/emotion_classification, loaded by path through the `evaluate` library."""

import math
from pathlib import Path

import evaluate
import pytest


REPO = Path(__file__).resolve().parents[1]


def test_metric_module_counts_invalid_answers_as_wrong_and_not_as_a_class():
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


# Four examples, three classes, worked by hand: top-1 confidences 0.7 (right), 0.6 (wrong), 0.5 (wrong), 1.0 (right)
# fall in four different bins of width 1/15.
PROBABILITIES = [[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1], [0.0, 0.0, 1.0]]
REFERENCES = [0, 0, 1, 2]


def test_calibration_metrics_match_hand_computed_values():
    metric = evaluate.load(str(REPO / "metrics" / "emotion_classification"), keep_in_memory=True)
    result = metric.compute(predictions=[0, 1, 0, 2], references=REFERENCES, label_names=["a", "b", "c"],
                            probabilities=PROBABILITIES)
    assert result["accuracy"] == 0.5  # the classification metrics are unchanged by the probabilities
    assert result["ece"] == pytest.approx((0.3 + 0.6 + 0.5 + 0.0) / 4)
    # Brier: (0.09 + 0.04 + 0.01) + (0.49 + 0.36 + 0.01) + (0.25 + 0.36 + 0.01) + 0, over 4 images.
    assert result["brier"] == pytest.approx(1.62 / 4)
    assert result["nll"] == pytest.approx(-(math.log(0.7) + math.log(0.3) + math.log(0.4) + math.log(1.0)) / 4)
    # a: positives 0.7, 0.3 vs negatives 0.5, 0.0 -> 3 of 4 pairs; b: 0.4 vs 0.2, 0.6, 0.0 -> 2 of 3; c: 1 vs 0.1s.
    assert result["per_class_auroc"] == pytest.approx({"a": 3 / 4, "b": 2 / 3, "c": 1.0})
    assert result["auroc_macro"] == pytest.approx((3 / 4 + 2 / 3 + 1) / 3)
    bins = result["reliability"]
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 4
    filled = [b for b in bins if b["count"]]
    assert [(b["accuracy"], b["confidence"]) for b in filled] == [(0.0, 0.5), (0.0, 0.6), (1.0, 0.7), (1.0, 1.0)]
    assert filled[-1]["upper"] == 1.0 and all(b["accuracy"] is None for b in bins if not b["count"])
    assert set(result["definitions"]) == {"ece", "brier", "nll", "auroc_macro", "per_class_auroc", "reliability"}
    assert "ece" not in metric.compute(predictions=[0], references=[0], num_labels=2)  # only with probabilities


def test_auroc_counts_ties_as_half_and_is_undefined_without_positives_or_negatives():
    metric = evaluate.load(str(REPO / "metrics" / "emotion_classification"), keep_in_memory=True)
    # Class d never occurs among the references: its AUROC is undefined and left out of the macro mean.
    result = metric.compute(predictions=[0, 0, 1], references=[0, 1, 1], label_names=["a", "b", "c", "d"],
                            probabilities=[[0.5, 0.3, 0.1, 0.1], [0.5, 0.3, 0.1, 0.1], [0.2, 0.6, 0.1, 0.1]])
    # a: positive 0.5 vs negatives 0.5 (tie, 1/2) and 0.2 (1) -> 3/4; b: positives 0.3, 0.6 vs 0.3 -> (1/2 + 1) / 2;
    # c: positive none.
    assert result["per_class_auroc"] == {"a": 0.75, "b": 0.75, "c": None, "d": None}
    assert result["auroc_macro"] == 0.75
    single = metric.compute(predictions=[0, 0], references=[0, 0], num_labels=2, probabilities=[[1, 0], [1, 0]])
    assert single["per_class_auroc"] == [None, None] and single["auroc_macro"] is None  # one class holds them all


def test_nll_clamps_a_zero_probability_and_bad_probabilities_are_named():
    metric = evaluate.load(str(REPO / "metrics" / "emotion_classification"), keep_in_memory=True)
    result = metric.compute(predictions=[0], references=[1], num_labels=2, probabilities=[[1.0, 0.0]])
    assert result["nll"] == pytest.approx(-math.log(1e-12)) and result["brier"] == 2.0 and result["ece"] == 1.0
    perfect = metric.compute(predictions=[0], references=[0], num_labels=2, probabilities=[[1.0, 0.0]])
    assert str(perfect["nll"]) == "0.0" and perfect["ece"] == perfect["brier"] == 0.0
    with pytest.raises(ValueError, match=r"row 1 is \[0.5, 0.6\].*summing to 1"):
        metric.compute(predictions=[0, 0], references=[0, 1], num_labels=2, probabilities=[[1, 0], [0.5, 0.6]])
    with pytest.raises(ValueError, match=r"shape \(1, 3\).*1 x 2"):
        metric.compute(predictions=[0], references=[0], num_labels=2, probabilities=[[1, 0, 0]])
