"""The synthetic EmoSet sample: layout, determinism, annotations that match the pixels, label noise, and classes that
share cues yet stay learnable."""

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset_builder.emoset import read_split
from dataset_builder.synthetic import MIXES, draw_scene, write_synthetic_emoset
from modeling_emovit.configuration_emovit import EMOSET_EMOTIONS


def write_synth(root, images_per_class, seed=0):
    write_synthetic_emoset(root, images_per_class=images_per_class, seed=seed)
    return root


def test_layout_and_splits(tmp_path):
    root = write_synth(tmp_path / "s", images_per_class=10)
    info = json.loads((root / "info.json").read_text())
    assert [info["emotion"]["idx2label"][str(i)] for i in range(8)] == list(EMOSET_EMOTIONS)
    sizes = {split: len(json.loads((root / f"{split}.json").read_text())) for split in ("train", "val", "test")}
    assert sizes == {"train": 56, "val": 8, "test": 16}
    assert {len(e) for e in json.loads((root / "train.json").read_text())} == {4}
    assert {len(e) for e in json.loads((root / "test.json").read_text())} == {3}
    ids = {split: {item.image_id for item in read_split(root, split).items} for split in sizes}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["val"])


def test_annotations_cover_every_attribute_with_some_missing(tmp_path):
    root = write_synth(tmp_path / "s", images_per_class=10)
    annotations = [json.loads(p.read_text()) for p in (root / "annotation").rglob("*.json")]
    for name in ("brightness", "colorfulness", "scene", "object", "facial_expression", "human_action"):
        present = sum(name in a for a in annotations)
        assert 0 < present < len(annotations), name
    assert any(a.get("human_action", "").endswith(" ") for a in annotations)


def test_same_seed_same_files(tmp_path):
    a = write_synth(tmp_path / "a", images_per_class=3, seed=5)
    b = write_synth(tmp_path / "b", images_per_class=3, seed=5)
    c = write_synth(tmp_path / "c", images_per_class=3, seed=6)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "train.json").read_text() != (c / "train.json").read_text()


def test_annotation_matches_the_pixels_and_the_drawing(tmp_path):
    """Brightness and colourfulness are those of the saved file; scene, objects, face and action are what was drawn
    (the same generator, replayed, draws the same picture with the same contents)."""
    from dataset_builder.attributes import compute_brightness, compute_colorfulness

    root = write_synth(tmp_path / "s", images_per_class=6)
    checked = 0
    for annotation_path in (root / "annotation").rglob("*.json"):
        annotation = json.loads(annotation_path.read_text())
        image_path = root / "image" / annotation_path.parent.name / (annotation_path.stem + ".jpg")
        pixels = np.asarray(Image.open(image_path).convert("RGB"))
        if "brightness" in annotation:
            assert annotation["brightness"] == compute_brightness(pixels), image_path
            assert annotation["colorfulness"] == compute_colorfulness(pixels), image_path
            checked += 1
        assert ("facial_expression" in annotation) == ("human_action" in annotation)
        if "facial_expression" in annotation and "object" in annotation:
            assert "Person" in annotation["object"]
    assert checked >= 20

    rng = random.Random(0)
    first, drawn = draw_scene("fear", rng)
    again, drawn_again = draw_scene("fear", random.Random(0))
    assert drawn == drawn_again and np.array_equal(np.asarray(first), np.asarray(again))
    assert drawn["scene"] in MIXES["fear"].scenes or drawn["scene"] in MIXES["sadness"].scenes


def test_label_noise_flips_the_stated_share_and_is_recorded(tmp_path):
    write_synthetic_emoset(tmp_path / "clean", images_per_class=50, seed=0, label_noise=0.0)
    clean = tmp_path / "clean"
    write_synthetic_emoset(tmp_path / "noisy", images_per_class=50, seed=0, label_noise=0.2)
    noisy = tmp_path / "noisy"
    record = json.loads((noisy / "synthetic.json").read_text())
    assert record["label_noise"] == 0.2 and 0.14 <= len(record["flipped_labels"]) / 400 <= 0.26
    # The same pictures at any noise rate: only the labels (and so the folders and ids of the files) change.
    def labels_by_picture(root):
        return {hashlib.sha1(Path(item.image_path).read_bytes()).hexdigest(): item.emotion
                for split in ("train", "val", "test") for item in read_split(root, split).items}

    clean_labels, noisy_labels = labels_by_picture(clean), labels_by_picture(noisy)
    assert clean_labels.keys() == noisy_labels.keys() and len(clean_labels) == 400
    changed = [picture for picture, label in noisy_labels.items() if label != clean_labels[picture]]
    assert len(changed) == len(record["flipped_labels"])
    assert {entry["label"] for entry in record["flipped_labels"]} <= set(noisy_labels.values())
    with pytest.raises(ValueError, match="label_noise is 1.5"):
        write_synthetic_emoset(tmp_path / "bad", images_per_class=3, label_noise=1.5)


def test_classes_share_cues_but_stay_learnable(tmp_path):
    """No single cue gives the class away: scenes and objects recur across emotions, and a nearest-centroid
    classifier on 8x8 thumbnails, which reads colour and layout only, stays well below 90 % while still far above
    chance (12.5 %)."""
    root = write_synth(tmp_path / "s", images_per_class=30)
    classes_of = {}
    for annotation_path in (root / "annotation").rglob("*.json"):
        annotation = json.loads(annotation_path.read_text())
        for value in [annotation.get("scene")] + annotation.get("object", []):
            classes_of.setdefault(value, set()).add(annotation["emotion"])
    assert sum(len(emotions) >= 2 for value, emotions in classes_of.items() if value) >= 6

    def features(split):
        items = read_split(root, split).items
        x = np.stack([np.asarray(Image.open(i.image_path).resize((8, 8)), dtype=np.float32).ravel() / 255 for i in items])
        return x, np.array([EMOSET_EMOTIONS.index(i.emotion) for i in items])

    x_train, y_train = features("train")
    x_test, y_test = features("test")
    centroids = np.stack([x_train[y_train == k].mean(0) for k in range(8)])
    predicted = np.argmin(((x_test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert 0.3 <= (predicted == y_test).mean() < 0.9
    assert len({x.tobytes() for x in x_train}) == len(x_train)


def test_synth_command_never_writes_over_a_folder_it_did_not_write(tmp_path, capsys):
    """`synth --output_dir` naming a real EmoSet copy would overwrite its split files and images of the same names."""
    import pytest

    from dataset_builder.__main__ import main

    real = tmp_path / "EmoSet"
    (real / "image" / "amusement").mkdir(parents=True)
    (real / "info.json").write_text("the real one")
    (real / "image" / "amusement" / "amusement_00000.jpg").write_bytes(b"a real photo")
    with pytest.raises(ValueError, match="--output_dir") as info:
        main(["synth", "--output_dir", str(real), "--images_per_class", "3"])
    assert "info.json" in str(info.value)
    assert (real / "info.json").read_text() == "the real one"
    assert (real / "image" / "amusement" / "amusement_00000.jpg").read_bytes() == b"a real photo"
    assert sorted(p.name for p in real.iterdir()) == ["image", "info.json"]

    sample = tmp_path / "sample"
    assert main(["synth", "--output_dir", str(sample), "--images_per_class", "3"]) == 0
    assert main(["synth", "--output_dir", str(sample), "--images_per_class", "4"]) == 0  # its own: replaced whole
    assert len(json.loads((sample / "test.json").read_text())) == 8
