import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset_builder.emoset import ImageItem, read_annotation, read_split, sample_per_class
from modeling_emovit.image_utils import open_image


def test_reads_both_entry_forms(synthetic_root):
    train, test = read_split(synthetic_root, "train"), read_split(synthetic_root, "test")
    assert len(train.items) == 32 and len(test.items) == 8 and not train.skipped
    item = next(i for i in test.items if i.emotion == "awe")
    assert item.image_id == "awe_00005"  # 3-field entry: the id comes from the file name
    assert item.relative_path == "image/awe/awe_00005.jpg" and item.image_path == str(synthetic_root / item.relative_path)


def test_bad_entries_are_counted_skips(synthetic_root, tmp_path):
    root = tmp_path / "e"
    shutil.copytree(synthetic_root, root)
    entries = json.loads((root / "val.json").read_text())
    entries[0] = ["joy"] + entries[0][1:]
    entries.append(list(entries[1]))  # duplicate
    entries.append(["awe", "image/awe/nope.jpg", "annotation/awe/nope.json"])
    (root / "val.json").write_text(json.dumps(entries))
    listing = read_split(root, "val")
    reasons = [s.reason for s in listing.skipped]
    assert len(listing.items) == 7 and len(reasons) == 3
    assert "unknown emotion 'joy'" in reasons[0] and "duplicate image id" in reasons[1] and "nope.jpg is missing" in reasons[2]


def test_missing_split_and_wrong_info_order(synthetic_root, tmp_path):
    root = tmp_path / "e"
    shutil.copytree(synthetic_root, root)
    with pytest.raises(FileNotFoundError, match="validation.json does not exist"):
        read_split(root, "validation")
    info = json.loads((root / "info.json").read_text())
    info["emotion"]["idx2label"]["0"], info["emotion"]["idx2label"]["1"] = "awe", "amusement"
    (root / "info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="differs from EmoSet's"):
        read_split(root, "train")


def test_annotation_problems(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"emotion": "fear"}))
    make = lambda ann: ImageItem("awe_1", "awe", "x.jpg", "x.jpg", str(ann))  # noqa: E731
    assert "is missing" in read_annotation(make(tmp_path / "none.json"))[1].reason
    assert "not valid JSON" in read_annotation(make(bad))[1].reason
    assert "says emotion 'fear' but the split file says 'awe'" in read_annotation(make(other))[1].reason


def test_image_folder_with_and_without_splits(tmp_path):
    for base in (tmp_path / "flat", tmp_path / "split" / "test"):
        for label in ("cat", "dog"):
            (base / label).mkdir(parents=True)
            for k in range(2):
                Image.new("RGB", (8, 8)).save(base / label / f"{k}.png")
        (base / "dog" / "notes.txt").write_text("x")
    flat = read_split(tmp_path / "flat")
    assert sorted((i.emotion, i.relative_path) for i in flat.items)[:1] == [("cat", "cat/0.png")]
    assert len(flat.items) == 4 and "not an image file" in flat.skipped[0].reason
    split = read_split(tmp_path / "split", "test")
    assert len(split.items) == 4 and split.items[0].relative_path == "test/cat/0.png"
    with pytest.raises(FileNotFoundError, match="has split folders"):
        read_split(tmp_path / "split", "train")
    with pytest.raises(FileNotFoundError, match="not a readable directory"):
        read_split(tmp_path / "missing", "train")


def test_sampling_is_seeded_nested_and_balanced(synthetic_root):
    items = read_split(synthetic_root, "train").items
    counts = {"categorical": 3, "conversation": 2, "reasoning": 1}
    a, b = sample_per_class(items, counts, seed=1), sample_per_class(items, counts, seed=1)
    c = sample_per_class(items, counts, seed=2)
    assert a == b and a != c
    assert {k: len(v) for k, v in a.items()} == {"categorical": 24, "conversation": 16, "reasoning": 8}
    assert set(a["reasoning"]) <= set(a["conversation"]) <= set(a["categorical"])
    assert len(sample_per_class(items, {"categorical": 100}, seed=1)["categorical"]) == 32


def test_paths_leaving_the_root_are_counted_skips(synthetic_root, tmp_path):
    root = tmp_path / "e"
    shutil.copytree(synthetic_root, root)
    outside = tmp_path / "secret"
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(outside / "x.jpg")
    (outside / "x.json").write_text(json.dumps({"emotion": "awe"}))
    (root / "image" / "awe" / "link.jpg").symlink_to(outside / "x.jpg")
    entries = json.loads((root / "val.json").read_text())
    good = len(entries)
    entries += [
        ["awe", "dotdot", "../secret/x.jpg", "annotation/awe/awe_00001.json"],
        ["awe", "absolute", str(outside / "x.jpg"), "annotation/awe/awe_00001.json"],
        ["awe", "symlink", "image/awe/link.jpg", "annotation/awe/awe_00001.json"],
        ["awe", "annotation", entries[0][2], str(outside / "x.json")],
    ]
    (root / "val.json").write_text(json.dumps(entries))
    listing = read_split(root, "val")
    assert len(listing.items) == good
    assert [s.item.split(" ")[1] for s in listing.skipped] == ["(dotdot)", "(absolute)", "(symlink)", "(annotation)"]
    assert all("outside the dataset root" in s.reason for s in listing.skipped)
    assert str(outside / "x.jpg") in listing.skipped[2].reason  # the symlink's target is named

    # ImageFolder: a symlinked file pointing outside is skipped the same way
    folder = tmp_path / "folder"
    (folder / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "cat" / "a.png")
    (folder / "cat" / "b.png").symlink_to(outside / "x.jpg")
    listing = read_split(folder)
    assert [Path(i.image_path).name for i in listing.items] == ["a.png"]
    assert "outside the dataset root" in listing.skipped[0].reason and "b.png" in listing.skipped[0].item


def test_one_opener_scales_high_bit_depth_to_8_bit_rgb(tmp_path):
    grey16 = tmp_path / "grey16.png"
    Image.fromarray(np.full((6, 6), 32768, dtype=np.uint16)).save(grey16)
    assert Image.open(grey16).mode == "I;16"
    opened = open_image(grey16)
    assert opened.mode == "RGB" and np.asarray(opened)[0, 0].tolist() == [128, 128, 128]
    big_endian = Image.frombytes("I;16B", (4, 4), np.full((4, 4), 65535, dtype=">u2").tobytes())
    assert np.asarray(open_image(big_endian))[0, 0].tolist() == [255, 255, 255]
    as_int = Image.fromarray(np.full((4, 4), 16384, dtype=np.int32))
    assert as_int.mode == "I" and np.asarray(open_image(as_int))[0, 0].tolist() == [64, 64, 64]
    as_float = Image.fromarray(np.full((4, 4), 0.25, dtype=np.float32))
    assert as_float.mode == "F" and np.asarray(open_image(as_float))[0, 0].tolist() == [64, 64, 64]
    assert open_image(Image.new("P", (4, 4))).mode == "RGB"


def test_opener_errors_name_the_file(tmp_path):
    truncated = tmp_path / "truncated.jpg"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.jpg could not be read"):
        open_image(truncated)
    with pytest.raises(ValueError, match=r"Image row 7 has PIL mode 'La'"):
        open_image(Image.new("La", (4, 4)), source="row 7")


def test_decompression_bombs_are_refused_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (40, 30)).save(path)  # 1200 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # over the warning limit, under the error limit (2x)
    with pytest.raises(ValueError, match="bomb.png could not be read.*DecompressionBomb"):
        open_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # over twice the limit: PIL raises
    with pytest.raises(ValueError, match="bomb.png could not be read.*DecompressionBombError"):
        open_image(path)
