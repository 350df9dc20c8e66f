"""The evaluation run: load the model, classify every image of a split under each instruction variant, gather the
predictions of all processes, compute the metrics and write the report.

`evaluate_model(EvalArguments(...))` is what evaluate.py runs, and what a training script calls to evaluate the model
it saved. Under `accelerate launch` / `torchrun` each process takes a contiguous share of the images; the main
process computes and writes, and every process gets the metrics back.
"""

import logging
import math
import time
from collections.abc import Collection
from dataclasses import asdict
from pathlib import Path

import evaluate
import numpy as np
import torch
from accelerate import Accelerator

from emovit.distributed import from_main_process, run_in_shares
from emovit.inference.loading import DTYPES, load_model
from emovit_utils.hub import update_card_results
from modeling_emovit import (
    CATEGORICAL_INSTRUCTION_VARIANTS,
    EmotionPrediction,
    format_categorical_instruction,
)

from .arguments import EvalArguments
from .benchmarks import distribution_metrics, drop_uncovered, load_benchmark
from .calibration import calibration_problems, fit_temperature, save_temperature, tempered_probabilities
from .card import eval_results_of
from .data import EvalData, check_readable, skipped_entries, split_off_unreadable, unreadable_rows
from .labels import LabelMapping, label_mapping, map_scores, reference_indices
from .metric import METRIC_PATH
from .reasoning import evaluate_reasoning
from .report import prediction_line, write_report


logger = logging.getLogger(__name__)


def evaluate_model(args: EvalArguments) -> dict:
    """Evaluates `args.model` on split `args.split` of `args.dataset` and writes metrics.json, predictions.jsonl and
    confusion_matrix.png (with `score` also reliability_diagram.png and risk_coverage.png) into `args.output_dir`;
    with `args.calibrate_on` it fits a temperature on that split (stored with `args.save_temperature`), with
    `args.update_card` it adds the results to that model card. Returns metrics.json's content on every process of a launch (each must call it).
    With `args.task == "reasoning"` the run is `emovit.evaluation.reasoning.evaluate_reasoning` instead.
    """
    if args.task == "reasoning":
        return evaluate_reasoning(args)
    accelerator = Accelerator()

    # ---- model and labels
    model, processor = load_model(args.model, DTYPES[args.dtype], args.quantization)
    model.to(accelerator.device)
    labels = label_mapping(args.label_map, list(model.config.emotion_labels))

    # ---- data, and the calibration split checked before anything is evaluated
    data, references = load_split(args, args.split, labels)
    calibration = load_calibration_split(args, labels) if args.calibrate_on is not None else None
    metric = evaluate.load(METRIC_PATH, keep_in_memory=True) if accelerator.is_main_process else None

    # ---- the run: the split under each instruction variant, then the temperature fit on the calibration split
    rows, unreadable, seconds = classify_variants(model, processor, data, args, labels, accelerator)
    fit = None if calibration is None else fit_on_split(model, processor, *calibration, args, labels, accelerator)
    if not accelerator.is_main_process:
        return from_main_process()

    # ---- metrics and report (main process)
    variants = [score_variant(metric, rows, references, labels, variant) for variant in range(args.prompt_variants)]
    metrics = summarise(args, variants, labels, data, unreadable, seconds, accelerator)
    metrics.update(distribution_metrics(data, rows, labels.targets))  # Emotion6's KL divergence; nothing elsewhere
    if args.method == "score":  # calibration of the training instruction's probabilities, and after a fitted T
        metrics.update(calibration_summary(metric, variants[0], rows, references, labels, fit, model.config))
    write_classification_report(args, metrics, rows, data, references, labels)
    # The other processes leave with the metrics now, so a refusal below ends this process instead of hanging them.
    metrics = from_main_process(metrics)

    # ---- the stored temperature and the model card (after the report, so a failure here leaves it written)
    store_results(args, fit, metrics)
    return metrics


# ---------------------------------------------------------------------------------------------- data


def load_split(args: EvalArguments, split: str, labels: LabelMapping) -> tuple[EvalData, list[int]]:
    """Split `split` of `args.dataset` in `args.dataset_format`, less the images whose label no model label maps to
    (`args.skip_uncovered_labels`, counted), cut to `args.max_images`; and its labels as indices into
    `labels.targets` (a label the map does not cover is refused here, before anything is classified)."""
    data = load_benchmark(args.dataset, split, args.dataset_format)
    if args.skip_uncovered_labels:
        data = drop_uncovered(data, set(labels.targets) | {label for label, target in labels.mapping.items() if target})
    data.keep_first(args.max_images)
    return data, reference_indices(data.labels, labels.mapping, labels.targets)


def load_calibration_split(args: EvalArguments, labels: LabelMapping) -> tuple[EvalData, list[int]]:
    """`load_split` of split `args.calibrate_on`, refused when a temperature fitted on it is to be stored but could
    not be trusted (too few images, one class) and `args.save_unreliable_temperature` is not set."""
    data, references = load_split(args, args.calibrate_on, labels)
    problems = calibration_problems(references)
    if problems and args.save_temperature and not args.save_unreliable_temperature:
        raise ValueError(
            f"--save_temperature: a temperature fitted on --calibrate_on {args.calibrate_on!r} would not be "
            f"trustworthy: {'; '.join(problems)}. Nothing was evaluated. Calibrate on a larger split holding "
            "every class, or pass --save_unreliable_temperature to store the fit anyway."
        )
    return data, references


# ---------------------------------------------------------------------------------------------- the run


def classify_variants(model, processor, data: EvalData, args: EvalArguments, labels: LabelMapping,
                      accelerator: Accelerator) -> tuple[list[dict], list[dict], float]:
    """Classifies `data` under each of the first `args.prompt_variants` instructions (`classify_split`).

    Returns, on every process, the rows of all variants (variant after variant, each in dataset order), the images
    that could not be read (`{"index", "reason"}`; an image is not tried again under later instructions) and the
    seconds it took.
    """
    rows, unreadable = [], []
    started = time.perf_counter()
    for variant in range(args.prompt_variants):
        variant_rows, variant_unreadable = classify_split(
            model, processor, data, variant, args, labels, accelerator,
            f"{args.method}, instruction {variant + 1}/{args.prompt_variants}",
            skip={row["index"] for row in unreadable})
        unreadable += variant_unreadable
        check_readable(variant_rows, unreadable, len(data.ids), f"{args.dataset!r} ({args.split})")
        rows += variant_rows
    return rows, unreadable, time.perf_counter() - started


def classify_split(model, processor, data: EvalData, variant: int, args: EvalArguments, labels: LabelMapping,
                   accelerator: Accelerator, description: str,
                   skip: Collection[int] = ()) -> tuple[list[dict], list[dict]]:
    """Classifies the images of `data` (less the indices in `skip`) under instruction variant `variant`, each process
    its share in batches of `args.batch_size`.

    Returns, on every process, (a row per classified image as `prediction_rows` gives it, `{"index", "reason"}` per
    image that could not be read), each in dataset order.
    """
    instruction = format_categorical_instruction(labels.model_labels, CATEGORICAL_INSTRUCTION_VARIANTS[variant])

    def classify(indices: list[int]) -> list[dict]:
        # a corrupt file is counted and reported; the others are evaluated
        images, batch, errors = data.read_images([index for index in indices if index not in skip])
        rows = []
        if batch:
            with torch.inference_mode():
                result = model.classify(images, processor, method=args.method, instruction=instruction,
                                        batch_size=args.batch_size)
            rows = prediction_rows(result, batch, variant, args.method, labels)
        return sorted(rows + unreadable_rows(errors), key=lambda row: row["index"])

    return split_off_unreadable(run_in_shares(accelerator, range(len(data.ids)), classify, args.batch_size,
                                              description))


def prediction_rows(result: EmotionPrediction, batch: list[int], variant: int, method: str,
                    labels: LabelMapping) -> list[dict]:
    """One row per image of `batch`: its index, the instruction variant, the prediction as an index into
    `labels.targets` (None for a generated answer that names no label or a dropped one), and the per-label
    probabilities (score) or the parsed model label and generated text (generate)."""
    targets, target_of = labels.targets, labels.target_of
    rows = []
    for row, index in enumerate(batch):
        record = {"index": index, "prompt_variant": variant}
        if method == "score":
            mapped = map_scores(result.scores[row].tolist(), target_of, len(targets))
            record["prediction"] = max(range(len(targets)), key=mapped.__getitem__)
            record["scores"] = dict(zip(targets, mapped))
            record["log_likelihoods"] = dict(zip(labels.model_labels, result.log_likelihoods[row].tolist()))
        else:
            named = result.labels[row]
            record["prediction"] = target_of[labels.model_labels.index(named)] if named is not None else None
            record["model_prediction"] = named
            record["text"] = result.texts[row]
        rows.append(record)
    return rows


def fit_on_split(model, processor, data: EvalData, references: list[int], args: EvalArguments,
                 labels: LabelMapping, accelerator: Accelerator) -> dict | None:
    """Classifies `data` (split `args.calibrate_on`, labels `references`) under the training instruction, each
    process its share, and on the main process fits the temperature on it. Returns {temperature, split, num_images,
    num_skipped, skipped, warnings} there (`warnings`: why the fit is not to be trusted, see `calibration_problems`)
    and None on the other processes."""
    rows, unreadable = classify_split(model, processor, data, 0, args, labels, accelerator,
                                      f"calibrating on {args.calibrate_on}")
    if not accelerator.is_main_process:
        return None
    check_readable(rows, unreadable, len(data.ids), f"--calibrate_on {args.calibrate_on!r}")
    log_likelihoods = np.array([list(row["log_likelihoods"].values()) for row in rows])
    fitted_references = [references[row["index"]] for row in rows]
    temperature = fit_temperature(log_likelihoods, fitted_references, labels.target_of, len(labels.targets))
    problems = calibration_problems(fitted_references, temperature)
    for problem in problems:
        logger.warning("the temperature %.4g fitted on %s is unreliable: %s", temperature, args.calibrate_on, problem)
    skipped = skipped_entries(data, unreadable)
    logger.info("temperature %.4f fitted on %d images of %s", temperature, len(rows), args.calibrate_on)
    return {"temperature": temperature, "split": args.calibrate_on, "num_images": len(rows),
            "num_skipped": len(skipped), "skipped": skipped, "warnings": problems}


# ---------------------------------------------------------------------------------------------- metrics


def score_variant(metric, rows: list[dict], references: list[int], labels: LabelMapping, variant: int) -> dict:
    """The metric module's results for the rows of instruction variant `variant` (in dataset order)."""
    rows = [row for row in rows if row["prompt_variant"] == variant]
    evaluated = [r["index"] for r in rows]
    assert evaluated == sorted(evaluated), "gathered rows out of dataset order"
    predictions = [-1 if r["prediction"] is None else r["prediction"] for r in rows]
    # score rows carry probabilities, which add the calibration metrics.
    probabilities = [list(r["scores"].values()) for r in rows] if "scores" in rows[0] else None
    scores = metric.compute(predictions=predictions, references=[references[i] for i in evaluated],
                            label_names=labels.targets, probabilities=probabilities)
    instruction = format_categorical_instruction(labels.model_labels, CATEGORICAL_INSTRUCTION_VARIANTS[variant])
    return {"prompt_variant": variant, "instruction": instruction, **scores}


def summarise(args: EvalArguments, variants: list[dict], labels: LabelMapping, data: EvalData,
              unreadable: list[dict], seconds: float, accelerator: Accelerator) -> dict:
    """metrics.json's content: the training instruction's (variant 0) metrics at the top level, each variant's
    summary, and with several variants the spread of their accuracies."""
    first = variants[0]
    num_evaluated, skipped = len(data.ids) - len(unreadable), skipped_entries(data, unreadable)
    metrics = {
        "accuracy": first["accuracy"],
        "macro_f1": first["macro_f1"],
        "weighted_f1": first["weighted_f1"],
        "per_class_accuracy": first["per_class_accuracy"],
        "invalid_rate": first["invalid_rate"],
        "confusion_matrix": first["confusion_matrix"],
        "invalid_per_class": first["invalid_per_class"],
        "labels": labels.targets,
        "model_labels": labels.model_labels,
        "label_map": labels.mapping,
        "num_images": num_evaluated,
        # Entries of the split left out (reader skips, e.g. a missing file or a path outside the root) and images
        # that could not be decoded (corrupt, truncated, over the decompression-bomb limit), each with its reason.
        "num_skipped": len(skipped),
        "skipped": skipped,
        "seconds": seconds,
        "images_per_second": num_evaluated * args.prompt_variants / seconds,
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "prompt_variants": [
            {key: v[key] for key in ("prompt_variant", "instruction", "accuracy", "macro_f1", "weighted_f1",
                                     "invalid_rate")}
            for v in variants
        ],
        "arguments": asdict(args),
    }
    if args.prompt_variants > 1:
        accuracies = [v["accuracy"] for v in variants]
        mean = sum(accuracies) / len(accuracies)
        metrics["prompt_accuracy_spread"] = max(accuracies) - min(accuracies)
        # Population std: the variants are the whole set being compared, not a sample.
        metrics["prompt_accuracy_std"] = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / len(accuracies))
    return metrics


# Computed from the probabilities: calibration, then selective prediction (which ranks images by their top-1
# probability).
CALIBRATION_KEYS = ("ece", "brier", "nll", "auroc_macro", "per_class_auroc", "reliability", "selective", "aurc",
                    "risk_coverage", "definitions")


def calibration_summary(metric, first: dict, rows: list[dict], references: list[int], labels: LabelMapping,
                        fit: dict | None, config) -> dict:
    """The calibration and selective-prediction metrics of the training instruction's run (variant `first`), with
    the model's stored temperature under which its probabilities were computed (`config.score_temperature`), and
    with a fit also those metrics at the fitted temperature (`calibrated_metrics`)."""
    summary = {"score_temperature": getattr(config, "score_temperature", 1.0),
               **{key: first[key] for key in CALIBRATION_KEYS}}
    if fit is not None:
        summary["calibrated"] = calibrated_metrics(metric, rows, references, labels, fit)
    return summary


def calibrated_metrics(metric, rows: list[dict], references: list[int], labels: LabelMapping, fit: dict) -> dict:
    """metrics.json's `calibrated` block: the fit (temperature, the split it was fitted on and its counts) and the
    training instruction's rows' accuracy, F1, calibration and selective metrics with their probabilities
    recomputed at that temperature from the raw log-likelihoods (the label map's sums can reorder labels, so accuracy
    is recomputed too)."""
    rows = [row for row in rows if row["prompt_variant"] == 0]
    log_likelihoods = np.array([list(row["log_likelihoods"].values()) for row in rows])
    probabilities = tempered_probabilities(log_likelihoods, fit["temperature"], labels.target_of, len(labels.targets))
    result = metric.compute(predictions=probabilities.argmax(axis=1).tolist(),
                            references=[references[row["index"]] for row in rows], label_names=labels.targets,
                            probabilities=probabilities.tolist())
    return {**fit, "accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "weighted_f1": result["weighted_f1"],
            **{key: result[key] for key in CALIBRATION_KEYS if key != "definitions"},
            "definition": "The evaluated split's metrics with each image's probabilities recomputed as the softmax of "
                          "its answers' log-likelihoods / temperature (then the label map's sums), the temperature "
                          "minimising the negative log-likelihood of split `split`."}


# ---------------------------------------------------------------------------------------------- report and after


def write_classification_report(args: EvalArguments, metrics: dict, rows: list[dict], data: EvalData,
                                references: list[int], labels: LabelMapping) -> None:
    """metrics.json, predictions.jsonl and the plots (`report.write_report`) in `args.output_dir`."""
    title = (f"{Path(args.model).name} on {Path(args.dataset).name}/{args.split} ({args.method}): "
             f"accuracy {metrics['accuracy']:.3f}")
    lines = [prediction_line(row, data.ids, references, labels.targets) for row in rows]
    write_report(args.output_dir, metrics, lines, title)
    logger.info("accuracy %.4f, macro-F1 %.4f on %d images; wrote %s", metrics["accuracy"], metrics["macro_f1"],
                metrics["num_images"], args.output_dir)


def store_results(args: EvalArguments, fit: dict | None, metrics: dict) -> None:
    """With `args.save_temperature`, the fitted temperature into the model's config.json, refused (after the report,
    which shows the fit) when the fit is not to be trusted and `args.save_unreliable_temperature` is not set; with
    `args.update_card`, the results into that folder's model card."""
    if args.save_temperature:
        if fit["warnings"] and not args.save_unreliable_temperature:
            raise ValueError(
                f"--save_temperature: the temperature {fit['temperature']:.4g} fitted on --calibrate_on "
                f"{args.calibrate_on!r} is not stored in {str(Path(args.model) / 'config.json')!r} (nor the card "
                f"updated): {'; '.join(fit['warnings'])}. The report in {str(args.output_dir)!r} shows the fit. "
                "Calibrate on a larger or different split, or pass --save_unreliable_temperature to store it anyway."
            )
        save_temperature(args.model, fit["temperature"])
    if args.update_card is not None:
        update_card_results(args.update_card, eval_results_of(metrics))


def evaluate_held_out(model_dir: str | Path, dataset, split: str, reasoning: bool = False,
                      vocabulary_from: str | None = None, quantization: str | None = None) -> dict:
    """Evaluates a saved model on `split` with both classification methods, writing `model_dir/eval` (score) and
    `model_dir/eval-generate`, and with `reasoning` also its explanations (`model_dir/eval-reasoning`, words
    counted against the answers of `vocabulary_from`), the model loaded with `quantization` (as evaluate.py's
    --quantization). Returns the headline numbers of each."""
    model_dir = Path(model_dir)
    shared = {"model": str(model_dir), "dataset": str(dataset), "split": split, "quantization": quantization}
    runs = {method: evaluate_model(EvalArguments(**shared, method=method, output_dir=str(model_dir / folder)))
            for method, folder in (("score", "eval"), ("generate", "eval-generate"))}
    results = {"accuracy_score": runs["score"]["accuracy"], "macro_f1_score": runs["score"]["macro_f1"],
               "accuracy_generate": runs["generate"]["accuracy"],
               "invalid_rate_generate": runs["generate"]["invalid_rate"]}
    if reasoning:
        explained = evaluate_model(EvalArguments(**shared, task="reasoning", vocabulary_from=vocabulary_from,
                                                 output_dir=str(model_dir / "eval-reasoning")))
        results.update({"reasoning_consistency": explained["consistency"],
                        "reasoning_agreement_with_prediction": explained["agreement_with_prediction"]["agrees"],
                        "reasoning_grounding": explained["grounding"],
                        "reasoning_contradiction_rate": explained["contradiction_rate"]})
        if explained["known_word_rate"] is not None:
            results["reasoning_known_word_rate"] = explained["known_word_rate"]
    return results
