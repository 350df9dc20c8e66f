"""The evaluation run: load the model, classify every image of a split under each instruction variant, gather the
predictions of all processes, compute the metrics and write the report.

`evaluate_model(EvalArguments(...))` is what evaluate.py runs, and what a training script calls to evaluate the model
it saved. Under `accelerate launch` / `torchrun` each process takes a contiguous share of the images; the main
process computes and writes, and every process gets the metrics back.
"""

import logging
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm

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
from .data import EvalData
from .labels import map_scores, reference_indices, resolve_label_map, target_indices
from .metric import METRIC_PATH
from .reasoning import evaluate_reasoning
from .report import prediction_line, write_report


# The repository root holds the script `evaluate.py`, which shadows the `evaluate` library wherever the root is on
# sys.path (`python evaluate.py`, `python train.py`, `python -c` in the checkout). The library is a package, never a
# file `evaluate.py`, so path entries holding such a file are hidden while it is imported.
_saved_sys_path = list(sys.path)
sys.path[:] = [entry for entry in sys.path if not os.path.isfile(os.path.join(entry or os.curdir, "evaluate.py"))]
try:
    import evaluate
finally:
    sys.path[:] = _saved_sys_path


logger = logging.getLogger(__name__)


def evaluate_model(args: EvalArguments) -> dict:
    """Evaluates `args.model` on split `args.split` of `args.dataset` and writes metrics.json, predictions.jsonl and
    confusion_matrix.png (with `score` also reliability_diagram.png) into `args.output_dir`. With
    `args.calibrate_on` it fits a temperature on that split (stored in the model with `args.save_temperature`);
    with `args.update_card` it adds the results to that folder's model card.

    Returns metrics.json's content, on every process of a multi-process launch (each process must call it).
    With `args.task == "reasoning"` the run is `emovit.evaluation.reasoning.evaluate_reasoning` instead.
    """
    if args.task == "reasoning":
        return evaluate_reasoning(args)
    accelerator = Accelerator()

    # ---- model and labels
    model, processor = load_model(args.model, DTYPES[args.dtype])
    model.to(accelerator.device)
    model_labels = list(model.config.emotion_labels)
    mapping, targets = resolve_label_map(args.label_map, model_labels)
    target_of = target_indices(model_labels, mapping, targets)

    # ---- data, and the calibration split checked before anything is evaluated
    data = load_split(args, args.split, mapping, targets)
    references = reference_indices(data.labels, mapping, targets)
    calibration_data = None
    if args.calibrate_on is not None:
        calibration_data = load_split(args, args.calibrate_on, mapping, targets)
        problems = calibration_problems(reference_indices(calibration_data.labels, mapping, targets))
        if problems and args.save_temperature and not args.save_unreliable_temperature:
            raise ValueError(
                f"--save_temperature: a temperature fitted on --calibrate_on {args.calibrate_on!r} would not be "
                f"trustworthy: {'; '.join(problems)}. Nothing was evaluated. Calibrate on a larger split holding "
                "every class, or pass --save_unreliable_temperature to store the fit anyway."
            )
    metric = evaluate.load(METRIC_PATH, keep_in_memory=True) if accelerator.is_main_process else None

    # ---- classification, once per instruction variant
    # Each process takes a contiguous slice; gather_object concatenates them in rank order, i.e. in dataset order.
    with accelerator.split_between_processes(list(range(len(data.ids)))) as local_indices:
        local_indices = list(local_indices)
    unreadable = {}  # index -> why its image could not be read (this process's share)
    variants, rows, seconds = [], [], 0.0
    for variant in range(args.prompt_variants):
        instruction = format_categorical_instruction(model_labels, CATEGORICAL_INSTRUCTION_VARIANTS[variant])
        started = time.perf_counter()
        progress = tqdm(total=len(local_indices), unit="img", disable=not accelerator.is_local_main_process,
                        desc=f"{args.method}, instruction {variant + 1}/{args.prompt_variants}")
        local_rows = []
        for batch, result in classify_share(model, processor, data, local_indices, instruction, args, unreadable,
                                            progress):
            local_rows += prediction_rows(result, batch, variant, args.method, model_labels, targets, target_of)
        progress.close()
        gathered = gather_object(local_rows)
        seconds += time.perf_counter() - started
        if not gathered:
            raise ValueError(f"None of the {len(data.ids)} images of {args.dataset!r} ({args.split}) could be read; "
                             f"first error: {next(iter(unreadable.values()), 'on another process')}")
        if accelerator.is_main_process:
            variants.append(score_variant(metric, gathered, references, targets, variant, instruction))
            rows += gathered

    unreadable_rows = gather_object([{"index": index, "reason": reason} for index, reason in unreadable.items()])
    # ---- temperature fit on --calibrate_on (every process classifies its share; the main process fits)
    fit = fit_on_split(model, processor, args, calibration_data, accelerator, model_labels, mapping, targets,
                       target_of) if calibration_data is not None else None
    if not accelerator.is_main_process:
        return broadcast_object_list([None])[0]

    # ---- metrics and report (main process)
    skipped = data.skipped + [{"id": data.ids[r["index"]], "reason": r["reason"]}
                              for r in sorted(unreadable_rows, key=lambda r: r["index"])]
    metrics = summarise(args, variants, targets, model_labels, mapping, len(data.ids) - len(unreadable_rows),
                        skipped, seconds, accelerator)
    metrics.update(distribution_metrics(data, rows, targets))  # Emotion6's KL divergence; nothing for other datasets
    if args.method == "score":  # calibration of the training instruction's probabilities, and after a fitted T
        metrics.update(calibration_summary(variants[0], getattr(model.config, "score_temperature", 1.0)))
        if fit is not None:
            first_rows = [row for row in rows if row["prompt_variant"] == 0]
            metrics["calibrated"] = calibrated_metrics(metric, first_rows, references, targets, target_of, fit)
    title = (f"{Path(args.model).name} on {Path(args.dataset).name}/{args.split} ({args.method}): "
             f"accuracy {metrics['accuracy']:.3f}")
    write_report(args.output_dir, metrics, [prediction_line(row, data.ids, references, targets) for row in rows],
                 title)
    logger.info("accuracy %.4f, macro-F1 %.4f on %d images; wrote %s", metrics["accuracy"], metrics["macro_f1"],
                metrics["num_images"], args.output_dir)
    # The other processes leave with the metrics now, so a refusal below ends this process instead of hanging them.
    metrics = broadcast_object_list([metrics])[0]
    # ---- the stored temperature and the model card (after the report, so a failure here leaves it written)
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
    return metrics


def load_split(args: EvalArguments, split: str, mapping: dict, targets: list[str]) -> EvalData:
    """Split `split` of `args.dataset` in `args.dataset_format`, less the images whose label no model label maps to
    (`args.skip_uncovered_labels`, counted), cut to `args.max_images`."""
    data = load_benchmark(args.dataset, split, args.dataset_format)
    if args.skip_uncovered_labels:
        data = drop_uncovered(data, set(targets) | {label for label, target in mapping.items() if target})
    if args.max_images is not None:
        data.ids, data.labels = data.ids[: args.max_images], data.labels[: args.max_images]
    return data


def classify_share(model, processor, data: EvalData, indices: list[int], instruction: str, args: EvalArguments,
                   unreadable: dict[int, str], progress) -> list[tuple[list[int], EmotionPrediction]]:
    """Classifies the images `indices` (this process's share) in batches of `args.batch_size` under `instruction`.

    Returns (the batch's dataset indices, the model's prediction) per batch. An image that cannot be read is
    recorded in `unreadable` with its error, left out of its batch and not tried again under later instructions.
    """
    results = []
    for start in range(0, len(indices), args.batch_size):
        chunk = indices[start : start + args.batch_size]
        # a corrupt file is counted and reported; the others are evaluated
        images, batch, errors = data.read_images([index for index in chunk if index not in unreadable])
        unreadable.update(errors)
        progress.update(len(chunk))
        if batch:
            with torch.inference_mode():
                results.append((batch, model.classify(images, processor, method=args.method, instruction=instruction,
                                                      batch_size=args.batch_size)))
    return results


def prediction_rows(result: EmotionPrediction, batch: list[int], variant: int, method: str, model_labels: list[str],
                    targets: list[str], target_of: list[int | None]) -> list[dict]:
    """One row per image of `batch`: its index, the instruction variant, the prediction as an index into `targets`
    (None for a generated answer that names no label or a dropped one), and the per-label probabilities (score) or
    the parsed model label and generated text (generate)."""
    rows = []
    for row, index in enumerate(batch):
        record = {"index": index, "prompt_variant": variant}
        if method == "score":
            mapped = map_scores(result.scores[row].tolist(), target_of, len(targets))
            record["prediction"] = max(range(len(targets)), key=mapped.__getitem__)
            record["scores"] = dict(zip(targets, mapped))
            record["log_likelihoods"] = dict(zip(model_labels, result.log_likelihoods[row].tolist()))
        else:
            named = result.labels[row]
            record["prediction"] = target_of[model_labels.index(named)] if named is not None else None
            record["model_prediction"] = named
            record["text"] = result.texts[row]
        rows.append(record)
    return rows


def score_variant(metric, rows: list[dict], references: list[int], targets: list[str], variant: int,
                  instruction: str) -> dict:
    """The metric module's results for one instruction variant's gathered rows (in dataset order)."""
    evaluated = [r["index"] for r in rows]
    assert evaluated == sorted(evaluated), "gathered rows out of dataset order"
    predictions = [-1 if r["prediction"] is None else r["prediction"] for r in rows]
    # score rows carry probabilities, which add the calibration metrics.
    probabilities = [list(r["scores"].values()) for r in rows] if "scores" in rows[0] else None
    scores = metric.compute(predictions=predictions, references=[references[i] for i in evaluated],
                            label_names=targets, probabilities=probabilities)
    return {"prompt_variant": variant, "instruction": instruction, **scores}


def summarise(args: EvalArguments, variants: list[dict], targets: list[str], model_labels: list[str], mapping: dict,
              num_evaluated: int, skipped: list[dict], seconds: float, accelerator: Accelerator) -> dict:
    """metrics.json's content: the training instruction's (variant 0) metrics at the top level, each variant's
    summary, and with several variants the spread of their accuracies."""
    first = variants[0]
    metrics = {
        "accuracy": first["accuracy"],
        "macro_f1": first["macro_f1"],
        "per_class_accuracy": first["per_class_accuracy"],
        "invalid_rate": first["invalid_rate"],
        "confusion_matrix": first["confusion_matrix"],
        "invalid_per_class": first["invalid_per_class"],
        "labels": targets,
        "model_labels": model_labels,
        "label_map": mapping,
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
            {key: v[key] for key in ("prompt_variant", "instruction", "accuracy", "macro_f1", "invalid_rate")}
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


CALIBRATION_KEYS = ("ece", "brier", "nll", "auroc_macro", "per_class_auroc", "reliability", "definitions")


def calibration_summary(first: dict, score_temperature: float) -> dict:
    """The calibration metrics of the training instruction's run (variant `first`), with the model's stored
    temperature under which its probabilities were computed."""
    return {"score_temperature": score_temperature, **{key: first[key] for key in CALIBRATION_KEYS}}


def fit_on_split(model, processor, args: EvalArguments, data: EvalData, accelerator: Accelerator,
                 model_labels: list[str], mapping: dict, targets: list[str], target_of: list[int | None]) -> dict | None:
    """Classifies `data` (split `args.calibrate_on`) under the training instruction (each process its share) and,
    on the main process, fits the temperature on it; returns {temperature, split, num_images, num_skipped, skipped,
    warnings} there (`warnings`: why the fit is not to be trusted, see `calibration_problems`) and None on the
    other processes."""
    references = reference_indices(data.labels, mapping, targets)
    with accelerator.split_between_processes(list(range(len(data.ids)))) as local_indices:
        local_indices = list(local_indices)
    instruction = format_categorical_instruction(model_labels, CATEGORICAL_INSTRUCTION_VARIANTS[0])
    progress = tqdm(total=len(local_indices), unit="img", disable=not accelerator.is_local_main_process,
                    desc=f"calibrating on {args.calibrate_on}")
    unreadable, local_rows = {}, []
    for batch, result in classify_share(model, processor, data, local_indices, instruction, args, unreadable,
                                        progress):
        local_rows += prediction_rows(result, batch, 0, args.method, model_labels, targets, target_of)
    progress.close()
    rows = gather_object(local_rows)
    unreadable_rows = gather_object([{"index": index, "reason": reason} for index, reason in unreadable.items()])
    if not accelerator.is_main_process:
        return None
    if not rows:
        raise ValueError(f"None of the {len(data.ids)} images of --calibrate_on {args.calibrate_on!r} could be read; "
                         f"first error: {unreadable_rows[0]['reason'] if unreadable_rows else 'none recorded'}")
    log_likelihoods = np.array([list(row["log_likelihoods"].values()) for row in rows])
    fitted_references = [references[row["index"]] for row in rows]
    temperature = fit_temperature(log_likelihoods, fitted_references, target_of, len(targets))
    problems = calibration_problems(fitted_references, temperature)
    for problem in problems:
        logger.warning("the temperature %.4g fitted on %s is unreliable: %s", temperature, args.calibrate_on, problem)
    skipped = data.skipped + [{"id": data.ids[r["index"]], "reason": r["reason"]}
                              for r in sorted(unreadable_rows, key=lambda r: r["index"])]
    logger.info("temperature %.4f fitted on %d images of %s", temperature, len(rows), args.calibrate_on)
    return {"temperature": temperature, "split": args.calibrate_on, "num_images": len(rows),
            "num_skipped": len(skipped), "skipped": skipped, "warnings": problems}


def calibrated_metrics(metric, rows: list[dict], references: list[int], targets: list[str],
                       target_of: list[int | None], fit: dict) -> dict:
    """metrics.json's `calibrated` block: the fit (temperature, the split it was fitted on and its counts) and the
    evaluated rows' accuracy, macro-F1 and calibration metrics with their probabilities recomputed at that
    temperature from the raw log-likelihoods (the label map's sums can reorder labels, so accuracy is recomputed
    too)."""
    log_likelihoods = np.array([list(row["log_likelihoods"].values()) for row in rows])
    probabilities = tempered_probabilities(log_likelihoods, fit["temperature"], target_of, len(targets))
    result = metric.compute(predictions=probabilities.argmax(axis=1).tolist(),
                            references=[references[row["index"]] for row in rows], label_names=targets,
                            probabilities=probabilities.tolist())
    return {**fit, "accuracy": result["accuracy"], "macro_f1": result["macro_f1"],
            **{key: result[key] for key in CALIBRATION_KEYS if key != "definitions"},
            "definition": "The evaluated split's metrics with each image's probabilities recomputed as the softmax of "
                          "its answers' log-likelihoods / temperature (then the label map's sums), the temperature "
                          "minimising the negative log-likelihood of split `split`."}


def evaluate_held_out(model_dir: str | Path, dataset, split: str, reasoning: bool = False,
                      vocabulary_from: str | None = None) -> dict:
    """Evaluates a saved model on `split` with both classification methods, writing `model_dir/eval` (score) and
    `model_dir/eval-generate`, and with `reasoning` also its explanations (`model_dir/eval-reasoning`, words
    counted against the answers of `vocabulary_from`). Returns the headline numbers of each."""
    model_dir = Path(model_dir)
    runs = {method: evaluate_model(EvalArguments(model=str(model_dir), dataset=str(dataset), split=split, method=method,
                                                 output_dir=str(model_dir / folder)))
            for method, folder in (("score", "eval"), ("generate", "eval-generate"))}
    results = {"accuracy_score": runs["score"]["accuracy"], "macro_f1_score": runs["score"]["macro_f1"],
               "accuracy_generate": runs["generate"]["accuracy"],
               "invalid_rate_generate": runs["generate"]["invalid_rate"]}
    if reasoning:
        explained = evaluate_model(EvalArguments(model=str(model_dir), dataset=str(dataset), split=split,
                                                 task="reasoning", vocabulary_from=vocabulary_from,
                                                 output_dir=str(model_dir / "eval-reasoning")))
        results.update({"reasoning_consistency": explained["consistency"],
                        "reasoning_agreement_with_prediction": explained["agreement_with_prediction"]["agrees"],
                        "reasoning_grounding": explained["grounding"],
                        "reasoning_contradiction_rate": explained["contradiction_rate"]})
        if explained["known_word_rate"] is not None:
            results["reasoning_known_word_rate"] = explained["known_word_rate"]
    return results
