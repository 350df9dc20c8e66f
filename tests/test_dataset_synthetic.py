"""The synthetic EmoSet sample: layout, determinism, attribute coverage, and a class signal a tiny model can learn."""

import json

import numpy as np
from PIL import Image

from dataset_builder.emoset import read_split
from dataset_builder.synthetic import write_synthetic_emoset
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
    path = "image/awe/awe_00001.jpg"
    assert (a / path).read_bytes() == (b / path).read_bytes() != (c / path).read_bytes()
    assert (a / "train.json").read_text() == (b / "train.json").read_text()


def test_classes_separable_by_a_trivial_model(tmp_path):
    # A nearest-centroid classifier on 8x8 thumbnails is far weaker than the demo's ViT + Q-Former; if it
    # reaches 90% on held-out images, the class signal is strong enough, and jitter keeps images distinct.
    root = write_synth(tmp_path / "s", images_per_class=30)

    def features(split):
        items = read_split(root, split).items
        x = np.stack([np.asarray(Image.open(i.image_path).resize((8, 8)), dtype=np.float32).ravel() / 255 for i in items])
        return x, np.array([EMOSET_EMOTIONS.index(i.emotion) for i in items])

    x_train, y_train = features("train")
    x_test, y_test = features("test")
    centroids = np.stack([x_train[y_train == k].mean(0) for k in range(8)])
    predicted = np.argmin(((x_test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == y_test).mean() >= 0.9
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
