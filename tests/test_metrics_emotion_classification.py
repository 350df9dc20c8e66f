"""The metric module shipped in metrics/emotion_classification, loaded by path through the `evaluate` library."""

from pathlib import Path

import evaluate
import pytest

from emovit.evaluation.run import METRIC_PATH


REPO = Path(__file__).resolve().parents[1]


def test_the_run_loads_the_shipped_metric_module():
    assert Path(METRIC_PATH) == REPO / "metrics" / "emotion_classification"
    assert (Path(METRIC_PATH) / "emotion_classification.py").is_file()


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
