"""The reasoning evaluation behind `evaluate.py --task reasoning`: explain every labelled image of a split, score
each explanation offline (`emovit.evaluation.explanations`: emotion consistency, attribute grounding, contradictions;
BLEU-4, ROUGE-L and optionally BERTScore against reference answers with --references), optionally have an LLM judge
it (`emovit.evaluation.judge`), and write metrics.json and predictions.jsonl.

Each process explains a contiguous share of the images; the rows are gathered in dataset order and the main process
summarises, judges and writes.
"""

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from dataset_builder import parse_types
from dataset_builder.attributes import complete_attributes, normalise_attributes
from dataset_builder.llm import redact_url
from emovit.distributed import from_main_process, run_in_shares
from emovit.inference.loading import DTYPES, check_max_new_tokens, load_model
from emovit_utils.files import atomic_write_text
from modeling_emovit import EXPLANATION_PRESETS

from .arguments import EvalArguments
from .data import (
    EvalData,
    References,
    check_readable,
    load_eval_data,
    load_references,
    skipped_entries,
    split_off_unreadable,
    unreadable_rows,
)
from .explanations import (
    DEFINITIONS,
    answer_vocabulary,
    bertscore,
    bertscore_layer,
    known_word_rate,
    load_bertscore_model,
    reference_scores,
    score_explanation,
    summarise_scores,
)
from .judge import judge_failure, judge_rows, judge_settings


logger = logging.getLogger(__name__)


def evaluate_reasoning(args: EvalArguments) -> dict:
    """Explains every image of split `args.split` of `args.dataset` with `args.model` (preset
    `args.explain_preset`), scores the explanations, optionally has an LLM judge them, and writes metrics.json and
    predictions.jsonl into `args.output_dir`. Returns metrics.json's content on every process."""
    accelerator = Accelerator()
    # The judge's settings are checked (key, URL, prices) before the model spends time on explanations.
    judge_client = judge_settings(args) if args.judge_model else None

    # ---- model and data
    model, processor = load_model(args.model, DTYPES[args.dtype], args.quantization)
    check_max_new_tokens(model.config, args.max_new_tokens)
    model.to(accelerator.device)
    labels = list(model.config.emotion_labels)
    data = load_labelled_split(args, labels)
    # References and the BERTScore encoder are read before the explanations, so a bad file stops the run early.
    references = (load_references(args.references, data, parse_types(args.reference_types))
                  if args.references else None)
    encoder = load_bertscore_model(args.bertscore_model) if args.bertscore_model else None
    if encoder is not None:
        bertscore_layer(encoder[1], args.bertscore_layer)

    # ---- the run: explanations, each process its share
    started = time.perf_counter()
    rows, unreadable = explain_split(model, processor, data, args, labels, accelerator)
    seconds = time.perf_counter() - started
    check_readable(rows, unreadable, len(data.ids), f"{args.dataset!r} ({args.split})")
    if not accelerator.is_main_process:
        return from_main_process()

    # ---- metrics, judge and report (main process)
    if references is not None:
        for row in rows:
            row["references"] = references.texts[row["index"]]
    annotation_problems = take_annotation_problems(rows)
    judge = judge_rows(rows, args, judge_client) if judge_client is not None else None
    metrics = reasoning_metrics(args, rows, judge, skipped_entries(data, unreadable), annotation_problems, seconds,
                                labels, accelerator)
    metrics["references"] = (score_against_references(rows, references, encoder, args.bertscore_layer)
                             if references is not None else None)
    write_reasoning_report(args.output_dir, metrics, rows)
    # The other processes leave with the metrics now, so a failed judge ends this process instead of hanging them.
    metrics = from_main_process(metrics)

    # ---- after the report: a judge that did not score every explanation fails the run
    check_judge(judge, rows, args)
    return metrics


def load_labelled_split(args: EvalArguments, labels: list[str]) -> EvalData:
    """Split `args.split` of `args.dataset`, cut to `args.max_images`; refused when it has labels other than the
    model's `labels`."""
    data = load_eval_data(args.dataset, args.split)
    data.keep_first(args.max_images)
    unknown = sorted(set(data.labels) - set(labels))
    if unknown:
        raise ValueError(f"The dataset's labels {unknown} are not among the model's {labels}. --task reasoning "
                         "checks explanations against the model's own emotion words, so it needs a dataset "
                         "labelled with them (no --label_map).")
    return data


def explain_split(model, processor, data: EvalData, args: EvalArguments, labels: list[str],
                  accelerator: Accelerator) -> tuple[list[dict], list[dict]]:
    """Explains and scores the images of `data`, each process its share in batches of `args.batch_size`.

    Returns, on every process, (a row per explained image as `explain_batch` gives it, `{"index", "reason"}` per
    image that could not be read), each in dataset order.
    """
    rows = run_in_shares(accelerator, range(len(data.ids)),
                         lambda indices: explain_batch(model, processor, data, indices, args, labels),
                         args.batch_size, f"explain ({args.explain_preset})")
    return split_off_unreadable(rows)


def explain_batch(model, processor, data: EvalData, indices: list[int], args: EvalArguments,
                  labels: list[str]) -> list[dict]:
    """Explains and scores the images `indices`: one row per readable image, with its dataset index, and
    `{"index", "reason"}` for an image that could not be read; in the order of `indices`."""
    images, batch, errors = data.read_images(indices)  # a corrupt file is counted and reported; the others explained
    rows = []
    if batch:
        with torch.inference_mode():
            result = model.explain(images, processor, preset=args.explain_preset, method=args.method,
                                   max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        for row, (index, image) in enumerate(zip(batch, images)):
            annotation_path = data.annotation_paths[index] if data.annotation_paths is not None else None
            attributes, computed, problem = image_attributes(annotation_path, image)
            label, prediction = data.labels[index], result.labels[row]
            scores = score_explanation(result.explanations[row], label, prediction, labels, attributes)
            rows.append({"index": index, "id": data.ids[index], "label": label, "prediction": prediction,
                         "correct": prediction == label, "explanation": result.explanations[row], **scores,
                         "attributes": attributes, "attributes_computed": computed, "annotation_problem": problem})
    return sorted(rows + unreadable_rows(errors), key=lambda row: row["index"])


def image_attributes(annotation_path: str | None, image) -> tuple[dict, list[str], str | None]:
    """The image's attributes from its EmoSet annotation file, cleaned as dataset_builder cleans them, with
    brightness and colourfulness computed from `image` (a PIL image) where missing.

    Returns (attributes, names computed from pixels, problem): a missing or unreadable annotation file gives the
    pixel attributes only and a problem text naming the file, which the run counts and reports.
    """
    annotation, problem = {}, None
    if annotation_path is not None:
        path = Path(annotation_path)
        try:
            annotation = json.loads(path.read_text())
            if not isinstance(annotation, dict):
                raise ValueError(f"it holds {type(annotation).__name__}, expected an object")
            annotation = normalise_attributes(annotation)
        except (OSError, ValueError) as e:
            annotation = {}
            problem = (f"annotation file {path} could not be used ({type(e).__name__}: {e}); only the brightness "
                       "and colourfulness computed from pixels are scored")
    attributes, computed = complete_attributes(annotation, np.asarray(image))
    return attributes, computed, problem


def take_annotation_problems(rows: list[dict]) -> list[dict]:
    """Takes what only the run needs out of the gathered rows (their dataset index, and the problem met reading
    the image's annotation file), leaving predictions.jsonl's lines; returns the problems as `{"id", "reason"}`."""
    assert [r["index"] for r in rows] == sorted(r["index"] for r in rows), "gathered rows out of dataset order"
    problems = [{"id": r["id"], "reason": r.pop("annotation_problem")} for r in rows if r.get("annotation_problem")]
    for row in rows:
        row.pop("annotation_problem", None)
        row.pop("index")
    return problems


def reasoning_metrics(args: EvalArguments, rows: list[dict], judge: dict | None, skipped: list[dict],
                      annotation_problems: list[dict], seconds: float, labels: list[str],
                      accelerator: Accelerator) -> dict:
    """metrics.json's content: the offline scores' rates (`summarise_scores`), the judge's scores, the counts of
    what was skipped or computed from pixels, the speed, the definitions and the arguments (the judge's URL
    without credentials)."""
    arguments = asdict(args)
    arguments["judge_base_url"] = redact_url(args.judge_base_url)
    return {
        "task": "reasoning",
        "preset": args.explain_preset,
        "question": EXPLANATION_PRESETS[args.explain_preset],
        **summarise_scores(rows),
        "known_word_rate": (known_word_rate([r["explanation"] for r in rows], answer_vocabulary(args.vocabulary_from))
                            if args.vocabulary_from else None),
        "accuracy": sum(r["correct"] for r in rows) / len(rows),
        "judge": judge,
        "labels": labels,
        "num_images": len(rows),
        "num_skipped": len(skipped),
        "skipped": skipped,
        "num_annotation_problems": len(annotation_problems),
        "annotation_problems": annotation_problems,
        "attributes_computed_from_pixels": {name: sum(name in r["attributes_computed"] for r in rows)
                                            for name in ("brightness", "colorfulness")},
        "seconds": seconds,
        "images_per_second": len(rows) / seconds,
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "definitions": DEFINITIONS,
        "arguments": arguments,
    }


def score_against_references(rows: list[dict], references: References, encoder, layer: int | None) -> dict:
    """metrics.json's `references`: BLEU-4, ROUGE-L and (with `encoder`, a (tokenizer, model) pair) BERTScore of
    the explanations of the images with references, and the images without one, counted and named. Adds each
    row's `rouge_l` (None without a reference)."""
    scored = [row for row in rows if row["references"]]
    without = [row["id"] for row in rows if not row["references"]]
    explanations, texts = [row["explanation"] for row in scored], [row["references"] for row in scored]
    scores = reference_scores(explanations, texts) if scored else {"bleu4": None, "bleu_signature": None,
                                                                   "rouge_l": None, "rouge_l_per_image": []}
    for row in rows:
        row["rouge_l"] = None
    for row, value in zip(scored, scores.pop("rouge_l_per_image")):
        row["rouge_l"] = value
    if without:
        logger.warning("%d of %d explained images have no reference (first: %s); they are left out of BLEU-4, "
                       "ROUGE-L and BERTScore and listed in metrics.json", len(without), len(rows), without[0])
    return {
        "source": references.source,
        "types": list(references.types) if references.types is not None else None,
        "images_with_reference": len(scored),
        "images_without_reference": len(without),
        "without_reference": without,
        "references_per_image": sum(map(len, texts)) / len(scored) if scored else None,
        "references_unmatched": references.unmatched,
        **scores,
        "bertscore": ({"model": encoder[1].name_or_path, **bertscore(explanations, texts, *encoder, layer)}
                      if encoder is not None and scored else None),
    }


def write_reasoning_report(output_dir: str | Path, metrics: dict, rows: list[dict]) -> None:
    """Writes metrics.json and predictions.jsonl (one row per explained image), each whole or not at all, and logs
    the headline scores."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(folder / "predictions.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    logger.info("consistency %.3f, grounding %s, contradiction rate %s on %d images; wrote %s",
                metrics["consistency"], metrics["grounding"], metrics["contradiction_rate"], len(rows), output_dir)


def check_judge(judge: dict | None, rows: list[dict], args: EvalArguments) -> None:
    """Fails the run when it asked for the judge's scores and did not get them all, keeping what it wrote."""
    failure = judge_failure(judge, rows)
    if failure is not None:
        raise ValueError(f"{failure}. The explanations, their offline scores and the judge's counts are in "
                         f"{str(Path(args.output_dir) / 'metrics.json')!r}; fix the cause and rerun the same command "
                         "(answers already received are cached; only the others are sent).")
