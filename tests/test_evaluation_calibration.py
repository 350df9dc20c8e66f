"""emovit.evaluation.calibration: the tempered (and label-mapped) probabilities, the temperature fit, and storing
the temperature in a model folder's config.json."""

import json
import math
import os
from pathlib import Path

import evaluate
import numpy as np
import pytest
import torch

from emovit.evaluation.calibration import fit_temperature, save_temperature, tempered_probabilities
from emovit.evaluation.labels import map_scores
from emovit.evaluation.metric import metric_functions


REPO = Path(__file__).resolve().parents[1]
IDENTITY = list(range(8))
# What the fit minimises: the metric module's own NLL.
negative_log_likelihood = metric_functions().negative_log_likelihood


def sample(temperature: float, count: int = 4000, seed: int = 0):
    """Log-likelihoods and labels drawn from softmax(log-likelihoods / temperature): the temperature to recover."""
    rng = np.random.default_rng(seed)
    log_likelihoods = rng.normal(0.0, 3.0, size=(count, 8))
    probabilities = tempered_probabilities(log_likelihoods, temperature, IDENTITY, 8)
    # Inverse-CDF sampling, one uniform draw per row.
    labels = (probabilities.cumsum(axis=1) < rng.random((count, 1))).sum(axis=1).clip(max=7)
    return log_likelihoods, labels.tolist()


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_recovers_a_known_temperature(true_temperature):
    log_likelihoods, labels = sample(true_temperature)
    fitted = fit_temperature(log_likelihoods, labels, IDENTITY, 8)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    assert fit_temperature(log_likelihoods, labels, IDENTITY, 8) == fitted  # deterministic
    nll = [negative_log_likelihood(tempered_probabilities(log_likelihoods, t, IDENTITY, 8), labels)
           for t in (fitted / 1.02, fitted, fitted * 1.02)]
    assert nll[1] < nll[0] and nll[1] < nll[2]  # a minimum, not just near the truth


def test_fit_stays_in_range_when_every_answer_is_right():
    log_likelihoods = np.array([[0.0, -1.0], [-2.0, 0.0]])
    # Sharper is always better here; the search stops at its lower bound instead of running to 0.
    assert fit_temperature(log_likelihoods, [0, 1], [0, 1], 2) == pytest.approx(0.01)


def test_tempered_probabilities_follow_classify_and_the_label_map():
    rng = np.random.default_rng(1)
    log_likelihoods = rng.normal(0.0, 4.0, size=(5, 8))
    binary = [0, 0, 0, 0, 1, 1, 1, 1]
    drop_one = [0, 0, 1, 0, 2, None, 2, 3]  # several labels per target, one dropped (unbiasedemo's shape)
    for temperature in (1.0, 2.0, 0.3):
        softmax = torch.softmax(torch.tensor(log_likelihoods) / temperature, dim=-1).tolist()
        for target_of, count in ((IDENTITY, 8), (binary, 2), (drop_one, 4)):
            got = tempered_probabilities(log_likelihoods, temperature, target_of, count)
            assert got.shape == (5, count)
            expected = [map_scores(row, target_of, count) for row in softmax]
            assert got == pytest.approx(np.array(expected), abs=1e-12)


def test_the_fitted_nll_is_the_reported_nll():
    metric = evaluate.load(str(REPO / "metrics" / "emotion_classification"), keep_in_memory=True)
    probabilities = np.array([[0.7, 0.3], [1.0, 0.0], [0.2, 0.8]])
    reported = metric.compute(predictions=[0, 0, 1], references=[0, 1, 1], num_labels=2,
                              probabilities=probabilities.tolist())["nll"]
    assert negative_log_likelihood(probabilities, [0, 1, 1]) == pytest.approx(reported)
    assert reported == pytest.approx((-math.log(0.7) - math.log(1e-12) - math.log(0.8)) / 3)


def test_save_temperature_rewrites_only_config_json(tmp_path):
    config = {"model_type": "emovit", "emotion_labels": ["a", "b"], "text_config": {"vocab_size": 5}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    save_temperature(tmp_path, 1.75)
    assert json.loads((tmp_path / "config.json").read_text()) == {**config, "score_temperature": 1.75}
    assert (tmp_path / "model.safetensors").read_bytes() == b"weights"
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]  # no temporary file left
    with pytest.raises(ValueError, match=r"score_temperature.*got 0"):
        save_temperature(tmp_path, 0)
    assert json.loads((tmp_path / "config.json").read_text())["score_temperature"] == 1.75
    with pytest.raises(ValueError, match=r"'Salesforce/instructblip-vicuna-7b/config.json' does not exist.*Hub id"):
        save_temperature("Salesforce/instructblip-vicuna-7b", 2.0)


def test_calibration_problems_name_sample_size_single_class_and_the_edge():
    from emovit.evaluation.calibration import (
        MAX_TEMPERATURE,
        MIN_CALIBRATION_IMAGES,
        MIN_TEMPERATURE,
        calibration_problems,
    )

    log_likelihoods, labels = sample(2.5, count=MIN_CALIBRATION_IMAGES)
    fitted = fit_temperature(log_likelihoods, labels, IDENTITY, 8)
    assert MIN_TEMPERATURE < fitted < MAX_TEMPERATURE and calibration_problems(labels, fitted) == []
    # One image: too few, one class, and (its answer right) a fit at the lower edge.
    problems = calibration_problems([3], fit_temperature(np.array([[0.0, 1.0, 2.0, 5.0]]), [3], [0, 1, 2, 3], 4))
    assert len(problems) == 3
    assert f"1 image (at least {MIN_CALIBRATION_IMAGES} needed" in problems[0]
    assert "one class" in problems[1]
    assert f"{MIN_TEMPERATURE:g}, the lower end of the search range" in problems[2]
    assert "at the upper end" in calibration_problems(labels, MAX_TEMPERATURE)[0]
    # Without a temperature (before the fit), only the split is checked.
    assert calibration_problems([0] * 40) == [calibration_problems([0] * 40, 1.0)[0]]
