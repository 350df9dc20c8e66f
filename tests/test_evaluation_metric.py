"""emovit.evaluation.metric: the run loads the shipped metric module by path, and the library computes with that
file's functions, which give exactly what the metric reports."""

from pathlib import Path

import evaluate
import numpy as np

from emovit.evaluation import run
from emovit.evaluation.metric import METRIC_PATH, metric_functions


REPO = Path(__file__).resolve().parents[1]


def test_the_run_loads_the_shipped_metric_module():
    assert Path(METRIC_PATH) == REPO / "metrics" / "emotion_classification"
    assert (Path(METRIC_PATH) / "emotion_classification.py").is_file()
    assert run.METRIC_PATH == METRIC_PATH


def test_the_metric_files_functions_give_what_the_metric_reports():
    functions = metric_functions()
    assert metric_functions() is functions  # loaded once
    assert Path(functions.__file__) == Path(METRIC_PATH) / "emotion_classification.py"
    metric = evaluate.load(METRIC_PATH, keep_in_memory=True)
    probabilities = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1], [0.0, 0.0, 1.0]])
    references = [0, 0, 1, 1]
    reported = metric.compute(predictions=probabilities.argmax(axis=1).tolist(), references=references,
                              num_labels=3, probabilities=probabilities.tolist())
    # Bit for bit: the same code on the same numbers.
    assert functions.negative_log_likelihood(probabilities, references) == reported["nll"]
    assert functions.calibration_metrics(probabilities, np.array(references), 3) == {
        key: reported[key] for key in ("ece", "brier", "nll", "auroc_macro", "per_class_auroc", "reliability")}
