"""The prediction run behind predict.py: classify (or explain) every image of a list of files, in batches, and gather
one line per image from all processes.

Under `accelerate launch` / `torchrun` each process takes a contiguous share of the sorted files
(`emovit.distributed.run_in_shares`), and the main process gets the lines of all of them in file order, each image
once, exactly as a one-process run gives them.

A line is `{"path", "label", "scores": [{"label", "score"}, ...]}` with the scores sorted from most to least likely
(`top_k` of them), plus `"text"` (the generated answer, `--method generate`), or, with `explain`, `"explanation"`,
`"mentioned"` and `"agreement"` as [`EmoVitForConditionalGeneration.explain`] gives them (explain keeps the label
of a generated answer, not its text). An image that cannot be read, or that the processor refuses (e.g. 1x1 pixels),
gets `{"path", "error"}` with the reason instead: the output has one line per image found, and the summary counts
and lists the skipped ones.
"""

import json
import time
from collections import Counter

import torch
from accelerate import Accelerator

from emovit.distributed import run_in_shares
from emovit_utils.files import atomic_write_text
from modeling_emovit import ranked_scores

from .arguments import PredictArguments
from .files import ImageFiles, read_image
from .loading import DTYPES, load_model


def predict_images(args: PredictArguments, files: ImageFiles) -> tuple[list[dict] | None, dict | None]:
    """Predicts on `files.paths` with the model `args.model`. Returns the lines (file order) and the summary (see
    `summarise`) on the main process, and (None, None) on the others; every process of a launch must call it."""
    accelerator = Accelerator()  # reads the launch's settings (processes, device; ACCELERATE_USE_CPU under torchrun)

    # ---- model
    model, processor = load_model(args.model, DTYPES[args.dtype], args.quantization)
    model.to(accelerator.device)

    # ---- prediction: each process its share of the files, all lines in file order on every process
    started = time.perf_counter()
    lines = run_in_shares(accelerator, files.paths, lambda paths: predict_batch(model, processor, paths, args),
                          args.batch_size, "explaining" if args.explain else "predicting")
    seconds = time.perf_counter() - started

    # ---- the summary (main process)
    if not accelerator.is_main_process:
        return None, None
    assert [line["path"] for line in lines] == files.paths, "gathered lines out of file order"
    return lines, summarise(lines, files, seconds, accelerator.num_processes, list(model.config.emotion_labels))


def predict_batch(model, processor, paths: list[str], args: PredictArguments) -> list[dict]:
    """One line per path, in order: the prediction, or `{"path", "error"}` for an image that could not be read or
    that the model's processor refused."""
    lines, images, readable = {}, [], []
    for path in paths:
        try:
            images.append(read_image(path, args.max_image_pixels))
            readable.append(path)
        except ValueError as e:
            lines[path] = {"path": path, "error": str(e)}
    if readable:
        try:
            rows = model_rows(model, processor, images, args)
        except ValueError:
            # The processor checks a batch as a whole (an image under 2 pixels a side refuses all of it): each image
            # alone finds the ones it refuses, and the others are predicted.
            rows = [_row_or_error(model, processor, image, args) for image in images]
        for path, row in zip(readable, rows):
            lines[path] = {"path": path, **row}
    return [lines[path] for path in paths]


def _row_or_error(model, processor, image, args: PredictArguments) -> dict:
    try:
        return model_rows(model, processor, [image], args)[0]
    except ValueError as e:
        return {"error": f"The model's processor refused this {image.width}x{image.height} image: {e}"}


def model_rows(model, processor, images: list, args: PredictArguments) -> list[dict]:
    """The model's answer for each image as a line without its path."""
    if args.explain:
        options = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
        with torch.inference_mode():
            result = model.explain(images, processor, preset=args.preset or "label", method=args.method,
                                   batch_size=args.batch_size, **options)
        # explain() classifies first and keeps the label, not the answer text: lines have no "text" here.
        return result.rows(list(model.config.emotion_labels), top_k=args.top_k)
    result = model.classify(images, processor, method=args.method, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size)
    rows = [{"label": label, "scores": ranked_scores(scores, model.config.emotion_labels, args.top_k)}
            for label, scores in zip(result.labels, result.scores.tolist())]
    if args.method == "generate":
        for row, text in zip(rows, result.texts):
            row["text"] = text
    return rows


def summarise(lines: list[dict], files: ImageFiles, seconds: float, num_processes: int, labels: list[str]) -> dict:
    """The run in numbers: images found, predicted and skipped (each with its reason), how often each label was
    predicted (most frequent first), invalid generated answers, with --explain the agreement counts and the images
    whose explanation names another emotion, the files passed over by extension, and the speed (images predicted
    per second of reading and predicting; model loading left out)."""
    predicted = [line for line in lines if "error" not in line]
    counts = Counter(line["label"] for line in predicted if line["label"] is not None)
    summary = {
        "num_images": len(lines),
        "num_predicted": len(predicted),
        "num_skipped": len(lines) - len(predicted),
        "skipped": [line for line in lines if "error" in line],
        "label_counts": {label: counts[label]
                         for label in sorted(counts, key=lambda label: (-counts[label], labels.index(label)))},
        "num_invalid": sum(line["label"] is None for line in predicted),
        "not_images": files.not_images,
        "seconds": seconds,
        "images_per_second": len(predicted) / seconds if seconds > 0 else 0.0,
        "num_processes": num_processes,
    }
    if any("agreement" in line for line in predicted):
        summary["agreement_counts"] = dict(Counter(line["agreement"] for line in predicted))
        # An explanation that names another emotion than its label contradicts the prediction: named, not averaged.
        summary["names_other"] = [line["path"] for line in predicted if line["agreement"] == "names_other"]
    return summary


def write_predictions(path: str, lines: list[dict]) -> None:
    """Writes the lines as JSONL, whole: a reader never sees half of the file, and a failed run leaves the previous
    file as it was."""
    atomic_write_text(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
