"""Emotion classification metric for the `evaluate` library: accuracy, macro-F1, per-class accuracy, confusion
matrix and the rate of invalid answers, from integer class indices.

Shipped in the repository and loaded by path, because Hub metrics cannot be fetched offline:

    import evaluate
    metric = evaluate.load("metrics/emotion_classification", keep_in_memory=True)
    metric.compute(predictions=[0, 1, -1], references=[0, 2, 1], num_labels=3)

A prediction of -1 is an *invalid* answer (a generated reply that names no label). It counts as wrong for accuracy
and for its reference class's recall, and is reported as `invalid_rate`; it is not a class of its own, so it does not
enter the macro-F1 average as an extra label.
"""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Single-label classification metrics for visual emotion recognition. Predictions and references are class indices in
[0, num_labels); a prediction of -1 marks an invalid answer, which is counted as wrong.

- accuracy: fraction of predictions equal to the reference (invalid ones included, as wrong).
- macro_f1: unweighted mean of the per-class F1 over the classes that occur among the references or the valid
  predictions (scikit-learn's `f1_score(average="macro")` over the same classes); invalid answers lower the recall
  of their reference class.
- per_class_accuracy: for each class, the fraction of its references predicted correctly (its recall); None for a
  class with no references.
- confusion_matrix: num_labels x num_labels counts, rows = references, columns = predictions.
- invalid_per_class: per reference class, how many answers were invalid.
- invalid_rate: fraction of invalid predictions.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class index per example, -1 for an invalid answer.
    references (`list[int]`): true class index per example.
    num_labels (`int`): number of classes.
    label_names (`list[str]`, *optional*): class names; when given, `per_class_accuracy` is keyed by name.
Returns:
    dict with `accuracy`, `macro_f1`, `per_class_accuracy`, `confusion_matrix`, `invalid_per_class`,
    `invalid_rate`, `num_examples`.
Example:
    >>> metric = evaluate.load("metrics/emotion_classification", keep_in_memory=True)
    >>> metric.compute(predictions=[0, 1, -1, 1], references=[0, 1, 1, 0], num_labels=2)["accuracy"]
    0.5
"""

_CITATION = ""

INVALID = -1


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

    def _compute(self, predictions, references, num_labels=None, label_names=None):
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

        per_class = [float(recall[k]) if support[k] > 0 else None for k in range(num_labels)]
        if label_names is not None:
            per_class = dict(zip(label_names, per_class))
        return {
            "accuracy": float((predictions == references).mean()),
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
            "per_class_accuracy": per_class,
            "confusion_matrix": confusion.tolist(),
            "invalid_per_class": invalid_per_class.tolist(),
            "invalid_rate": float(invalid.mean()),
            "num_examples": int(len(references)),
        }
