"""Emotion classification metric for the `evaluate` library: accuracy, macro-F1, per-class accuracy, confusion
matrix and the rate of invalid answers, from integer class indices; given the per-class probabilities as well, the
calibration metrics ECE, Brier score, NLL and one-vs-rest AUROC, the reliability diagram's bins, and selective
prediction: accuracy, F1 and coverage at confidence thresholds, and the risk-coverage curve with its area (AURC).

Shipped in the repository and loaded by path, because Hub metrics cannot be fetched offline:

    import evaluate
    metric = evaluate.load("metrics/emotion_classification", keep_in_memory=True)
    metric.compute(predictions=[0, 1, -1], references=[0, 2, 1], num_labels=3)

A prediction of -1 is an *invalid* answer (a generated reply that names no label). It counts as wrong for accuracy
and for its reference class's recall, and is reported as `invalid_rate`; it is not a class of its own, so it does not
enter the macro-F1 average as an extra label. Given each example's class probabilities, the calibration metrics
come too:

    metric.compute(predictions=[0, 1], references=[0, 0], num_labels=2, probabilities=[[0.9, 0.1], [0.3, 0.7]])

The file imports nothing of the project, so it works as it is wherever a metric script goes (a Hub Space included).
The library computes with its functions rather than a copy of them (`emovit.evaluation.metric` loads this file), so
the temperature it fits minimises the very `nll` reported here.
"""

import datasets
import evaluate
import numpy as np


# Returned with the calibration metrics (under `definitions`), so the file they end up in explains them. p[i, k] is
# example i's probability of class k, y_i its reference class.
CALIBRATION_DEFINITIONS = {
    "ece": "Expected calibration error over 15 equal-width bins of the top-1 probability (bin b holds confidences in "
           "(b/15, (b+1)/15], the first bin also 0): the sum over bins of the bin's share of examples times "
           "|accuracy of its top-1 answers - their mean top-1 probability|. 0 is perfectly calibrated.",
    "brier": "Sum over classes of (p[i, k] - 1[k == y_i])^2, averaged over examples; 0 best, 2 worst.",
    "nll": "Mean of -ln p[i, y_i], with p clamped to at least 1e-12, so a reference given probability 0 costs "
           "ln(1e12) = 27.6 instead of infinity.",
    "per_class_auroc": "Per class, the area under the ROC curve of its probability separating its examples from all "
                       "others (one-vs-rest; ties count one half, as scikit-learn's roc_auc_score); null for a class "
                       "with no positives or no negatives among the references, where it is undefined.",
    "auroc_macro": "Mean of per_class_auroc over the classes where it is defined (the classes present among the "
                   "references, unless one class holds them all); null when it is defined for none.",
    "reliability": "The 15 bins of ece: bounds, count, accuracy and mean top-1 probability (null when empty).",
    "selective": "Per confidence threshold t in 0.1, 0.2, ..., 0.9: the examples whose top-1 probability is at least t "
                 "(within 1e-9, so float rounding of a summed probability does not drop it) are kept; coverage = "
                 "kept / all, and accuracy, macro_f1 and weighted_f1 of the kept predictions (null when none is "
                 "kept).",
    "aurc": "Area under the risk-coverage curve: the examples ranked by top-1 probability, highest first; for k = 1..n "
            "the selective risk is the error rate of the top k; aurc is the mean of those n risks (0 best; a model "
            "whose confidence carries no information scores its error rate). Examples with equal confidence share "
            "their errors evenly: within a tie, the risk at k counts the tied examples' mean error per ranked example, "
            "the expectation over every order of the tie, so the result does not depend on the examples' order.",
    "risk_coverage": "Points of the risk-coverage curve of aurc: coverage k/n and the selective risk at k, at every k "
                     "when n <= 100, else at 100 evenly spaced k from 1 to n.",
}

_DESCRIPTION = """
Single-label classification metrics for visual emotion recognition. Predictions and references are class indices in
[0, num_labels); a prediction of -1 marks an invalid answer, which is counted as wrong.

- accuracy: fraction of predictions equal to the reference (invalid ones included, as wrong).
- macro_f1: unweighted mean of the per-class F1 over the classes that occur among the references or the valid
  predictions (scikit-learn's `f1_score(average="macro")` over the same classes); invalid answers lower the recall
  of their reference class.
- weighted_f1: the per-class F1 averaged with each class weighted by its number of references (scikit-learn's
  `f1_score(average="weighted")`).
- per_class_accuracy: for each class, the fraction of its references predicted correctly (its recall); None for a
  class with no references.
- confusion_matrix: num_labels x num_labels counts, rows = references, columns = predictions.
- invalid_per_class: per reference class, how many answers were invalid.
- invalid_rate: fraction of invalid predictions.

With `probabilities` (one row per example, a probability per class, rows summing to 1), also the calibration
metrics (returned with these definitions, under `definitions`):
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class index per example, -1 for an invalid answer.
    references (`list[int]`): true class index per example.
    num_labels (`int`): number of classes.
    label_names (`list[str]`, *optional*): class names; when given, `per_class_accuracy` is keyed by name.
    probabilities (`list[list[float]]`, *optional*): per example, the probability of each class (rows sum to 1).
Returns:
    dict with `accuracy`, `macro_f1`, `weighted_f1`, `per_class_accuracy`, `confusion_matrix`,
    `invalid_per_class`, `invalid_rate`, `num_examples`; with `probabilities` also `ece`, `brier`, `nll`,
    `auroc_macro`, `per_class_auroc` (keyed by name when `label_names` are given), `reliability`, `selective`,
    `aurc`, `risk_coverage` and `definitions`.
Example:
    >>> metric = evaluate.load("metrics/emotion_classification", keep_in_memory=True)
    >>> metric.compute(predictions=[0, 1, -1, 1], references=[0, 1, 1, 0], num_labels=2)["accuracy"]
    0.5
"""

_DESCRIPTION += "".join(f"- {name}: {text}\n" for name, text in CALIBRATION_DEFINITIONS.items())
_CITATION = ""

INVALID = -1
ECE_BINS = 15
NLL_FLOOR = 1e-12  # nll clamps probabilities to this, so a class given probability 0 costs ln(1e12), not infinity
SELECTIVE_THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))
THRESHOLD_TOLERANCE = 1e-9  # a summed, renormalised 0.3 may come out as 0.29999999999999993; it still reaches 0.3
RISK_COVERAGE_POINTS = 100


class EmotionClassification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, num_labels=None, label_names=None, probabilities=None):
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        if label_names is not None:
            label_names = list(label_names)
            if num_labels is None:
                num_labels = len(label_names)
            elif num_labels != len(label_names):
                raise ValueError(
                    f"num_labels is {num_labels} but label_names has {len(label_names)} names {label_names}; "
                    "pass one or make them agree."
                )
        if num_labels is None or num_labels < 1:
            raise ValueError(f"num_labels must be a positive number of classes, got {num_labels!r}.")
        if len(references) == 0:
            raise ValueError("No examples to score: predictions and references are empty.")
        bad_refs = sorted(set(references[(references < 0) | (references >= num_labels)].tolist()))
        if bad_refs:
            raise ValueError(f"references hold {bad_refs}, outside the class indices 0..{num_labels - 1}.")
        bad_preds = sorted(set(predictions[(predictions < INVALID) | (predictions >= num_labels)].tolist()))
        if bad_preds:
            raise ValueError(
                f"predictions hold {bad_preds}, outside 0..{num_labels - 1} and {INVALID} (the invalid marker)."
            )

        scores = class_scores(predictions, references, num_labels)
        support, recall = scores["support"], scores["recall"]
        per_class = [float(recall[k]) if support[k] > 0 else None for k in range(num_labels)]
        if label_names is not None:
            per_class = dict(zip(label_names, per_class))
        results = {
            "accuracy": float((predictions == references).mean()),
            "macro_f1": scores["macro_f1"],
            "weighted_f1": scores["weighted_f1"],
            "per_class_accuracy": per_class,
            "confusion_matrix": scores["confusion"].tolist(),
            "invalid_per_class": scores["invalid_per_class"].tolist(),
            "invalid_rate": float((predictions == INVALID).mean()),
            "num_examples": int(len(references)),
        }
        if probabilities is not None:
            probabilities = np.asarray(probabilities, dtype=np.float64)
            results.update(calibration_metrics(probabilities, references, num_labels, label_names))
            results.update(selective_metrics(probabilities.max(axis=1), predictions, references, num_labels))
            results["definitions"] = dict(CALIBRATION_DEFINITIONS)
        return results


def class_scores(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> dict:
    """The confusion matrix, invalid answers per class, per-class support, recall and F1, and their macro and
    support-weighted means. predictions: `(num_examples,)` class indices or INVALID; references: `(num_examples,)`."""
    invalid = predictions == INVALID
    valid = ~invalid
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (references[valid], predictions[valid]), 1)
    invalid_per_class = np.bincount(references[invalid], minlength=num_labels)

    true_positives = np.diag(confusion)
    support = confusion.sum(axis=1) + invalid_per_class
    predicted = confusion.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_positives / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, true_positives / np.maximum(support, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    # Same class set as scikit-learn's default: classes seen among references or (valid) predictions.
    present = (support > 0) | (predicted > 0)
    return {
        "confusion": confusion,
        "invalid_per_class": invalid_per_class,
        "support": support,
        "recall": recall,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        # A class without references weighs 0, as in scikit-learn; with no references at all there is nothing to weigh.
        "weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() > 0 else 0.0,
    }


def selective_metrics(confidence: np.ndarray, predictions: np.ndarray, references: np.ndarray,
                      num_labels: int) -> dict:
    """Selective prediction (`CALIBRATION_DEFINITIONS`: selective, aurc, risk_coverage): the metrics of the
    predictions kept at each of SELECTIVE_THRESHOLDS, and the risk-coverage curve with its area.

    confidence: `(num_examples,)`, each example's top-1 probability; predictions, references: `(num_examples,)`
    class indices (an INVALID prediction counts as wrong).
    """
    num_examples = len(references)
    selective = []
    for threshold in SELECTIVE_THRESHOLDS:
        kept = confidence >= threshold - THRESHOLD_TOLERANCE
        count = int(kept.sum())
        row = {"threshold": threshold, "coverage": count / num_examples, "num_kept": count,
               "accuracy": None, "macro_f1": None, "weighted_f1": None}
        if count:
            scores = class_scores(predictions[kept], references[kept], num_labels)
            row.update(accuracy=float((predictions[kept] == references[kept]).mean()), macro_f1=scores["macro_f1"],
                       weighted_f1=scores["weighted_f1"])
        selective.append(row)

    risks = selective_risks(confidence, predictions != references)
    if num_examples <= RISK_COVERAGE_POINTS:
        ks = np.arange(1, num_examples + 1)
    else:
        ks = np.unique(np.round(np.linspace(1, num_examples, RISK_COVERAGE_POINTS)).astype(np.int64))
    return {
        "selective": selective,
        "aurc": float(risks.mean()),
        "risk_coverage": {"coverage": (ks / num_examples).tolist(), "risk": risks[ks - 1].tolist()},
    }


def selective_risks(confidence: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """The selective risk at k = 1..n: the error rate of the k examples of highest `confidence`, equal confidences
    sharing their errors evenly (the expectation over the orders of a tie). confidence, wrong: `(n,)`. Returns
    `(n,)`."""
    order = np.argsort(-confidence, kind="stable")
    ranked_confidence, ranked_wrong = confidence[order], wrong[order].astype(np.float64)
    # Each tie (a run of equal confidences after sorting) gets its mean error at every one of its places: the first
    # j of a tie of m with e errors then hold j * e / m errors, their expected number in a random order.
    _, starts, counts = np.unique(-ranked_confidence, return_index=True, return_counts=True)
    shared = np.repeat(np.add.reduceat(ranked_wrong, starts) / counts, counts)
    return np.cumsum(shared) / np.arange(1, len(shared) + 1)


def calibration_metrics(probabilities: np.ndarray, references: np.ndarray, num_labels: int, label_names=None,
                        num_bins: int = ECE_BINS) -> dict:
    """ECE, Brier score, NLL, per-class and macro AUROC and the reliability bins (`CALIBRATION_DEFINITIONS`, which
    describe the default `num_bins`; other benchmarks bin differently, e.g. 10 bins).

    probabilities: `(num_examples, num_labels)`, rows summing to 1; references: `(num_examples,)` class indices.
    """
    num_examples = len(references)
    if probabilities.shape != (num_examples, num_labels):
        raise ValueError(
            f"probabilities has shape {probabilities.shape}; it needs one row per example and one column per class "
            f"({num_examples} x {num_labels})."
        )
    bad = np.flatnonzero(~np.isfinite(probabilities).all(axis=1) | (probabilities < 0).any(axis=1)
                         | (np.abs(probabilities.sum(axis=1) - 1.0) > 1e-3))
    if bad.size:
        raise ValueError(
            f"probabilities row {int(bad[0])} is {probabilities[bad[0]].tolist()}; every row must hold finite "
            f"probabilities >= 0 summing to 1 ({bad.size} rows do not)."
        )
    rows = np.arange(num_examples)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == references

    # Bin b holds (b/num_bins, (b+1)/num_bins]; a confidence of exactly 0 goes to the first bin.
    bins = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    ece, reliability = 0.0, []
    for b in range(num_bins):
        members = bins == b
        count = int(members.sum())
        accuracy = float(correct[members].mean()) if count else None
        mean_confidence = float(confidence[members].mean()) if count else None
        if count:
            ece += count / num_examples * abs(accuracy - mean_confidence)
        reliability.append({"lower": b / num_bins, "upper": (b + 1) / num_bins, "count": count,
                            "accuracy": accuracy, "confidence": mean_confidence})

    one_hot = np.zeros_like(probabilities)
    one_hot[rows, references] = 1.0
    brier = float(((probabilities - one_hot) ** 2).sum(axis=1).mean())
    nll = negative_log_likelihood(probabilities, references)

    per_class_auroc = [one_vs_rest_auroc(probabilities[:, k], references == k) for k in range(num_labels)]
    defined = [value for value in per_class_auroc if value is not None]
    if label_names is not None:
        per_class_auroc = dict(zip(label_names, per_class_auroc))
    return {
        "ece": float(ece),
        "brier": brier,
        "nll": nll,
        "auroc_macro": float(np.mean(defined)) if defined else None,
        "per_class_auroc": per_class_auroc,
        "reliability": reliability,
    }


def negative_log_likelihood(probabilities: np.ndarray, references) -> float:
    """Mean of -ln p[i, y_i] over the examples, each p clamped to at least `NLL_FLOOR` (`CALIBRATION_DEFINITIONS`).

    probabilities: `(num_examples, num_labels)`; references: `(num_examples,)` class indices.
    """
    picked = probabilities[np.arange(len(references)), np.asarray(references)]
    # + 0.0 turns the -0.0 of a perfectly confident, perfectly right run into 0.0.
    return float(-np.log(np.maximum(picked, NLL_FLOOR)).mean() + 0.0)


def one_vs_rest_auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """The probability that a random positive scores above a random negative, ties counting one half (the
    Mann-Whitney statistic, equal to the area under the ROC curve); None without positives or negatives."""
    num_positive = int(positive.sum())
    num_negative = len(positive) - num_positive
    if num_positive == 0 or num_negative == 0:
        return None
    # Average ranks (1-based) give tied scores the same rank, which counts each tie as one half.
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    u = ranks[positive].sum() - num_positive * (num_positive + 1) / 2
    return float(u / (num_positive * num_negative))
