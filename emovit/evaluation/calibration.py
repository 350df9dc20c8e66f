"""Temperature scaling for `score` evaluation: fit one temperature on a split's negative log-likelihood, apply it,
and store it in a saved model's config.json (`score_temperature`, which `classify(method="score")` applies).

The probabilities follow the same rule as `classify` followed by the label map: softmax over the model labels of
log-likelihood / T, then each dataset label gets the summed probability of the model labels mapping to it,
renormalised over the labels the map keeps (`labels.map_scores`). The NLL is the metric module's own function
(`negative_log_likelihood` of metrics/emotion_classification, loaded by `.metric`), so the fitted temperature
minimises exactly the `nll` metrics.json reports.
"""

import json
import logging
import math
from pathlib import Path

import numpy as np

from emovit_utils.files import atomic_write_text
from modeling_emovit.configuration_emovit import SCORE_TEMPERATURE_RANGE, validate_temperature

from .metric import metric_functions


logger = logging.getLogger(__name__)

# The search range of the temperature is the range a model's config accepts: wide enough for any sensible model
# (1/100 sharpens, 100 flattens to nearly uniform), bounded so a split the model gets entirely right or wrong gives
# an edge value rather than 0 or infinity.
MIN_TEMPERATURE, MAX_TEMPERATURE = SCORE_TEMPERATURE_RANGE
# Fewer images than this and one temperature is fitted to a handful of answers: one image more or less moves it by
# orders of magnitude (one image right gives the lower end, one wrong the upper), so it describes those images, not
# the model. A rule of thumb for one fitted parameter; the split should also hold every class.
MIN_CALIBRATION_IMAGES = 30
# A fit this close to an end of the range (in log T) is at that end: where the NLL flattens out there, the search
# stops a hair inside the range rather than on its end.
EDGE_TOLERANCE = 1e-3


def tempered_probabilities(log_likelihoods: np.ndarray, temperature: float, target_of: list[int | None],
                           num_targets: int) -> np.ndarray:
    """Dataset-label probabilities at `temperature`.

    log_likelihoods: `(num_images, num_model_labels)`, each model label's answer log-likelihood; target_of: per model
    label, its dataset label's index or None (dropped). Returns `(num_images, num_targets)`, rows summing to 1 (a
    row whose kept labels all underflow stays 0, as `map_scores` leaves it).
    """
    scaled = np.asarray(log_likelihoods, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    probabilities = np.exp(scaled)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    to_target = np.zeros((len(target_of), num_targets))
    for k, target in enumerate(target_of):
        if target is not None:
            to_target[k, target] = 1.0
    mapped = probabilities @ to_target
    total = mapped.sum(axis=1, keepdims=True)
    return mapped / np.where(total > 0, total, 1.0)


def fit_temperature(log_likelihoods: np.ndarray, references: list[int], target_of: list[int | None],
                    num_targets: int) -> float:
    """The temperature in [MIN_TEMPERATURE, MAX_TEMPERATURE] that minimises the NLL of `references` (indices into
    the dataset labels) under `tempered_probabilities`.

    A grid of 81 points evenly spaced in log T picks the best neighbourhood (the NLL need not be convex in T once
    a label map sums probabilities), then a golden-section search narrows it to 1e-6 in log T. Deterministic.
    """
    if len(references) == 0:
        raise ValueError("No images to fit a temperature on.")
    negative_log_likelihood = metric_functions().negative_log_likelihood

    def loss(log_t: float) -> float:
        return negative_log_likelihood(
            tempered_probabilities(log_likelihoods, math.exp(log_t), target_of, num_targets), references)

    grid = np.linspace(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE), 81)
    losses = [loss(x) for x in grid]
    best = int(np.argmin(losses))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    while high - low > 1e-6:
        if loss_a <= loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    fitted = (low + high) / 2
    # The grid point wins if the narrowed search did not improve on it (a flat NLL, e.g. at the range's edge).
    temperature = min(max(math.exp(fitted if loss(fitted) <= losses[best] else grid[best]), MIN_TEMPERATURE),
                      MAX_TEMPERATURE)
    return float(temperature)


def calibration_problems(references: list[int], temperature: float | None = None) -> list[str]:
    """Why a temperature fitted on the images `references` (their dataset-label indices) does not describe the
    model, one sentence each; empty when nothing is wrong. Checked: fewer than MIN_CALIBRATION_IMAGES images, a
    single class (the fit then only learns how sure the model is of that class) and, given the fitted
    `temperature`, a fit at either end of the search range (the NLL kept falling: no minimum was found)."""
    problems = []
    count = len(references)
    if count < MIN_CALIBRATION_IMAGES:
        problems.append(f"it is fitted on {count} image{'s' if count != 1 else ''} (at least "
                        f"{MIN_CALIBRATION_IMAGES} needed for a temperature that holds beyond them)")
    if len(set(references)) == 1:
        problems.append("every image of the split has the same label (one class), so the fit only measures how "
                        "sure the model is of that class")
    if temperature is not None and math.log(temperature / MIN_TEMPERATURE) < EDGE_TOLERANCE:
        problems.append(f"the fit is {MIN_TEMPERATURE:g}, the lower end of the search range: every image's top "
                        "label is right, so sharper always looked better and no minimum was found")
    elif temperature is not None and math.log(MAX_TEMPERATURE / temperature) < EDGE_TOLERANCE:
        problems.append(f"the fit is {MAX_TEMPERATURE:g}, at the upper end of the search range: the probabilities "
                        "are worse than uniform on the split, so the fit flattens them completely")
    return problems


def save_temperature(model_dir: str | Path, temperature: float) -> Path:
    """Sets `score_temperature` in `model_dir/config.json`, rewriting only that file, whole or not at all."""
    temperature = validate_temperature(temperature)
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ValueError(
            f"--save_temperature writes the temperature into the model folder's config.json, but {str(path)!r} does "
            "not exist. Pass a local model folder as --model (a Hub id cannot be written to; download it with "
            "`hf download` first)."
        )
    try:
        config = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e}); it cannot take the temperature.") from e
    config["score_temperature"] = temperature
    # transformers' own layout of config.json: sorted keys, two-space indent, final newline.
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    logger.info("stored score_temperature %.4f in %s", temperature, path)
    return path
