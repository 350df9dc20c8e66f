"""emovit.evaluation.card: an evaluation run's metrics as the Hub's model-index results."""

import pytest

from emovit.evaluation.card import eval_results_of


def run_metrics(method="score", dataset="/data/EmoSet-118K", label_map=None, calibrated=False, **values):
    metrics = {"accuracy": 0.61234, "macro_f1": 0.5, "invalid_rate": 0.0, "ece": 0.1, "brier": 0.6, "nll": 1.2,
               "auroc_macro": 0.8, **values,
               "arguments": {"dataset": dataset, "split": "test", "method": method, "label_map": label_map,
                             "max_images": None}}
    if calibrated:
        metrics["calibrated"] = {"temperature": 1.7, "split": "val", "accuracy": 0.61234, "macro_f1": 0.5,
                                 "ece": 0.05, "brier": 0.55, "nll": 1.1, "auroc_macro": 0.8}
    return metrics


def test_score_run_gives_accuracy_f1_and_calibration_on_its_dataset_and_split():
    results = eval_results_of(run_metrics())
    assert [(r.metric_type, r.metric_value, r.metric_config) for r in results] == [
        ("accuracy", 0.6123, "score"), ("f1", 0.5, "score"), ("ece", 0.1, "score"), ("brier_score", 0.6, "score"),
        ("nll", 1.2, "score"), ("roc_auc", 0.8, "score")]
    first = results[0]
    assert (first.task_type, first.dataset_type, first.dataset_name, first.dataset_split, first.dataset_config) == (
        "image-classification", "EmoSet-118K", "EmoSet-118K", "test", None)
    assert results[1].metric_args == {"average": "macro"} and results[1].metric_name == "Macro F1"


def test_generate_calibrated_label_mapped_and_undefined_results():
    assert eval_results_of(run_metrics(ece=9.5584e-06))[2].metric_value == 9.558e-06  # 4 significant digits
    generate = eval_results_of(run_metrics(method="generate", invalid_rate=0.25))
    assert [(r.metric_type, r.metric_value) for r in generate] == [("accuracy", 0.6123), ("f1", 0.5),
                                                                   ("invalid_rate", 0.25)]
    calibrated = eval_results_of(run_metrics(calibrated=True, label_map="binary", auroc_macro=None))
    assert [r.metric_type for r in calibrated if r.metric_config == "score"] == ["accuracy", "f1", "ece",
                                                                                 "brier_score", "nll"]
    assert [(r.metric_type, r.metric_value) for r in calibrated if r.metric_config == "score-calibrated"] == [
        ("accuracy", 0.6123), ("f1", 0.5), ("ece", 0.05), ("brier_score", 0.55), ("nll", 1.1), ("roc_auc", 0.8)]
    assert {(r.dataset_config, r.dataset_name) for r in calibrated} == {("binary", "EmoSet-118K (binary)")}
    hub = eval_results_of(run_metrics(dataset="someone/emotion-data"))
    assert hub[0].dataset_type == "someone/emotion-data"


def test_a_real_score_run_converts(eval_score_run, eval_emoset_dir):
    metrics, _, _ = eval_score_run
    results = {r.metric_type: r for r in eval_results_of(metrics)}
    assert results["accuracy"].metric_value == pytest.approx(metrics["accuracy"], abs=5e-5)
    assert results["ece"].metric_value == pytest.approx(metrics["ece"], rel=5e-4)
    assert results["accuracy"].dataset_type == eval_emoset_dir.name
