"""emovit.evaluation.data: one split's images and labels from an EmoSet root, an ImageFolder, a save_to_disk folder
or a parquet folder (read as a Hub id would be)."""

import json
import shutil
from pathlib import Path

import datasets
import pytest
from PIL import Image

from dataset_builder.emoset import read_split
from emovit.evaluation.data import (
    EvalData,
    check_readable,
    is_saved_dataset,
    load_eval_data,
    skipped_entries,
    split_off_unreadable,
    unreadable_rows,
)


def hf_table(emoset_dir):
    items = read_split(emoset_dir, "test").items
    return datasets.Dataset.from_dict(
        {"image": [item.image_path for item in items], "label": [item.emotion for item in items]}
    ).cast_column("image", datasets.Image()).class_encode_column("label")


def write_layout(table, folder: Path, layout: str) -> Path:
    if layout == "save_to_disk":
        datasets.DatasetDict({"test": table}).save_to_disk(str(folder))
    else:
        (folder / "data").mkdir(parents=True)
        table.to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    return folder


def test_emoset_root_gives_the_readers_items(eval_emoset_dir):
    data = load_eval_data(str(eval_emoset_dir), "test")
    items = read_split(eval_emoset_dir, "test").items
    assert data.ids == [item.image_id for item in items]
    assert data.labels == [item.emotion for item in items]
    assert data.paths == [item.image_path for item in items] and data.table is None and data.skipped == []
    image = data.image(0)
    assert isinstance(image, Image.Image) and image.mode == "RGB"


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_hf_dataset_layouts_give_the_same_labels(tmp_path, eval_emoset_dir, layout):
    folder = write_layout(hf_table(eval_emoset_dir), tmp_path / "hf", layout)
    assert is_saved_dataset(folder) == (layout == "save_to_disk")
    data = load_eval_data(str(folder), "test")
    emoset = load_eval_data(str(eval_emoset_dir), "test")
    assert data.labels == emoset.labels and data.paths is None
    assert data.ids[3] == "test/3" and data.table.column_names == ["image"]
    assert data.image(3).tobytes() == emoset.image(3).tobytes()


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_hf_dataset_gives_the_same_predictions(tmp_path, eval_score_run, run_evaluation, eval_emoset_dir, layout):
    """The `datasets` paths (load_from_disk; load_dataset on a Hub-style parquet folder, as for a Hub id)."""
    folder = write_layout(hf_table(eval_emoset_dir), tmp_path / "hf", layout)
    _, lines, _ = run_evaluation(tmp_path, folder)
    _, expected, _ = eval_score_run
    assert [line["label"] for line in lines] == [line["label"] for line in expected]
    assert [line["prediction"] for line in lines] == [line["prediction"] for line in expected]
    assert lines[3]["id"] == "test/3"


def test_string_labels_ids_and_normalisation(tmp_path, eval_emoset_dir):
    items = read_split(eval_emoset_dir, "test").items[:3]
    table = datasets.Dataset.from_dict({
        "image": [item.image_path for item in items],
        "emotion": [" Awe", "FEAR ", "joy"],
        "image_id": ["a", "b", "c"],
    }).cast_column("image", datasets.Image())
    table.save_to_disk(str(tmp_path / "single"))  # a Dataset, not a DatasetDict: any --split reads it
    data = load_eval_data(str(tmp_path / "single"), "whatever")
    assert data.labels == ["awe", "fear", "joy"] and data.ids == ["a", "b", "c"]


def test_tables_without_what_evaluation_needs_are_refused(tmp_path, eval_emoset_dir):
    items = read_split(eval_emoset_dir, "test").items[:2]
    paths = [item.image_path for item in items]
    cases = {
        "no-image": ({"picture": paths, "label": ["a", "b"]}, r"no 'image' column"),
        "no-label": ({"image": paths, "class": ["a", "b"]}, r"'emotion' or 'label' column"),
        "int-label": ({"image": paths, "label": [0, 1]}, r"ClassLabel or a string column"),
    }
    for name, (columns, message) in cases.items():
        datasets.DatasetDict({"test": datasets.Dataset.from_dict(columns)}).save_to_disk(str(tmp_path / name))
        with pytest.raises(ValueError, match=message):
            load_eval_data(str(tmp_path / name), "test")
    with pytest.raises(ValueError, match=r"has splits \['test'\], not 'val'"):
        load_eval_data(str(tmp_path / "no-image"), "val")
    with pytest.raises(ValueError, match=r"load_dataset` failed"):
        load_eval_data(str(tmp_path / "no-such-dataset"), "test")


def test_empty_split_is_refused(tmp_path, eval_emoset_dir):
    root = tmp_path / "broken"
    shutil.copytree(eval_emoset_dir, root)
    entries = json.loads((root / "test.json").read_text())
    for entry in entries:
        (root / entry[1]).unlink()  # every test image missing: all entries are skipped
    with pytest.raises(ValueError, match=r"'test'.*no usable images"):
        load_eval_data(str(root), "test")
    (root / "test.json").write_text("[]")
    with pytest.raises(ValueError, match="empty"):
        load_eval_data(str(root), "test")


def test_an_undecodable_image_in_a_table_names_its_row(tmp_path, eval_emoset_dir):
    items = read_split(eval_emoset_dir, "test").items[:3]
    images = [{"bytes": Path(item.image_path).read_bytes(), "path": None} for item in items]
    images[2] = {"bytes": b"not an image", "path": None}
    table = datasets.Dataset.from_dict(
        {"image": images, "label": [item.emotion for item in items]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}),
    )
    data = EvalData(ids=["x", "y", "z"], labels=["awe"] * 3, table=table)
    assert data.image(1).mode == "RGB"
    with pytest.raises(ValueError, match=r"z \(row 2\) could not be read"):
        data.image(2)


def test_unreadable_images_travel_as_rows_and_become_skipped_entries():
    data = EvalData(ids=["a", "b", "c", "d"], labels=["awe"] * 4, skipped=[{"id": "x", "reason": "missing file"}])
    rows = [{"index": 0, "prediction": 1}, *unreadable_rows({3: "truncated", 1: "not an image"}),
            {"index": 2, "prediction": 0}]
    read, unreadable = split_off_unreadable(rows)
    assert read == [{"index": 0, "prediction": 1}, {"index": 2, "prediction": 0}]
    assert unreadable == [{"index": 3, "reason": "truncated"}, {"index": 1, "reason": "not an image"}]
    assert skipped_entries(data, unreadable) == [{"id": "x", "reason": "missing file"},
                                                 {"id": "b", "reason": "not an image"},
                                                 {"id": "d", "reason": "truncated"}]
    check_readable(read, unreadable, 4, "the split")
    with pytest.raises(ValueError, match=r"None of the 4 images of 'd' \(test\) could be read; first error: truncated"):
        check_readable([], unreadable, 4, "'d' (test)")
