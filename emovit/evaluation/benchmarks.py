"""Readers for the visual-emotion benchmarks in the layouts their authors publish, each returning `EvalData`.

`--dataset_format` names the layout; without it `load_eval_data` reads an EmoSet root, an ImageFolder, a saved or
parquet dataset or a Hub id, which also serves the benchmarks published (or commonly kept) as one folder per label:
FI, UnbiasedEmo, Twitter I / II. The formats:

- `artphoto`: ArtPhoto (Machajdik & Hanbury 2010), every image in one folder, its label the file-name prefix before the
  first "_" (`amusement_0001.jpg`, `sad_0123.jpg`).
- `abstract`: Abstract (same authors), the images in one folder plus `ABSTRACT_groundTruth.csv`: a row per image, its
  file name in the first column and one column of votes per emotion; the label is the emotion with most votes.
- `emotion6`: Emotion6 (Peng et al. 2015), `images/<label>/<n>.jpg` plus the tab-separated `ground_truth.txt`: file
  (relative to images/), valence, arousal and the annotators' probability of each of 7 labels (6 emotions and
  neutral). The label is the image's folder; the probabilities give the KL-divergence metric (`distribution_metrics`).
- `emotionroi`: EmotionROI (Peng et al. 2016), `images/<label>/<file>` plus the split lists
  `training_testing_split/training.txt` and `testing.txt`, a line `<label>/<file>` per image.
- `webemo2`, `webemo7`, `webemo25`: WebEmo (Panda et al. 2018) images downloaded from its URL lists and kept as an
  ImageFolder (optionally under split folders) with one folder per fine-grained label; the reader relabels each image
  to the chosen level of WebEmo's hierarchy (`WEBEMO_HIERARCHY`).

ArtPhoto, Abstract and Emotion6 have no published split: their `--split` is `all` (or the default `test`), the whole
dataset, as zero-shot evaluations use them. Missing image files, malformed lines and ties are counted skips with their
reasons; a missing annotation file or an unreadable value is an error naming the file, line, field and value.
"""

import csv
import math
from pathlib import Path

from dataset_builder.emoset import resolve_inside_root
from emovit_utils.files import IMAGE_EXTENSIONS
from modeling_emovit import EMOSET_EMOTIONS
from modeling_emovit.configuration_emovit import normalise_label

from .data import EvalData, load_eval_data


DATASET_FORMATS = ("artphoto", "abstract", "emotion6", "emotionroi", "webemo2", "webemo7", "webemo25")
# The whole dataset, for benchmarks without a published split; `test` is accepted as it is evaluate.py's default.
WHOLE_DATASET_SPLITS = ("all", "test")
# ArtPhoto's file-name prefixes and Abstract's vote columns shorten two of Mikels' names.
MIKELS_ALIASES = {"sad": "sadness", "content": "contentment"}
ABSTRACT_CSV = "ABSTRACT_groundTruth.csv"
EMOTION6_GROUND_TRUTH = "ground_truth.txt"
EMOTION6_NEUTRAL = "neutral"
EMOTIONROI_SPLIT_FILES = {"train": ["training.txt"], "test": ["testing.txt"], "all": ["training.txt", "testing.txt"]}
# WebEmo's 25 fine-grained labels (spelled as its label list spells them) -> (7-class parent, sentiment).
WEBEMO_HIERARCHY = {
    "affection": ("love", "positive"), "cheerfullness": ("joy", "positive"), "confusion": ("confusion", "negative"),
    "contentment": ("joy", "positive"), "disappointment": ("sadness", "negative"), "disgust": ("anger", "negative"),
    "enthrallment": ("joy", "positive"), "envy": ("anger", "negative"), "exasperation": ("anger", "negative"),
    "gratitude": ("love", "positive"), "horror": ("fear", "negative"), "irritabilty": ("anger", "negative"),
    "lust": ("love", "positive"), "neglect": ("sadness", "negative"), "nervousness": ("fear", "negative"),
    "optimism": ("joy", "positive"), "pride": ("joy", "positive"), "rage": ("anger", "negative"),
    "relief": ("joy", "positive"), "sadness": ("sadness", "negative"), "shame": ("sadness", "negative"),
    "suffering": ("sadness", "negative"), "surprise": ("surprise", "positive"), "sympathy": ("sadness", "negative"),
    "zest": ("joy", "positive"),
}
# Folder names written with the usual spelling are read as the label list's spelling.
WEBEMO_SPELLINGS = {"cheerfulness": "cheerfullness", "irritability": "irritabilty"}


def load_benchmark(dataset: str, split: str, dataset_format: str | None = None) -> EvalData:
    """Split `split` of `dataset` read in layout `dataset_format` (one of DATASET_FORMATS), or by `load_eval_data`
    when it is None."""
    if dataset_format is None:
        return load_eval_data(dataset, split)
    if dataset_format not in DATASET_FORMATS:
        raise ValueError(f"--dataset_format is {dataset_format!r}; use one of {list(DATASET_FORMATS)} or leave it "
                         "unset for an EmoSet root, ImageFolder, saved dataset or Hub id.")
    root = Path(dataset)
    if not root.is_dir():
        raise FileNotFoundError(f"--dataset {dataset!r} is not a folder; the {dataset_format} reader needs the "
                                "dataset's root folder.")
    if dataset_format.startswith("webemo"):
        return read_webemo(root, split, level=int(dataset_format.removeprefix("webemo")))
    if dataset_format == "emotionroi":
        return read_emotionroi(root, split)
    if split not in WHOLE_DATASET_SPLITS:
        raise ValueError(f"{dataset_format} has no published split, so --split must be one of "
                         f"{list(WHOLE_DATASET_SPLITS)} (the whole dataset); got {split!r}.")
    readers = {"artphoto": read_artphoto, "abstract": read_abstract, "emotion6": read_emotion6}
    return readers[dataset_format](root)


def _mikels_label(name: str) -> str | None:
    """A Mikels emotion from ArtPhoto's / Abstract's spelling, or None for anything else."""
    label = normalise_label(name)
    label = MIKELS_ALIASES.get(label, label)
    return label if label in EMOSET_EMOTIONS else None


def _image_files(folder: Path, skipped: list) -> list[Path]:
    """The image files directly in `folder`, through the root check every reader uses (`_listed_image`): an entry
    with an image extension that is a symlink leading out of `folder`, a loop or a dangling link is recorded in
    `skipped` instead of read."""
    names = sorted(path.name for path in folder.iterdir() if path.suffix.lower() in IMAGE_EXTENSIONS)
    listed = (_listed_image(folder, name, name, skipped) for name in names)
    return [path for path in listed if path is not None]


def _listed_image(folder: Path, entry: str, where: str, skipped: list) -> Path | None:
    """The image file a listing names (`entry`, relative to `folder`), or None after recording in `skipped`, under
    `where`, why it cannot be used: a path leading outside `folder`, or a missing file."""
    try:
        path = resolve_inside_root(folder, entry)
    except ValueError as e:
        skipped.append({"id": where, "reason": str(e)})
        return None
    if not path.is_file():
        skipped.append({"id": where, "reason": f"image file {path} is missing"})
        return None
    return path


def _finish(name: str, ids: list, labels: list, paths: list, skipped: list, distributions=None) -> EvalData:
    if not ids:
        raise ValueError(f"{name}: no usable images ({len(skipped)} entries skipped, first: {skipped[:1]}). "
                         "Check that --dataset_format matches the folder's layout.")
    return EvalData(ids=ids, labels=labels, paths=paths, skipped=skipped, distributions=distributions)


def read_artphoto(root: Path) -> EvalData:
    """ArtPhoto: `root/<emotion>_<rest>.jpg`; a file whose prefix is no Mikels emotion is a counted skip."""
    ids, labels, paths, skipped = [], [], [], []
    for path in _image_files(root, skipped):
        prefix = path.name.split("_", 1)[0] if "_" in path.name else None
        label = _mikels_label(prefix) if prefix else None
        if label is None:
            skipped.append({"id": path.name, "reason": f"file-name prefix {prefix!r} is not one of ArtPhoto's "
                                                       f"emotions {list(EMOSET_EMOTIONS)} (or 'sad')"})
            continue
        ids.append(path.stem), labels.append(label), paths.append(str(path))
    return _finish(f"ArtPhoto folder {root}", ids, labels, paths, skipped)


def read_abstract(root: Path) -> EvalData:
    """Abstract: `root/ABSTRACT_groundTruth.csv` (file name, then votes per emotion; values may be quoted with ')
    and the images beside it. The label is the emotion with most votes; a tie or no votes is a counted skip."""
    # The labels come from the dataset's own files, as the images do: a table symlinked from elsewhere is refused.
    table = resolve_inside_root(root, ABSTRACT_CSV)
    if not table.is_file():
        raise FileNotFoundError(f"{table} does not exist; the abstract reader needs Abstract's vote table "
                                f"{ABSTRACT_CSV} in the dataset root.")
    with open(table, newline="", encoding="utf-8-sig") as handle:
        rows = [[cell.strip().strip("'").strip() for cell in row] for row in csv.reader(handle)]
    if not rows:
        raise ValueError(f"{table} is empty; restore it from the Abstract release.")
    header, columns = rows[0], []
    for position, name in enumerate(header[1:], start=1):
        label = _mikels_label(name)
        if label is None:
            raise ValueError(f"{table}, header: column {position + 1} is {name!r}, not one of Abstract's emotions "
                             f"{list(EMOSET_EMOTIONS)} (or 'Content', 'Sad').")
        columns.append(label)
    ids, labels, paths, skipped = [], [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(row):
            continue
        if len(row) != len(header):
            skipped.append({"id": f"{ABSTRACT_CSV}:{line}",
                            "reason": f"{len(row)} fields where the header has {len(header)}"})
            continue
        votes = {}
        for label, value in zip(columns, row[1:]):
            try:
                votes[label] = int(value)
            except ValueError as e:
                raise ValueError(f"{table}, line {line} ({row[0]}), column {label!r}: vote count {value!r} is not an "
                                 "integer; restore the file from the Abstract release.") from e
        best = max(votes.values())
        winners = [label for label, count in votes.items() if count == best]
        if best <= 0 or len(winners) > 1:
            skipped.append({"id": row[0], "reason": "no votes" if best <= 0 else
                            f"tie between {winners} ({best} votes each); no majority label"})
            continue
        path = _listed_image(root, row[0], row[0], skipped)
        if path is None:
            continue
        ids.append(Path(row[0]).stem), labels.append(winners[0]), paths.append(str(path))
    return _finish(f"Abstract table {table}", ids, labels, paths, skipped)


def read_emotion6(root: Path) -> EvalData:
    """Emotion6: `root/ground_truth.txt` (tab-separated, a header, then file, valence, arousal and the probability of
    each label) and `root/images/<label>/<file>`. The label is the image's folder; `distributions` holds the 7
    probabilities (6 emotions and neutral) as published."""
    table = resolve_inside_root(root, EMOTION6_GROUND_TRUTH)  # refused when it leads outside, as in read_abstract
    if not table.is_file():
        raise FileNotFoundError(f"{table} does not exist; the emotion6 reader needs Emotion6's {EMOTION6_GROUND_TRUTH} "
                                "in the dataset root (next to images/).")
    lines = table.read_text(encoding="utf-8-sig").splitlines()
    if not lines:
        raise ValueError(f"{table} is empty; restore it from the Emotion6 release.")
    header = [normalise_label(cell.strip("[] ")) for cell in lines[0].split("\t")]
    probability_columns = {i: name.removeprefix("prob.").strip() for i, name in enumerate(header)
                           if name.startswith("prob.")}
    if not probability_columns:
        raise ValueError(f"{table}, header: no '[prob. <label>]' columns in {lines[0]!r}; expected Emotion6's header "
                         "(image file, valence, arousal, then the probability of each label).")
    images = root / "images"
    ids, labels, paths, skipped, distributions = [], [], [], [], []
    for number, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        cells = [cell.strip() for cell in text.split("\t")]
        if len(cells) != len(header):
            skipped.append({"id": f"{EMOTION6_GROUND_TRUTH}:{number}",
                            "reason": f"{len(cells)} fields where the header has {len(header)}"})
            continue
        name = cells[0]
        distribution = {}
        for column, label in probability_columns.items():
            try:
                value = float(cells[column])
            except ValueError as e:
                raise ValueError(f"{table}, line {number} ({name}), field {header[column]!r}: {cells[column]!r} is not "
                                 "a number; restore the file from the Emotion6 release.") from e
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{table}, line {number} ({name}), field {header[column]!r}: {value} is not a "
                                 "probability (must be finite and >= 0).")
            distribution[label] = value
        if "/" not in name:
            skipped.append({"id": name, "reason": "no label folder in the file name (expected '<label>/<file>')"})
            continue
        path = _listed_image(images, name, name, skipped)
        if path is None:
            continue
        ids.append(str(Path(name).with_suffix(""))), labels.append(normalise_label(name.split("/", 1)[0]))
        paths.append(str(path)), distributions.append(distribution)
    return _finish(f"Emotion6 table {table}", ids, labels, paths, skipped, distributions)


def read_emotionroi(root: Path, split: str) -> EvalData:
    """EmotionROI: `root/images/<label>/<file>` and the split lists under `root/training_testing_split/` (`train`:
    training.txt, `test`: testing.txt, `all`: both), a line `<label>/<file>` per image."""
    if split not in EMOTIONROI_SPLIT_FILES:
        raise ValueError(f"EmotionROI's splits are {list(EMOTIONROI_SPLIT_FILES)}; got --split {split!r}.")
    images = root / "images"
    ids, labels, paths, skipped = [], [], [], []
    for file_name in EMOTIONROI_SPLIT_FILES[split]:
        listing = resolve_inside_root(root, f"training_testing_split/{file_name}")  # as in read_abstract
        if not listing.is_file():
            raise FileNotFoundError(f"{listing} does not exist; the emotionroi reader needs EmotionROI's split lists "
                                    "under training_testing_split/ (training.txt, testing.txt).")
        for number, text in enumerate(listing.read_text(encoding="utf-8-sig").splitlines(), start=1):
            entry = text.strip()
            if not entry:
                continue
            where = f"{file_name}:{number} ({entry})"
            parts = entry.split("/")
            if len(parts) != 2 or not all(parts):
                skipped.append({"id": where, "reason": "expected '<label>/<file>'"})
                continue
            path = _listed_image(images, entry, where, skipped)
            if path is None:
                continue
            ids.append(str(Path(entry).with_suffix(""))), labels.append(normalise_label(parts[0]))
            paths.append(str(path))
    return _finish(f"EmotionROI {split} split of {root}", ids, labels, paths, skipped)


def webemo_label(folder: str, level: int) -> str:
    """A WebEmo folder name (a fine-grained label) as a label at `level` (2, 7 or 25) of the hierarchy."""
    fine = normalise_label(folder)
    fine = WEBEMO_SPELLINGS.get(fine, fine)
    if fine not in WEBEMO_HIERARCHY:
        raise ValueError(f"WebEmo folder {folder!r} is not one of WebEmo's 25 fine-grained labels "
                         f"{sorted(WEBEMO_HIERARCHY)}; the webemo readers need one folder per fine-grained label.")
    parent, sentiment = WEBEMO_HIERARCHY[fine]
    return {2: sentiment, 7: parent, 25: fine}[level]


def read_webemo(root: Path, split: str, level: int) -> EvalData:
    """WebEmo kept as an ImageFolder of fine-grained labels, relabelled to `level` (2, 7 or 25)."""
    data = load_eval_data(str(root), split)
    folders = sorted(set(data.labels))
    mapped = {folder: webemo_label(folder, level) for folder in folders}
    data.labels = [mapped[label] for label in data.labels]
    return data


def drop_uncovered(data: EvalData, covered: set[str]) -> EvalData:
    """Leaves out (as counted skips) the images whose label is not in `covered`: a dataset label no model label maps
    to under a zero-shot label map. The other images keep their order."""
    keep = [i for i, label in enumerate(data.labels) if label in covered]
    dropped = [{"id": data.ids[i], "reason": f"label {data.labels[i]!r} has no model label mapped to it"}
               for i in range(len(data.ids)) if data.labels[i] not in covered]
    if not keep:
        raise ValueError(f"None of the dataset's labels {sorted(set(data.labels))} is covered by the label map "
                         f"({sorted(covered)}); check --label_map.")
    if data.table is not None:
        data.table = data.table.select(keep)
    elif data.paths is not None:
        data.paths = [data.paths[i] for i in keep]
    if data.distributions is not None:
        data.distributions = [data.distributions[i] for i in keep]
    data.ids, data.labels = [data.ids[i] for i in keep], [data.labels[i] for i in keep]
    data.skipped = data.skipped + dropped
    return data


def kl_divergence(reference: dict[str, float], predicted: dict[str, float], epsilon: float = 1e-12) -> float:
    """KL(reference || predicted) in nats over `reference`'s labels; predicted probabilities are floored at `epsilon`
    so a label the model rules out costs a large finite amount instead of infinity."""
    return sum(p * math.log(p / max(predicted.get(label, 0.0), epsilon)) for label, p in reference.items() if p > 0)


def distribution_metrics(data: EvalData, rows: list[dict], targets: list[str]) -> dict:
    """metrics.json's KL-divergence entries when `data` has label distributions and `rows` probabilities (score).

    The dataset distribution loses its neutral share and is renormalised over the dataset labels the model predicts
    (`targets`, after the label map): the model cannot answer "neutral", so KL compares how it spreads its probability
    over the emotions with how the annotators spread theirs. Images whose annotators chose only neutral (nothing left
    to compare) are left out of the mean and counted. Only the first instruction variant's rows are used.
    """
    if data.distributions is None:
        return {}
    if not rows or "scores" not in rows[0]:
        return {"kl_divergence": None, "kl_note": "KL divergence needs per-label probabilities: use --method score."}
    labels = set(targets)
    published = set(data.distributions[0]) - {EMOTION6_NEUTRAL}
    if published != labels:
        return {"kl_divergence": None,
                "kl_note": f"the model's labels after the label map {sorted(labels)} differ from the distribution's "
                           f"labels {sorted(published)} (neutral aside); use the matching preset (emotion6)."}
    values, neutral_only = [], 0
    for row in rows:
        if row["prompt_variant"] != 0:
            continue
        reference = {label: p for label, p in data.distributions[row["index"]].items() if label in labels}
        total = sum(reference.values())
        if total <= 0:
            neutral_only += 1
            continue
        values.append(kl_divergence({k: v / total for k, v in reference.items()}, row["scores"]))
    return {
        "kl_divergence": sum(values) / len(values) if values else None,
        "kl_num_images": len(values),
        "kl_num_neutral_only": neutral_only,
        "kl_definition": "mean over images of KL(annotators || model) in nats; the annotators' distribution without "
                         "neutral, renormalised; the model's probabilities after the label map, floored at 1e-12",
    }
