"""Synthetic stand-ins for the benchmark datasets, each in the layout its reader expects, plus a suite file over them,
so the whole suite runs offline:

    python -m emovit.evaluation.synthetic_benchmarks --output_dir runs/synthetic-benchmarks --images_per_class 10
    python evaluate.py --model runs/emovit-offline --suite runs/synthetic-benchmarks/suite.yaml \
        --output_dir runs/eval-suite-synthetic

The suite holds VECBench's tasks and groups as `configs/eval_vecbench.yaml` does (WebEmo-25 as a skipped row) plus
the other benchmarks and binary splits, outside any group. Each image is drawn as the synthetic EmoSet sample draws
the EmoSet emotion that the dataset's label-map preset sends to the image's label, so a model trained on the
synthetic sample has something to recognise; the numbers measure the code path, not the real benchmarks.
"""

import argparse
import random
from pathlib import Path

import yaml

from dataset_builder.synthetic import draw_image, write_synthetic_emoset
from emovit_utils.files import atomic_write_folder
from modeling_emovit import EMOSET_EMOTIONS

from .benchmarks import ABSTRACT_CSV, EMOTION6_GROUND_TRUTH, WEBEMO_HIERARCHY
from .labels import LABEL_MAP_PRESETS


# VECBench's groups over the entry names the suite gives its tasks (configs/eval_vecbench.yaml uses the same).
VECBENCH_GROUPS = {
    "in-domain-sentiment": ["fi-2", "webemo-2"],
    "in-domain-emotion": ["fi-8", "emoset-8", "webemo-7", "webemo-25"],
    "out-of-domain": ["abstract-8", "artphoto-8", "unbiasedemo-6"],
}
WEBEMO25_SKIP = ("WebEmo's 25 fine labels cannot be expressed by a model answering among EmoSet's 8 (zero-shot); "
                 "evaluate a model trained on them with dataset_format webemo25 and its own labels")
EKMAN_SIX = ("anger", "disgust", "fear", "joy", "sadness", "surprise")
UNBIASEDEMO_LABELS = ("anger", "fear", "joy", "love", "sadness", "surprise")
# ArtPhoto's file-name prefixes and Abstract's vote columns, as the releases spell them.
ARTPHOTO_PREFIXES = ("amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sad")
ABSTRACT_COLUMNS = ("Amusement", "Anger", "Awe", "Content", "Disgust", "Excitement", "Fear", "Sad")


def emoset_emotion_for(label: str, preset: str | None) -> str:
    """The EmoSet emotion to draw for dataset label `label`: the first one `preset` maps to it (itself without one)."""
    if preset is None:
        return {"sad": "sadness", "content": "contentment"}.get(label, label)
    return next(emotion for emotion in EMOSET_EMOTIONS if LABEL_MAP_PRESETS[preset][emotion] == label)


def _save(path: Path, label: str, preset: str | None, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_image(emoset_emotion_for(label, preset), rng).save(path, quality=92)


def write_image_folder(root: Path, labels, count: int, rng: random.Random, preset: str | None = None,
                       draw_as=None) -> None:
    """`root/<label>/<label>_<n>.jpg`; `draw_as(label)` picks the label whose drawing is used (default: itself)."""
    for label in labels:
        for n in range(count):
            _save(root / label / f"{label}_{n:04d}.jpg", draw_as(label) if draw_as else label, preset, rng)


def write_artphoto(root: Path, count: int, rng: random.Random) -> None:
    for prefix in ARTPHOTO_PREFIXES:
        for n in range(count):
            _save(root / f"{prefix}_{n:04d}.jpg", prefix, None, rng)


def write_abstract(root: Path, count: int, rng: random.Random) -> None:
    """Images `abstract_<n>.jpg` and the vote table: the drawn emotion gets most votes, two others a few."""
    lines = [",".join(f"'{name}'" for name in ("", *ABSTRACT_COLUMNS))]
    for n in range(count * len(ABSTRACT_COLUMNS)):
        winner = n % len(ABSTRACT_COLUMNS)
        name = f"abstract_{n:04d}.jpg"
        _save(root / name, ABSTRACT_COLUMNS[winner].lower(), None, rng)
        votes = [0] * len(ABSTRACT_COLUMNS)
        votes[winner] = rng.randint(5, 9)
        for other in rng.sample([i for i in range(len(votes)) if i != winner], 2):
            votes[other] = rng.randint(0, 3)
        lines.append(",".join([f"'{name}'", *map(str, votes)]))
    (root / ABSTRACT_CSV).write_text("\n".join(lines) + "\n")


def write_emotion6(root: Path, count: int, rng: random.Random) -> None:
    """`images/<label>/<n>.jpg` and ground_truth.txt: valence, arousal and 7 probabilities, most on the label."""
    columns = [*EKMAN_SIX, "neutral"]
    lines = ["\t".join(["[image_filename]", "[valence]", "[arousal]", *(f"[prob. {c}]" for c in columns)])]
    for label in EKMAN_SIX:
        for n in range(1, count + 1):
            _save(root / "images" / label / f"{n}.jpg", label, "emotion6", rng)
            weights = [rng.uniform(0.0, 0.2) for _ in columns]
            weights[columns.index(label)] += 1.0
            total = sum(weights)
            probabilities = [f"{w / total:.3f}" for w in weights]
            lines.append("\t".join([f"{label}/{n}.jpg", f"{rng.uniform(1, 9):.1f}", f"{rng.uniform(1, 9):.1f}",
                                    *probabilities]))
    (root / EMOTION6_GROUND_TRUTH).write_text("\n".join(lines) + "\n")


def write_emotionroi(root: Path, count: int, rng: random.Random) -> None:
    """`images/<label>/<n>.jpg` and the split lists; every third image of a label goes to testing.txt."""
    splits = {"training.txt": [], "testing.txt": []}
    for label in EKMAN_SIX:
        for n in range(1, count + 1):
            _save(root / "images" / label / f"{n}.jpg", label, "emotionroi", rng)
            splits["testing.txt" if n % 3 == 0 else "training.txt"].append(f"{label}/{n}.jpg")
    (root / "training_testing_split").mkdir(parents=True, exist_ok=True)
    for name, entries in splits.items():
        (root / "training_testing_split" / name).write_text("\n".join(entries) + "\n")


def write_synthetic_benchmarks(output_dir: str | Path, images_per_class: int = 4, seed: int = 0) -> Path:
    """Writes every synthetic benchmark under `output_dir` and `output_dir/suite.yaml` over them; returns its path."""
    if images_per_class < 3:
        raise ValueError(f"--images_per_class {images_per_class} is too few; use 3 or more (EmotionROI's test split "
                         "takes every third image).")
    root, rng = Path(output_dir), random.Random(seed)
    # No label noise, as the other stand-ins: every image is drawn as its label.
    write_synthetic_emoset(root / "EmoSet", images_per_class, seed, label_noise=0.0)
    write_image_folder(root / "FI", EMOSET_EMOTIONS, images_per_class, rng)
    write_artphoto(root / "ArtPhoto", images_per_class, rng)
    write_abstract(root / "Abstract", images_per_class, rng)
    write_emotion6(root / "Emotion6", images_per_class, rng)
    write_emotionroi(root / "EmotionROI", images_per_class, rng)
    write_image_folder(root / "UnbiasedEmo", UNBIASEDEMO_LABELS, images_per_class, rng, "unbiasedemo")
    write_image_folder(root / "TwitterI", ("positive", "negative"), images_per_class, rng, "twitter")
    write_image_folder(root / "TwitterII", ("positive", "negative"), images_per_class, rng, "twitter")
    # WebEmo: one folder per fine-grained label, drawn as its 7-class parent (confusion as sadness, its sentiment).
    write_image_folder(root / "WebEmo", sorted(WEBEMO_HIERARCHY), max(1, images_per_class // 2), rng, "webemo7",
                       draw_as=lambda fine: {"confusion": "sadness"}.get(WEBEMO_HIERARCHY[fine][0],
                                                                         WEBEMO_HIERARCHY[fine][0]))
    entries = [
        {"name": "fi-2", "dataset": "FI", "label_map": "binary"},
        {"name": "webemo-2", "dataset": "WebEmo", "dataset_format": "webemo2", "label_map": "webemo2"},
        {"name": "fi-8", "dataset": "FI"},
        {"name": "emoset-8", "dataset": "EmoSet", "split": "test"},
        {"name": "webemo-7", "dataset": "WebEmo", "dataset_format": "webemo7", "label_map": "webemo7",
         "skip_uncovered_labels": True},
        {"name": "webemo-25", "dataset": "WebEmo", "dataset_format": "webemo25", "skip": WEBEMO25_SKIP},
        {"name": "abstract-8", "dataset": "Abstract", "dataset_format": "abstract", "split": "all"},
        {"name": "artphoto-8", "dataset": "ArtPhoto", "dataset_format": "artphoto", "split": "all"},
        {"name": "unbiasedemo-6", "dataset": "UnbiasedEmo", "label_map": "unbiasedemo"},
        {"name": "emoset-2", "dataset": "EmoSet", "split": "test", "label_map": "binary"},
        {"name": "twitter1", "dataset": "TwitterI", "label_map": "twitter"},
        {"name": "twitter2", "dataset": "TwitterII", "label_map": "twitter"},
        {"name": "emotion6", "dataset": "Emotion6", "dataset_format": "emotion6", "split": "all",
         "label_map": "emotion6"},
        {"name": "emotionroi", "dataset": "EmotionROI", "dataset_format": "emotionroi", "split": "test",
         "label_map": "emotionroi"},
    ]
    suite = root / "suite.yaml"
    suite.write_text("# Synthetic stand-ins written by emovit.evaluation.synthetic_benchmarks; paths are relative "
                     "to this file.\n" + yaml.safe_dump({"defaults": {"method": "score"}, "entries": entries,
                                                         "groups": VECBENCH_GROUPS}, sort_keys=False))
    return suite


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--images_per_class", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Written whole: a folder of someone else's (the real releases use the same layouts and names) is refused.
    atomic_write_folder(args.output_dir, lambda folder: write_synthetic_benchmarks(folder, args.images_per_class,
                                                                                   args.seed),
                        kind="emovit synthetic benchmarks", what="--output_dir")
    print(f"wrote the synthetic benchmarks and {Path(args.output_dir) / 'suite.yaml'}")


if __name__ == "__main__":
    from emovit_utils.commands import run_command

    run_command("python -m emovit.evaluation.synthetic_benchmarks", main)
