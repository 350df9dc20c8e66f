"""Reading stage: list the images of an EmoSet root or of a plain ImageFolder, with their labels.

Two layouts are understood:

- EmoSet: `info.json`, `train.json` / `val.json` / `test.json` (JSON lists whose entries are
  `[emotion, image_id, image_path, annotation_path]` or, in some copies, `[emotion, image_path,
  annotation_path]`), `image/<emotion>/*.jpg` and `annotation/<emotion>/*.json`.
- ImageFolder: `<root>/<split>/<label>/*.jpg` (or `<root>/<label>/*.jpg` when the root has no split
  folders), the label being the sub-folder name.

`read_split` is what train.py and evaluate.py call. Entries that cannot be used (unknown emotion,
missing image, a path that leads outside the root: `../x.jpg`, an absolute path elsewhere, a symlink pointing out)
are returned as counted `Skip`s with a reason rather than dropped; problems that make
the whole split unusable (no such root, empty split, unparsable split file) raise.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from emovit_utils.files import IMAGE_EXTENSIONS
from modeling_emovit.configuration_emovit import EMOSET_EMOTIONS


logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageItem:
    """One labelled image. `image_path` is absolute; `relative_path` is relative to the dataset root."""

    image_id: str
    emotion: str
    image_path: str
    relative_path: str
    annotation_path: str | None = None


@dataclass(frozen=True)
class Skip:
    """An input that was left out, and why. Every skip ends up in summary.json."""

    item: str
    reason: str


@dataclass
class SplitListing:
    items: list[ImageItem] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


def is_emoset_root(root: str | os.PathLike) -> bool:
    return (Path(root) / "info.json").is_file() or any((Path(root) / f"{s}.json").is_file() for s in SPLITS)


def read_emotion_labels(root: str | os.PathLike) -> tuple[str, ...]:
    """The emotion names in index order, from `info.json` when present, else EmoSet's order."""
    info_path = Path(root) / "info.json"
    if not info_path.is_file():
        return EMOSET_EMOTIONS
    try:
        info = json.loads(info_path.read_text())
        idx2label = info["emotion"]["idx2label"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{info_path}: cannot read `emotion.idx2label` ({type(e).__name__}: {e}). EmoSet's info.json maps each "
            "emotion index to its name there; fix or remove the file (EmoSet's default order is used without it)."
        ) from e
    labels = tuple(str(idx2label[str(i)]).strip() for i in range(len(idx2label)))
    if labels != EMOSET_EMOTIONS:
        raise ValueError(
            f"{info_path}: emotion order {list(labels)} differs from EmoSet's {list(EMOSET_EMOTIONS)}. The model's "
            "label indices assume EmoSet's order; use an unmodified info.json."
        )
    return labels


def resolve_inside_root(root: str | os.PathLike | None, path: str | os.PathLike) -> Path:
    """`path` (relative to `root`, or absolute) with symlinks followed; ValueError if that leaves `root`.

    Every path a dataset file names goes through here, so no entry can make the builder, training or evaluation read
    (and copy into records, prompts or an uploaded Parquet file) a file outside the dataset. Without a root only the
    path's form is checked: it must be relative and must not climb out with `..`.
    """
    text = str(path)
    if root is None:
        if os.path.isabs(text) or os.path.normpath(text).split(os.sep)[0] == os.pardir:
            raise ValueError(f"path {text!r} is absolute or climbs out with '..'; dataset paths are relative to the "
                             "dataset root")
        return Path(os.path.normpath(text))
    root = Path(root).resolve()
    try:
        resolved = (root / text).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop: RuntimeError before Python 3.13, OSError since
        raise ValueError(f"path {text!r} is a symlink loop (it leads back to itself: {e}); replace it with the "
                         "image file or remove it") from e
    if not resolved.is_relative_to(root):
        raise ValueError(f"path {text!r} leads to {resolved}, outside the dataset root {root}; only files under the "
                         "root are read")
    return resolved


def _parse_split_entry(entry, split_file: Path, position: int) -> tuple[str, str, str, str | None]:
    """(emotion, image_id, image_rel, annotation_rel) from a 3- or 4-field split entry."""
    if not isinstance(entry, (list, tuple)) or len(entry) not in (3, 4):
        raise ValueError(
            f"{split_file}: entry {position} is {entry!r}; expected [emotion, image_id, image_path, annotation_path] "
            "or [emotion, image_path, annotation_path]. Regenerate the split file from EmoSet's release."
        )
    if len(entry) == 4:
        emotion, image_id, image_rel, annotation_rel = entry
    else:
        emotion, image_rel, annotation_rel = entry
        image_id = Path(str(image_rel)).stem
    return str(emotion).strip(), str(image_id).strip(), str(image_rel).strip(), str(annotation_rel).strip()


def read_emoset_split(root: str | os.PathLike, split: str) -> SplitListing:
    root = Path(root).resolve()
    split_file = resolve_inside_root(root, f"{split}.json")  # the labels, like the images, come from inside the root
    if not split_file.is_file():
        raise FileNotFoundError(
            f"{split_file} does not exist. An EmoSet root holds train.json, val.json and test.json; check "
            f"--emoset_root (got {str(root)!r}) and the split name {split!r}."
        )
    try:
        entries = json.loads(split_file.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{split_file}: not readable JSON ({e}). Restore the file from EmoSet's release.") from e
    if not isinstance(entries, list):
        raise ValueError(f"{split_file}: expected a JSON list of entries, got {type(entries).__name__}.")
    if not entries:
        raise ValueError(f"{split_file}: the split is empty (0 entries). Use a complete split file.")
    labels = read_emotion_labels(root)
    listing = SplitListing()
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        emotion, image_id, image_rel, annotation_rel = _parse_split_entry(entry, split_file, position)
        where = f"{split_file.name}[{position}] ({image_id})"
        if emotion not in labels:
            listing.skipped.append(Skip(where, f"unknown emotion {emotion!r}; expected one of {list(labels)}"))
            continue
        if image_id in seen:
            listing.skipped.append(Skip(where, f"duplicate image id {image_id!r}"))
            continue
        try:
            resolve_inside_root(root, image_rel)
            if annotation_rel:
                resolve_inside_root(root, annotation_rel)
        except ValueError as e:
            listing.skipped.append(Skip(where, str(e)))
            continue
        image_path = root / image_rel
        if not image_path.is_file():
            listing.skipped.append(Skip(where, f"image file {image_path} is missing"))
            continue
        seen.add(image_id)
        listing.items.append(
            ImageItem(image_id, emotion, str(image_path), image_rel, str(root / annotation_rel) if annotation_rel else None)
        )
    return listing


def read_image_folder(root: str | os.PathLike, split: str | None = None) -> SplitListing:
    """`<root>/<split>/<label>/*` or, without split folders, `<root>/<label>/*`. Labels are folder names."""
    root = Path(root).resolve()
    base = root / split if split and (root / split).is_dir() else root
    if split and base == root and any((root / s).is_dir() for s in SPLITS):
        raise FileNotFoundError(f"{root / split} does not exist, but {root} has split folders; pick one of them.")
    label_dirs = sorted(d for d in base.iterdir() if d.is_dir())
    if not label_dirs:
        raise ValueError(f"{base} has no label sub-folders. An ImageFolder dataset needs one folder per label.")
    listing = SplitListing()
    for label_dir in label_dirs:
        for path in sorted(label_dir.iterdir()):
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                if path.is_file():
                    listing.skipped.append(Skip(str(path), f"not an image file (suffix {path.suffix!r})"))
                continue
            try:
                resolve_inside_root(root, path)
            except ValueError as e:
                listing.skipped.append(Skip(str(path), str(e)))
                continue
            rel = str(path.relative_to(root))
            listing.items.append(ImageItem(f"{label_dir.name}/{path.stem}", label_dir.name, str(path), rel))
    if not listing.items:
        raise ValueError(f"{base}: the split is empty (no images under its label folders).")
    return listing


def read_split(root: str | os.PathLike, split: str = "train") -> SplitListing:
    """Lists `(image path, emotion)` items of `split` of an EmoSet root or an ImageFolder dataset."""
    root_path = Path(root)
    if not root_path.is_dir() or not os.access(root_path, os.R_OK | os.X_OK):
        raise FileNotFoundError(
            f"Dataset root {str(root)!r} is not a readable directory. Pass the folder that holds EmoSet's "
            "info.json and split files (or an ImageFolder dataset)."
        )
    listing = read_emoset_split(root_path, split) if is_emoset_root(root_path) else read_image_folder(root_path, split)
    for skip in listing.skipped:
        logger.warning("skipped %s: %s", skip.item, skip.reason)
    return listing


def read_annotation(item: ImageItem) -> tuple[dict | None, Skip | None]:
    """The annotation JSON of an EmoSet item, or a Skip saying why it cannot be used."""
    if item.annotation_path is None:
        return {}, None
    path = Path(item.annotation_path)
    if not path.is_file():
        return None, Skip(item.image_id, f"annotation file {path} is missing; restore it from EmoSet's release")
    try:
        annotation = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, Skip(item.image_id, f"annotation file {path} is not valid JSON ({e})")
    if not isinstance(annotation, dict):
        return None, Skip(item.image_id, f"annotation file {path} holds {type(annotation).__name__}, expected an object")
    emotion = str(annotation.get("emotion", item.emotion)).strip()
    if emotion != item.emotion:
        return None, Skip(item.image_id, f"annotation {path} says emotion {emotion!r} but the split file says {item.emotion!r}")
    return annotation, None


def sample_per_class(items: list[ImageItem], counts: dict[str, int], seed: int) -> dict[str, list[ImageItem]]:
    """Draws `counts[type]` images per emotion for each instruction type.

    One seeded order per emotion; every type takes a prefix of it, so the reasoning images are a subset of the
    conversation images, which are a subset of the categorical ones (the official scripts take "the first N").
    Asking for more images than a class has takes them all and logs it.
    """
    by_emotion: dict[str, list[ImageItem]] = {}
    for item in sorted(items, key=lambda it: it.image_id):
        by_emotion.setdefault(item.emotion, []).append(item)
    rng = random.Random(seed)
    for emotion in sorted(by_emotion):
        rng.shuffle(by_emotion[emotion])
    drawn: dict[str, list[ImageItem]] = {}
    for kind, count in counts.items():
        drawn[kind] = []
        short = []
        for emotion in sorted(by_emotion):
            pool = by_emotion[emotion]
            if count > len(pool):
                short.append(f"{emotion} ({len(pool)})")
            drawn[kind].extend(pool[:count])
        if short:
            logger.info("%s: asked for %d images per class; these have fewer, all used: %s", kind, count, ", ".join(short))
    return drawn
