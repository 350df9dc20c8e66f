"""Evaluate an EmoVIT (or InstructBLIP) model on an emotion classification split.

    python evaluate.py --model runs/emovit --dataset data/EmoSet-118K --split test --method score \
        --batch_size 16 --output_dir runs/eval-emoset

    accelerate launch --num_processes 8 evaluate.py --model runs/emovit --dataset data/EmoSet-118K --split test \
        --method generate --batch_size 16 --dtype bfloat16 --output_dir runs/eval-emoset-generate

    python evaluate.py configs/eval_emoset.yaml   # the same arguments from one JSON or YAML file

Tried on CPU (2 cores) with the tiny random model (`python -m modeling_emovit.tiny`) and the synthetic EmoSet
sample (`python -m dataset_builder synth`), in one process and in two
(`ACCELERATE_USE_CPU=true torchrun --standalone --nproc_per_node 2 evaluate.py ...`, gloo); not yet on GPUs.

`--dataset` is an EmoSet root (info.json + split files), an ImageFolder (one sub-folder per label, optionally under
split folders), a folder written by `Dataset.save_to_disk` / holding parquet files, or a Hub dataset id (an `image`
column and an `emotion` or `label` column, ClassLabel or string).

Outputs in --output_dir, each written to a temporary file and then renamed, so a crash never leaves half a file:
- metrics.json: accuracy, macro-F1, per-class accuracy, invalid-answer rate, confusion matrix, images/s, the
  arguments; with --prompt_variants N also each instruction's accuracy and their spread. Entries the dataset reader
  leaves out and images that cannot be decoded are counted (`num_skipped`) and listed with their reasons
  (`skipped`); the metrics cover the other images (`num_images`).
- predictions.jsonl: one line per image (and instruction variant): id, label, prediction, correct, and the
  per-label probabilities (score) or the generated text (generate).
- confusion_matrix.png.

Zero-shot on other label sets (--label_map): the model always answers among its own labels (the instruction must
name all of them); a label map then sends each model label to a dataset label or drops it (null). With `score` the
probabilities of the model labels that map to the same dataset label are summed, and renormalised over the kept
labels; with `generate` the parsed model label is mapped, and an answer naming a dropped label is invalid. Dataset
labels that are themselves model labels are mapped too, so EmoSet's own test split can be scored in binary mode.
Presets (model labels must be EmoSet's 8):
- binary: amusement, awe, contentment, excitement -> positive; anger, disgust, fear, sadness -> negative
  (EmoSet's own two-class split).
- emotion6 (Emotion6: anger, disgust, fear, joy, sadness, surprise): amusement, contentment, excitement -> joy;
  awe -> surprise (awe is the response to something vast and unexpected, and Emotion6 has no other label for
  it); anger, disgust, fear, sadness -> themselves.
- unbiasedemo (UnbiasedEmo: anger, fear, joy, love, sadness, surprise): amusement, excitement -> joy;
  contentment -> love (Mikels' contentment images are largely couples, families and tenderness, which is what
  UnbiasedEmo calls love); awe -> surprise; anger, fear, sadness -> themselves; disgust -> dropped.
Pass a JSON file `{"amusement": "joy", ..., "disgust": null}` naming every model label for any other mapping.
"""

import os
import sys


# This file is called `evaluate.py`, like the `evaluate` library. Run as `python evaluate.py`, its own directory
# comes first on sys.path and `import evaluate` would find this script instead of the library; imported as
# `evaluate` (`python -c "import evaluate"` in the repository root) it would find itself, half-initialised. So: hide
# this directory while importing the library, and if this file is the `evaluate` module being imported, step aside
# so that the library takes the name (the import system hands out whatever `sys.modules["evaluate"]` holds once
# this file has run).
_SCRIPT_DIR = os.path.dirname(os.path.abspath(__file__))
_saved_sys_path = list(sys.path)
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _SCRIPT_DIR]
if __name__ == "evaluate":
    del sys.modules["evaluate"]
try:
    import evaluate
finally:
    sys.path[:] = _saved_sys_path

import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import datasets  # noqa: E402
import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import broadcast_object_list, gather_object  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from transformers import AutoConfig, HfArgumentParser  # noqa: E402

from dataset_builder.emoset import is_emoset_root, read_split  # noqa: E402
from modeling_emovit.io_utils import IMAGE_DECODE_ERRORS, atomic_write, atomic_write_text, open_image  # noqa: E402
from modeling_emovit import (  # noqa: E402
    CATEGORICAL_INSTRUCTION_VARIANTS,
    EMOSET_EMOTIONS,
    EmoVitForConditionalGeneration,
    EmoVitProcessor,
    format_categorical_instruction,
)


METRIC_PATH = os.path.join(_SCRIPT_DIR, "metrics", "emotion_classification")
MODEL_TYPES = ("emovit", "instructblip")
METHODS = ("score", "generate")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_POSITIVE, _NEGATIVE = EMOSET_EMOTIONS[:4], EMOSET_EMOTIONS[4:]
LABEL_MAP_PRESETS = {
    "binary": {**{label: "positive" for label in _POSITIVE}, **{label: "negative" for label in _NEGATIVE}},
    "emotion6": {
        "amusement": "joy", "awe": "surprise", "contentment": "joy", "excitement": "joy",
        "anger": "anger", "disgust": "disgust", "fear": "fear", "sadness": "sadness",
    },
    "unbiasedemo": {
        "amusement": "joy", "awe": "surprise", "contentment": "love", "excitement": "joy",
        "anger": "anger", "disgust": None, "fear": "fear", "sadness": "sadness",
    },
}


@dataclass
class EvalArguments:
    model: str = field(metadata={"help": "EmoVIT or InstructBLIP folder, or Hub id."})
    dataset: str = field(
        metadata={"help": "EmoSet root, ImageFolder, save_to_disk/parquet folder, or Hub dataset id."}
    )
    output_dir: str = field(metadata={"help": "Where metrics.json, predictions.jsonl, confusion_matrix.png go."})
    split: str = field(default="test", metadata={"help": "Split to evaluate."})
    method: str = field(
        default="score",
        metadata={"help": "score: most likely label answer (never invalid); generate: greedy answer, parsed."},
    )
    batch_size: int = field(default=16, metadata={"help": "Images per forward pass (per process)."})
    label_map: str | None = field(
        default=None,
        metadata={"help": f"JSON file mapping model labels to dataset labels, or a preset: {list(LABEL_MAP_PRESETS)}."},
    )
    prompt_variants: int = field(
        default=1,
        metadata={"help": f"Evaluate under the first N of {len(CATEGORICAL_INSTRUCTION_VARIANTS)} paraphrased "
                          "instructions (1 = the training instruction only) and report the accuracy spread."},
    )
    dtype: str = field(default="float32", metadata={"help": f"Model weights dtype: {list(DTYPES)}."})
    max_images: int | None = field(default=None, metadata={"help": "Evaluate only the first N images (smoke runs)."})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"--method is {self.method!r}; use one of {list(METHODS)}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype is {self.dtype!r}; use one of {list(DTYPES)}.")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size is {self.batch_size}; use a positive number of images per batch.")
        if not 1 <= self.prompt_variants <= len(CATEGORICAL_INSTRUCTION_VARIANTS):
            raise ValueError(
                f"--prompt_variants is {self.prompt_variants}; there are {len(CATEGORICAL_INSTRUCTION_VARIANTS)} "
                f"instruction variants, so use 1 to {len(CATEGORICAL_INSTRUCTION_VARIANTS)}."
            )
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"--max_images is {self.max_images}; use a positive number or leave it unset.")


def normalise_label(label) -> str:
    # The same normalisation EmoVitConfig applies to its labels, so "Joy " in a dataset matches "joy".
    return " ".join(str(label).strip().lower().split())


# ----------------------------------------------------------------------------------------------------- model


def load_model(path: str, dtype: torch.dtype):
    """Loads the model after checking that `path` really is an EmoVIT or InstructBLIP checkpoint."""
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(
            f"--model {path!r} is a folder without config.json, so it is not a saved model. Pass the folder that "
            "`save_pretrained` wrote (EmoVIT or InstructBLIP), e.g. the output of `python -m modeling_emovit.tiny`."
        )
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(
            f"--model {path!r} could not be read as a model configuration ({type(e).__name__}: {e}). Pass an "
            "EmoVIT or InstructBLIP folder or Hub id."
        ) from e
    if config.model_type not in MODEL_TYPES:
        raise ValueError(
            f"--model {path!r} holds a {config.model_type!r} model; evaluate.py needs one of {list(MODEL_TYPES)} "
            "(an EmoVIT checkpoint, or a Salesforce InstructBLIP one)."
        )
    model = EmoVitForConditionalGeneration.from_pretrained(path, dtype=dtype).eval()
    # The processor's label list must be the model's: build it from the config, not from whatever the folder
    # says (an InstructBLIP folder has no EmoVIT processor settings at all).
    processor = EmoVitProcessor.from_pretrained(path, emotion_labels=list(model.config.emotion_labels))
    model.check_processor(processor)
    return model, processor


# ----------------------------------------------------------------------------------------------------- labels


def resolve_label_map(label_map: str | None, model_labels: list[str]) -> tuple[dict, list[str]]:
    """Returns ({model label: dataset label or None}, the dataset labels in order of first appearance)."""
    if label_map is None:
        return {label: label for label in model_labels}, list(model_labels)
    if label_map in LABEL_MAP_PRESETS:
        mapping, source = LABEL_MAP_PRESETS[label_map], f"preset {label_map!r}"
    elif os.path.isfile(label_map):
        try:
            mapping = json.loads(Path(label_map).read_text())
        except ValueError as e:
            raise ValueError(f"--label_map file {label_map!r} is not valid JSON ({e}).") from e
        source = f"file {label_map!r}"
        if not isinstance(mapping, dict):
            raise ValueError(
                f"--label_map {source} holds a {type(mapping).__name__}; it must be a JSON object mapping each "
                'model label to a dataset label or null, e.g. {"amusement": "positive", "disgust": null}.'
            )
    else:
        raise ValueError(
            f"--label_map {label_map!r} is neither a preset ({list(LABEL_MAP_PRESETS)}) nor an existing JSON file."
        )
    mapping = {normalise_label(k): (None if v is None else normalise_label(v)) for k, v in mapping.items()}
    missing = [label for label in model_labels if label not in mapping]
    unknown = [label for label in mapping if label not in model_labels]
    if missing or unknown:
        raise ValueError(
            f"--label_map {source} must name every model label exactly once (null drops one). Model labels: "
            f"{model_labels}; missing from the map: {missing}; in the map but not model labels: {unknown}."
        )
    targets = list(dict.fromkeys(v for v in (mapping[label] for label in model_labels) if v is not None))
    if len(targets) < 2:
        raise ValueError(f"--label_map {source} leaves {targets} as the dataset labels; it needs at least two.")
    return {label: mapping[label] for label in model_labels}, targets


def reference_indices(dataset_labels: list[str], mapping: dict, targets: list[str]) -> list[int]:
    """Dataset labels -> indices into `targets`. A dataset label that is a model label goes through the map."""
    indices, unknown = [], set()
    for label in dataset_labels:
        if label in targets:
            indices.append(targets.index(label))
        elif mapping.get(label) is not None:
            indices.append(targets.index(mapping[label]))
        else:
            unknown.add(label)
    if unknown:
        raise ValueError(
            f"The dataset has labels {sorted(unknown)} that the model's labels do not cover (after the label map, "
            f"the model predicts {targets}). Pass --label_map with a preset ({list(LABEL_MAP_PRESETS)}) or a JSON "
            "file mapping each model label to one of the dataset's labels."
        )
    return indices


# ----------------------------------------------------------------------------------------------------- data


@dataclass
class EvalData:
    """The images of one split: ids, labels (normalised), where to read each image from, and the entries the reader
    left out (`skipped`: `{"id", "reason"}`)."""

    ids: list[str]
    labels: list[str]
    paths: list[str] | None = None  # image files (EmoSet root, ImageFolder)
    table: datasets.Dataset | None = None  # a `datasets` split with an image column
    image_column: str = "image"
    skipped: list[dict] = field(default_factory=list)

    def image(self, index: int) -> Image.Image:
        """Image `index` as 8-bit RGB, by the opener training uses; ValueError naming it when it cannot be read."""
        if self.table is None:
            return open_image(self.paths[index])
        source = f"{self.ids[index]} (row {index})"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                decoded = self.table[index][self.image_column]
        except (*IMAGE_DECODE_ERRORS, Image.DecompressionBombWarning) as e:
            raise ValueError(f"Image {source} could not be read ({type(e).__name__}: {e}).") from e
        return open_image(decoded, source=source)

def is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def load_eval_data(dataset: str, split: str) -> EvalData:
    path = Path(dataset)
    if path.is_dir() and not is_saved_dataset(path) and (is_emoset_root(path) or not any(path.rglob("*.parquet"))):
        listing = read_split(path, split)
        if not listing.items:
            raise ValueError(
                f"Split {split!r} of {dataset!r} has no usable images ({len(listing.skipped)} entries skipped, "
                f"first: {listing.skipped[:1]}). Check the split name and the image files."
            )
        return EvalData(
            ids=[item.image_id for item in listing.items],
            labels=[normalise_label(item.emotion) for item in listing.items],
            paths=[item.image_path for item in listing.items],
            skipped=[{"id": skip.item, "reason": skip.reason} for skip in listing.skipped],
        )

    if path.is_dir() and is_saved_dataset(path):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"{dataset!r} has splits {list(loaded)}, not {split!r}; pass one of them to --split.")
            loaded = loaded[split]
        table = loaded
    else:
        # A folder of parquet files, or a Hub id.
        try:
            table = datasets.load_dataset(dataset, split=split)
        except (OSError, ValueError) as e:
            raise ValueError(
                f"--dataset {dataset!r}, split {split!r}: `datasets.load_dataset` failed ({type(e).__name__}: {e}). "
                "Pass an EmoSet root, an ImageFolder, a save_to_disk or parquet folder, or a Hub dataset id (which "
                "needs network access or the local Hub cache)."
            ) from e
    if "image" not in table.column_names:
        raise ValueError(f"Dataset {dataset!r} has columns {table.column_names} but no 'image' column.")
    label_column = next((name for name in ("emotion", "label") if name in table.column_names), None)
    if label_column is None:
        raise ValueError(
            f"Dataset {dataset!r} has columns {table.column_names}; evaluate.py reads the label from an 'emotion' or "
            "'label' column (ClassLabel or string). Rename the label column."
        )
    if len(table) == 0:
        raise ValueError(f"Split {split!r} of {dataset!r} is empty; pick a split with images.")
    feature = table.features[label_column]
    raw = list(table[label_column])
    if isinstance(feature, datasets.ClassLabel):
        labels = [feature.int2str(int(value)) for value in raw]
    elif isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        labels = raw
    else:
        raise ValueError(
            f"Column {label_column!r} of {dataset!r} is {feature}; it must be a ClassLabel or a string column."
        )
    id_column = next((name for name in ("image_id", "id") if name in table.column_names), None)
    ids = [str(value) for value in table[id_column]] if id_column else [f"{split}/{i}" for i in range(len(table))]
    # Only the image column is decoded per batch; the labels were read above.
    return EvalData(ids=ids, labels=[normalise_label(label) for label in labels], table=table.select_columns(["image"]))


# ----------------------------------------------------------------------------------------------------- outputs


def plot_confusion_matrix(confusion: list[list[int]], invalid_per_class: list[int], labels: list[str], title: str):
    matrix = [row + [invalid] for row, invalid in zip(confusion, invalid_per_class)]
    columns = labels + ["(invalid)"]
    if not any(invalid_per_class):
        matrix, columns = confusion, labels
    size = 1.0 + 0.6 * len(columns)
    figure = Figure(figsize=(size + 1.5, size))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("prediction")
    axes.set_ylabel("label")
    axes.set_title(title)
    peak = max(max(row) for row in matrix) or 1
    for r, row in enumerate(matrix):
        for c, count in enumerate(row):
            axes.text(c, r, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    figure.tight_layout()
    return figure


# ----------------------------------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    """Runs the evaluation; returns metrics.json's content (on every process of a multi-process launch)."""
    parser = HfArgumentParser(EvalArguments)
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        (args,) = parser.parse_json_file(os.path.abspath(argv[0]))
    elif len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        (args,) = parser.parse_yaml_file(os.path.abspath(argv[0]))
    else:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    accelerator = Accelerator()

    # ---- model
    model, processor = load_model(args.model, DTYPES[args.dtype])
    model.to(accelerator.device)
    model_labels = list(model.config.emotion_labels)
    mapping, targets = resolve_label_map(args.label_map, model_labels)

    # ---- data
    data = load_eval_data(args.dataset, args.split)
    if args.max_images is not None:
        data.ids, data.labels = data.ids[: args.max_images], data.labels[: args.max_images]
    references = reference_indices(data.labels, mapping, targets)
    metric = evaluate.load(METRIC_PATH, keep_in_memory=True) if accelerator.is_main_process else None

    # ---- evaluation, once per instruction variant
    # Each process takes a contiguous slice; gather_object concatenates them in rank order, i.e. in dataset order.
    with accelerator.split_between_processes(list(range(len(data.ids)))) as local_indices:
        local_indices = list(local_indices)
    target_of = [targets.index(mapping[label]) if mapping[label] is not None else None for label in model_labels]
    variants, rows, seconds = [], [], 0.0
    unreadable = {}  # index -> why its image could not be read (this process's share)
    for variant in range(args.prompt_variants):
        instruction = format_categorical_instruction(model_labels, CATEGORICAL_INSTRUCTION_VARIANTS[variant])
        local_rows = []
        started = time.perf_counter()
        progress = tqdm(total=len(local_indices), unit="img", disable=not accelerator.is_local_main_process,
                        desc=f"{args.method}, instruction {variant + 1}/{args.prompt_variants}")
        for start in range(0, len(local_indices), args.batch_size):
            images, batch = [], []
            for index in local_indices[start : start + args.batch_size]:
                if index in unreadable:
                    continue
                try:
                    images.append(data.image(index))
                    batch.append(index)
                except ValueError as e:  # a corrupt file is counted and reported; the others are evaluated
                    unreadable[index] = str(e)
            progress.update(len(local_indices[start : start + args.batch_size]))
            if not batch:
                continue
            with torch.inference_mode():
                result = model.classify(images, processor, method=args.method, instruction=instruction)
            for row, index in enumerate(batch):
                record = {"index": index, "prompt_variant": variant}
                if args.method == "score":
                    # Probability of each dataset label = sum over the model labels that map to it, renormalised
                    # over the labels the map keeps.
                    mapped = [0.0] * len(targets)
                    for k, probability in enumerate(result.scores[row].tolist()):
                        if target_of[k] is not None:
                            mapped[target_of[k]] += probability
                    total = sum(mapped) or 1.0  # all kept labels underflowed to 0: leave the zeros
                    mapped = [p / total for p in mapped]
                    record["prediction"] = max(range(len(targets)), key=mapped.__getitem__)
                    record["scores"] = dict(zip(targets, mapped))
                else:
                    named = result.labels[row]
                    record["prediction"] = target_of[model_labels.index(named)] if named is not None else None
                    record["model_prediction"] = named
                    record["text"] = result.texts[row]
                local_rows.append(record)
        progress.close()
        gathered = gather_object(local_rows)
        seconds += time.perf_counter() - started
        if not gathered:
            raise ValueError(f"None of the {len(data.ids)} images of {args.dataset!r} ({args.split}) could be read; "
                             f"first error: {next(iter(unreadable.values()), 'on another process')}")
        if not accelerator.is_main_process:
            continue
        evaluated = [r["index"] for r in gathered]
        assert evaluated == sorted(evaluated), "gathered rows out of dataset order"
        predictions = [-1 if r["prediction"] is None else r["prediction"] for r in gathered]
        scores = metric.compute(predictions=predictions, references=[references[i] for i in evaluated],
                                label_names=targets)
        variants.append({"prompt_variant": variant, "instruction": instruction, **scores})
        rows.extend(gathered)

    unreadable_rows = gather_object([{"index": index, "reason": reason} for index, reason in unreadable.items()])
    if not accelerator.is_main_process:
        # The main process computes and writes; every caller (train.py under `accelerate launch` too) gets its
        # metrics back.
        return broadcast_object_list([None])[0]
    skipped = data.skipped + [{"id": data.ids[r["index"]], "reason": r["reason"]}
                              for r in sorted(unreadable_rows, key=lambda r: r["index"])]
    num_evaluated = len(data.ids) - len(unreadable_rows)

    # ---- metrics (the training instruction's, variant 0, at the top level)
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

    # ---- save
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2))
    lines = []
    for record in rows:
        index, prediction = record.pop("index"), record.pop("prediction")
        line = {
            "id": data.ids[index],
            "label": targets[references[index]],
            "prediction": None if prediction is None else targets[prediction],
            "correct": prediction == references[index],
            **record,
        }
        lines.append(json.dumps(line))
    atomic_write_text(output_dir / "predictions.jsonl", "\n".join(lines) + "\n")
    title = f"{Path(args.model).name} on {Path(args.dataset).name}/{args.split} ({args.method}): " \
            f"accuracy {first['accuracy']:.3f}"
    figure = plot_confusion_matrix(first["confusion_matrix"], first["invalid_per_class"], targets, title)
    atomic_write(output_dir / "confusion_matrix.png", lambda tmp: figure.savefig(tmp, format="png", dpi=120))

    print(f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
          f"invalid {metrics['invalid_rate']:.4f}, {metrics['images_per_second']:.1f} images/s "
          f"on {metrics['num_images']} images")
    if skipped:
        print(f"skipped {len(skipped)} images (listed with reasons in metrics.json), e.g. {skipped[0]['id']}: "
              f"{skipped[0]['reason']}")
    print(f"wrote {output_dir / 'metrics.json'}, {output_dir / 'predictions.jsonl'}, "
          f"{output_dir / 'confusion_matrix.png'}")
    return broadcast_object_list([metrics])[0]


if __name__ == "__main__":
    main()
