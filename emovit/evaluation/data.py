"""Evaluation data: the images and labels of one split, from an EmoSet root, an ImageFolder, a folder written by
`Dataset.save_to_disk` or holding parquet files, or a Hub dataset id; and the reference answers of its images
(`load_references`: a dataset_builder output folder built from that split, or a JSONL file), which `--task reasoning`
scores explanations against."""

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from PIL import Image

from dataset_builder import INSTRUCTION_TYPES, read_summary
from dataset_builder.build_folder import read_written_records
from dataset_builder.emoset import is_emoset_root, read_split
from modeling_emovit.configuration_emovit import normalise_label
from modeling_emovit.image_utils import IMAGE_DECODE_ERRORS, open_image


@dataclass
class EvalData:
    """The images of one split: ids, labels (normalised), where to read each image from, and the entries the reader
    left out (`skipped`: `{"id", "reason"}`), and for datasets that publish them the label distributions."""

    ids: list[str]
    labels: list[str]
    paths: list[str] | None = None  # image files (EmoSet root, ImageFolder)
    relative_paths: list[str] | None = None  # the same, relative to the dataset root (as instruction records say)
    table: datasets.Dataset | None = None  # a `datasets` split with an image column
    image_column: str = "image"
    skipped: list[dict] = field(default_factory=list)
    # EmoSet's per-image annotation files (scene, objects, brightness, ...; None where an entry has none), for the
    # reasoning evaluation's grounding checks. None for layouts without annotations.
    annotation_paths: list[str | None] | None = None
    # Per image, the annotators' probability of each label (Emotion6's ground truth), or None without one.
    distributions: list[dict[str, float]] | None = None

    def keep_first(self, count: int | None) -> None:
        """Cuts the split to its first `count` images (`--max_images`); None keeps them all. Per-image lists are
        read by index, so only the ids and labels, which set the split's length, are cut."""
        if count is not None:
            self.ids, self.labels = self.ids[:count], self.labels[:count]

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


    def read_images(self, indices: list[int]) -> tuple[list[Image.Image], list[int], dict[int, str]]:
        """Images `indices`, skipping those that cannot be read: (the images, their indices, {index: error} for the
        others). One corrupt file costs its own image, not its batch."""
        images, readable, errors = [], [], {}
        for index in indices:
            try:
                images.append(self.image(index))
                readable.append(index)
            except ValueError as e:
                errors[index] = str(e)
        return images, readable, errors


# A run keeps the images it could not read among its rows, as rows `{"index", "reason"}` of their own, so that they
# reach the main process with the other rows of a multi-process run.


def unreadable_rows(errors: dict[int, str]) -> list[dict]:
    """`read_images`' {index: error} as rows `{"index", "reason"}`."""
    return [{"index": index, "reason": reason} for index, reason in errors.items()]


def split_off_unreadable(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the rows of images that were read, the rows of those that could not be), each in the order given."""
    return [row for row in rows if "reason" not in row], [row for row in rows if "reason" in row]


def check_readable(rows: list[dict], unreadable: list[dict], count: int, source: str) -> None:
    """Raises when none of the `count` images of `source` could be read (no `rows`), quoting the first error."""
    if not rows:
        raise ValueError(f"None of the {count} images of {source} could be read; first error: "
                         f"{unreadable[0]['reason'] if unreadable else 'none recorded'}")


def skipped_entries(data: EvalData, unreadable: list[dict]) -> list[dict]:
    """metrics.json's `skipped`: the entries the reader left out, then the images that could not be read, by id and
    in dataset order, each with its reason."""
    return data.skipped + [{"id": data.ids[row["index"]], "reason": row["reason"]}
                           for row in sorted(unreadable, key=lambda row: row["index"])]


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def load_eval_data(dataset: str, split: str) -> EvalData:
    """Split `split` of `dataset` (an EmoSet root, ImageFolder, save_to_disk or parquet folder, or Hub id)."""
    path = Path(dataset)
    if path.is_dir() and not is_saved_dataset(path) and (is_emoset_root(path) or not any(path.rglob("*.parquet"))):
        return _load_image_files(path, dataset, split)
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
    return _from_table(table, dataset, split)


def _load_image_files(path: Path, dataset: str, split: str) -> EvalData:
    """An EmoSet root or an ImageFolder, through the EmoSet reader (which counts what it leaves out)."""
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
        relative_paths=[item.relative_path for item in listing.items],
        skipped=[{"id": skip.item, "reason": skip.reason} for skip in listing.skipped],
        annotation_paths=[item.annotation_path for item in listing.items],
    )


def _from_table(table: datasets.Dataset, dataset: str, split: str) -> EvalData:
    """A `datasets` split: an `image` column, the label from `emotion` or `label`, ids from `image_id` or `id`."""
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


# ---------------------------------------------------------------------------------------------- reference answers

REFERENCE_TYPES = tuple(t for t in INSTRUCTION_TYPES if t != "categorical")  # a categorical answer is a label only


@dataclass
class References:
    """The reference answers of a split's images: `texts[i]` lists image i's (empty: none), read from `source`.
    `unmatched` counts the references whose image is not among the evaluated ones (another split, or cut by
    --max_images)."""

    source: str
    texts: list[list[str]]
    unmatched: int
    types: tuple[str, ...] | None = None  # the instruction types read, for a dataset_builder folder


def _path_key(path: str) -> str:
    return os.path.normpath(str(path)).replace(os.sep, "/")


def load_references(source: str, data: EvalData, types: tuple[str, ...] = ("reasoning",)) -> References:
    """The reference answers of `data`'s images (after any --max_images cut) from `source`:
    - a dataset_builder output folder (summary.json, instructions.jsonl) built from the evaluated split: the answers
      of its records of `types`, matched to images by their path inside the EmoSet root;
    - a JSONL file, one `{"id": ..., "reference": ...}` or `{"image": ..., "reference": ...}` per line: `id` is the
      image id the split gives (as predictions.jsonl shows it), `image` its path relative to the dataset root;
      `reference` a text or a list of texts. Several lines for one image add references.

    Raises ValueError naming the file, line and field of a malformed line, and when no reference matches any image.
    """
    path = Path(source)
    if path.is_dir():
        summary = read_summary(path)
        pairs = [(number, "image", record["image"], [record["conversations"][1]["value"]])
                 for number, record in enumerate(read_written_records(path), start=1) if record["type"] in types]
        built_from = f"split {summary.get('args', {}).get('split')!r} of {summary['emoset_root']!r}"
    else:
        pairs = list(_reference_lines(path))
        built_from = None
    if any(field_name == "image" for _, field_name, _, _ in pairs) and data.relative_paths is None:
        raise ValueError(f"--references {source!r} matches images by path ('image'), but the evaluated dataset is a "
                         "table without image paths; give a JSONL whose lines name each image by 'id' instead.")
    by_id = {image_id: index for index, image_id in enumerate(data.ids)}
    by_path = {_path_key(p): index for index, p in enumerate(data.relative_paths[:len(data.ids)])} \
        if data.relative_paths is not None else {}
    texts, unmatched = [[] for _ in data.ids], 0
    for _, field_name, key, references in pairs:
        index = by_id.get(key) if field_name == "id" else by_path.get(_path_key(key))
        if index is None:
            unmatched += 1
        else:
            texts[index].extend(references)
    if not any(texts):
        where = f" (built from {built_from})" if built_from else ""
        example = pairs[0][2] if pairs else "none"
        raise ValueError(f"--references {source!r}{where} has {len(pairs)} references, none of them for the "
                         f"{len(data.ids)} evaluated images (first reference names {example!r}; the split's first "
                         f"image is id {data.ids[0]!r}"
                         + (f", path {data.relative_paths[0]!r}" if data.relative_paths else "")
                         + "). Give references of the evaluated split (--split), e.g. a dataset_builder folder built "
                         "with --split of the same name.")
    return References(source=str(source), texts=texts, unmatched=unmatched,
                      types=tuple(types) if path.is_dir() else None)


def _reference_lines(path: Path):
    """(line number, "id" or "image", its value, [reference texts]) per line of a references JSONL file."""
    if not path.is_file():
        raise ValueError(f"--references {str(path)!r} is neither a file nor a dataset_builder output folder; give a "
                         "JSONL of {\"id\" or \"image\", \"reference\"} lines or a folder built by dataset_builder.")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"--references {str(path)!r}, line {number}"
            try:
                entry = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{where} is not valid JSON ({e}); fix or remove the line.") from e
            if not isinstance(entry, dict):
                raise ValueError(f"{where} holds a {type(entry).__name__}; each line must be an object "
                                 "{\"id\" or \"image\": ..., \"reference\": ...}.")
            keys = [name for name in ("id", "image") if name in entry]
            if len(keys) != 1 or not isinstance(entry[keys[0]], str) or not entry[keys[0]].strip():
                raise ValueError(f"{where}: field 'id' or 'image' must be given, one of them, as a non-empty text "
                                 f"(found {({k: entry[k] for k in keys})!r}); 'id' is the image id of the split, "
                                 "'image' its path relative to the dataset root.")
            reference = entry.get("reference")
            texts = reference if isinstance(reference, list) else [reference]
            if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise ValueError(f"{where}: field 'reference' is {str(reference)[:80]!r}; give a non-empty text or a "
                                 "list of non-empty texts.")
            yield number, keys[0], entry[keys[0]].strip(), texts
