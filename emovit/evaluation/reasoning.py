"""The reasoning evaluation behind `evaluate.py --task reasoning`: explain every labelled image of a split, score
each explanation offline (`emovit.evaluation.explanations`: emotion consistency, attribute grounding, contradictions),
optionally have an LLM judge it (`emovit.evaluation.judge`), and write metrics.json and predictions.jsonl.

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
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm

from dataset_builder.attributes import complete_attributes, normalise_attributes
from dataset_builder.llm_client import redact_url
from emovit.inference.loading import DTYPES, check_max_new_tokens, load_model
from emovit_utils.files import atomic_write_text
from modeling_emovit import EXPLANATION_PRESETS

from .arguments import EvalArguments
from .data import EvalData, load_eval_data
from .explanations import DEFINITIONS, answer_vocabulary, known_word_rate, score_explanation, summarise_scores
from .judge import judge_failure, judge_rows, judge_settings


logger = logging.getLogger(__name__)


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


def evaluate_reasoning(args: EvalArguments) -> dict:
    """Explains every image of split `args.split` of `args.dataset` with `args.model` (preset
    `args.explain_preset`), scores the explanations, optionally has an LLM judge them, and writes metrics.json and
    predictions.jsonl into `args.output_dir`. Returns metrics.json's content on every process."""
    accelerator = Accelerator()
    # The judge's settings are checked (key, URL, prices) before the model spends time on explanations.
    judge_client = judge_settings(args) if args.judge_model else None

    # ---- model and data
    model, processor = load_model(args.model, DTYPES[args.dtype])
    check_max_new_tokens(model.config, args.max_new_tokens)
    model.to(accelerator.device)
    labels = list(model.config.emotion_labels)
    data = load_eval_data(args.dataset, args.split)
    if args.max_images is not None:
        data.ids, data.labels = data.ids[: args.max_images], data.labels[: args.max_images]
    unknown = sorted(set(data.labels) - set(labels))
    if unknown:
        raise ValueError(f"The dataset's labels {unknown} are not among the model's {labels}. --task reasoning "
                         "checks explanations against the model's own emotion words, so it needs a dataset "
                         "labelled with them (no --label_map).")

    # ---- explanations, this process's share
    with accelerator.split_between_processes(list(range(len(data.ids)))) as local_indices:
        local_indices = list(local_indices)
    started = time.perf_counter()
    progress = tqdm(total=len(local_indices), unit="img", disable=not accelerator.is_local_main_process,
                    desc=f"explain ({args.explain_preset})")
    local_rows, unreadable = [], []
    for start in range(0, len(local_indices), args.batch_size):
        local_rows += explain_batch(model, processor, data, local_indices[start : start + args.batch_size], args,
                                    labels, unreadable)
        progress.update(len(local_indices[start : start + args.batch_size]))
    progress.close()
    rows = gather_object(local_rows)
    unreadable = gather_object(unreadable)
    seconds = time.perf_counter() - started
    if not rows:
        raise ValueError(f"None of the {len(data.ids)} images of {args.dataset!r} ({args.split}) could be read; "
                         f"first error: {unreadable[0]['reason'] if unreadable else 'on another process'}")
    if not accelerator.is_main_process:
        return broadcast_object_list([None])[0]

    # ---- metrics, judge and report (main process)
    assert [r["index"] for r in rows] == sorted(r["index"] for r in rows), "gathered rows out of dataset order"
    skipped = data.skipped + [{"id": data.ids[u["index"]], "reason": u["reason"]}
                              for u in sorted(unreadable, key=lambda u: u["index"])]
    annotation_problems = [{"id": r["id"], "reason": r.pop("annotation_problem")} for r in rows
                           if r.get("annotation_problem")]
    for row in rows:
        row.pop("annotation_problem", None)
        row.pop("index")
    judge = judge_rows(rows, args, judge_client) if judge_client is not None else None
    arguments = asdict(args)
    arguments["judge_base_url"] = redact_url(args.judge_base_url)
    metrics = {
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
    write_reasoning_report(args.output_dir, metrics, rows)
    logger.info("consistency %.3f, grounding %s, contradiction rate %s on %d images; wrote %s",
                metrics["consistency"], metrics["grounding"], metrics["contradiction_rate"], len(rows),
                args.output_dir)
    # The other processes leave with the metrics now, so a failed judge ends this process instead of hanging them.
    metrics = broadcast_object_list([metrics])[0]
    failure = judge_failure(judge, rows)
    if failure is not None:
        # The run asked for the judge's scores and did not get them all: it fails, keeping what it wrote.
        raise ValueError(f"{failure}. The explanations, their offline scores and the judge's counts are in "
                         f"{str(Path(args.output_dir) / 'metrics.json')!r}; fix the cause and rerun the same command "
                         "(answers already received are cached; only the others are sent).")
    return metrics


def explain_batch(model, processor, data: EvalData, indices: list[int], args: EvalArguments, labels: list[str],
                  unreadable: list[dict]) -> list[dict]:
    """Explains and scores the images `indices`; one row per readable image (unreadable ones go to `unreadable`
    with their error, and are counted by the run)."""
    images, batch, errors = data.read_images(indices)  # a corrupt file is counted and reported; the others explained
    unreadable += [{"index": index, "reason": reason} for index, reason in errors.items()]
    if not batch:
        return []
    with torch.inference_mode():
        result = model.explain(images, processor, preset=args.explain_preset, method=args.method,
                               max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    rows = []
    for row, (index, image) in enumerate(zip(batch, images)):
        annotation_path = data.annotation_paths[index] if data.annotation_paths is not None else None
        attributes, computed, problem = image_attributes(annotation_path, image)
        label, prediction = data.labels[index], result.labels[row]
        scores = score_explanation(result.explanations[row], label, prediction, labels, attributes)
        rows.append({"index": index, "id": data.ids[index], "label": label, "prediction": prediction,
                     "correct": prediction == label, "explanation": result.explanations[row], **scores,
                     "attributes": attributes, "attributes_computed": computed, "annotation_problem": problem})
    return rows


def write_reasoning_report(output_dir: str | Path, metrics: dict, rows: list[dict]) -> None:
    """Writes metrics.json and predictions.jsonl (one row per explained image), each whole or not at all."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(output_dir / "predictions.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
