"""The metric module shipped in metrics/emotion_classification, loaded by path through the `evaluate` library."""

import math
from pathlib import Path

import evaluate
import numpy as np
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
    assert set(result["definitions"]) == {"ece", "brier", "nll", "auroc_macro", "per_class_auroc", "reliability",
                                         "selective", "aurc", "risk_coverage"}
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


def test_weighted_f1_weighs_each_class_by_its_references():
    metric = evaluate.load(str(REPO / "metrics" / "emotion_classification"), keep_in_memory=True)
    result = metric.compute(predictions=[0, 1, -1, 1, 2], references=[0, 1, 1, 0, 2], label_names=["a", "b", "c"])
    # F1 a = 2/3 (2 references), b = 1/2 (2), c = 1 (1): (2 * 2/3 + 2 * 1/2 + 1) / 5 = 2/3.
    assert result["weighted_f1"] == pytest.approx(2 / 3)
    # A class only predicted, never a reference (b here, F1 0), weighs nothing in the weighted mean but counts in the
    # macro one: a = 2/3 (P 1, R 1/2) with 2 references, c = 1 with 1.
    result = metric.compute(predictions=[0, 1, 2], references=[0, 0, 2], num_labels=3)
    assert result["weighted_f1"] == pytest.approx((2 * 2 / 3 + 1) / 3)
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0 + 1) / 3)


def test_selective_prediction_matches_hand_computed_values():
    metric = evaluate.load(str(REPO / "metrics" / "emotion_classification"), keep_in_memory=True)
    # PROBABILITIES' top-1 confidences 0.7 (right), 0.6 (wrong), 0.5 (wrong), 1.0 (right).
    result = metric.compute(predictions=[0, 1, 0, 2], references=REFERENCES, label_names=["a", "b", "c"],
                            probabilities=PROBABILITIES)
    table = {row["threshold"]: row for row in result["selective"]}
    assert list(table) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    # Up to 0.5 every image is kept (0.5 itself reaches 0.5): the whole run's numbers.
    for threshold in (0.1, 0.2, 0.3, 0.4, 0.5):
        assert table[threshold]["coverage"] == 1.0 and table[threshold]["num_kept"] == 4
        assert table[threshold]["accuracy"] == result["accuracy"] == 0.5
        assert table[threshold]["macro_f1"] == pytest.approx(result["macro_f1"])
    # >= 0.6 keeps 1.0 (c right), 0.7 (a right), 0.6 (b for an a): a F1 2/3 (2 refs), b 0 (0 refs), c 1 (1 ref).
    assert table[0.6]["coverage"] == 0.75 and table[0.6]["accuracy"] == pytest.approx(2 / 3)
    assert table[0.6]["macro_f1"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert table[0.6]["weighted_f1"] == pytest.approx((2 * 2 / 3 + 1) / 3)
    assert (table[0.7]["coverage"], table[0.7]["accuracy"], table[0.7]["macro_f1"]) == (0.5, 1.0, 1.0)
    assert (table[0.9]["coverage"], table[0.9]["num_kept"], table[0.9]["accuracy"]) == (0.25, 1, 1.0)
    # Ranked 1.0 (right), 0.7 (right), 0.6 (wrong), 0.5 (wrong): risks 0/1, 0/2, 1/3, 2/4; AURC = (1/3 + 1/2) / 4.
    assert result["aurc"] == pytest.approx(5 / 24)
    assert result["risk_coverage"]["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert result["risk_coverage"]["risk"] == pytest.approx([0, 0, 1 / 3, 1 / 2])
    assert {"selective", "aurc", "risk_coverage", "ece"} <= set(result["definitions"])
    assert "aurc" not in metric.compute(predictions=[0], references=[0], num_labels=2)  # only with probabilities


def test_a_threshold_that_keeps_nothing_gives_no_accuracy_and_ties_share_their_errors():
    metric = evaluate.load(str(REPO / "metrics" / "emotion_classification"), keep_in_memory=True)
    # Four images at confidence 0.5, the 2nd and 3rd right: above 0.5 nothing is kept, which has no accuracy (not 0).
    probabilities = [[0.5, 0.5]] * 4
    result = metric.compute(predictions=[0, 0, 0, 0], references=[1, 0, 0, 1], num_labels=2,
                            probabilities=probabilities)
    table = {row["threshold"]: row for row in result["selective"]}
    assert table[0.5]["coverage"] == 1.0 and table[0.5]["accuracy"] == 0.5
    assert table[0.6] == {"threshold": 0.6, "coverage": 0.0, "num_kept": 0, "accuracy": None, "macro_f1": None,
                          "weighted_f1": None}
    # One tie: every k holds half an error per image, risk 1/2 at every k, whatever the order (in dataset order,
    # wrong first, the risks would be 1, 1/2, 1/3, 1/2).
    assert result["risk_coverage"]["risk"] == [0.5] * 4 and result["aurc"] == 0.5
    swapped = metric.compute(predictions=[0, 0, 0, 0], references=[0, 1, 1, 0], num_labels=2,
                             probabilities=probabilities)
    assert swapped["aurc"] == result["aurc"]


def test_selective_risks_share_a_ties_errors_and_thresholds_allow_float_rounding():
    from emovit.evaluation.metric import metric_functions

    functions = metric_functions()
    # Confidences 0.9 (right), 0.6 (wrong), 0.6 (right), 0.3 (wrong): the tie holds 1/2 error per place, so the
    # errors among the top k are 0, 1/2, 1, 2 and the risks 0, 1/4, 1/3, 1/2; AURC = (1/4 + 1/3 + 1/2) / 4 = 13/48.
    confidence = np.array([0.6, 0.9, 0.3, 0.6])
    wrong = np.array([True, False, True, False])
    assert functions.selective_risks(confidence, wrong) == pytest.approx([0, 1 / 4, 1 / 3, 1 / 2])
    result = functions.selective_metrics(confidence, np.array([1, 0, 1, 0]), np.array([0, 0, 0, 0]), 2)
    assert result["aurc"] == pytest.approx(13 / 48)
    # 0.7 - 0.4 is 0.29999999999999993 in floats: it reaches the threshold 0.3.
    rounded = functions.selective_metrics(np.array([0.7 - 0.4]), np.array([0]), np.array([0]), 2)["selective"]
    assert {row["threshold"]: row["num_kept"] for row in rounded}[0.3] == 1


def test_a_long_risk_coverage_curve_is_kept_as_100_points_and_aurc_uses_every_image():
    from emovit.evaluation.metric import metric_functions

    functions = metric_functions()
    rng = np.random.default_rng(0)
    confidence, wrong = rng.random(1000), rng.random(1000) < 0.3
    result = functions.selective_metrics(confidence, np.where(wrong, 1, 0), np.zeros(1000, dtype=np.int64), 2)
    curve = result["risk_coverage"]
    assert len(curve["coverage"]) == len(curve["risk"]) == 100
    assert curve["coverage"][0] == 1 / 1000 and curve["coverage"][-1] == 1.0
    assert curve["risk"][-1] == pytest.approx(wrong.mean())
    # Distinct confidences: the plain definition, one image at a time.
    ranked = wrong[np.argsort(-confidence)]
    assert result["aurc"] == pytest.approx(np.mean([ranked[:k].mean() for k in range(1, 1001)]))
