"""emovit_utils.files: whole-file and whole-folder writes, and where a command may write."""

import os
import re

import pytest

from emovit_utils.files import atomic_write_text


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "out" / "file.txt"
    atomic_write_text(path, "first")
    assert path.read_text() == "first" and oct(path.stat().st_mode & 0o777) != oct(0o600)

    def fail(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("interrupted")

    from emovit_utils.files import atomic_write

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == "first" and sorted(p.name for p in path.parent.iterdir()) == ["file.txt"]


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")

    with pytest.raises(TypeError):
        atomic_write_text(target, 123)  # fails mid-write
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


def test_atomic_write_folder_replaces_the_whole_folder_or_leaves_the_old_one(tmp_path):
    import os

    from emovit_utils.files import FOLDER_MARKER, atomic_write_folder

    target = tmp_path / "out"
    atomic_write_folder(target, lambda folder: (folder / "a.txt").write_text("first"), kind="test export")
    assert (target / "a.txt").read_text() == "first"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder, not the private temporary one

    def half_then_fail(folder):
        (folder / "b.txt").write_text("half")
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        atomic_write_folder(target, half_then_fail, kind="test export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left beside it
    assert sorted(p.name for p in target.iterdir()) == [FOLDER_MARKER, "a.txt"]

    atomic_write_folder(target, lambda folder: (folder / "c.txt").write_text("second"), kind="test export")
    assert sorted(p.name for p in target.iterdir()) == [FOLDER_MARKER, "c.txt"]  # replaced, not merged


def test_atomic_write_folder_never_replaces_a_folder_it_did_not_write(tmp_path):
    """A user's folder (a thesis and a sub-folder) is refused before anything is written, and stays as it was."""
    from emovit_utils.files import atomic_write_folder

    target = tmp_path / "mine"
    (target / "sub").mkdir(parents=True)
    (target / "thesis.txt").write_text("three years of work")
    (target / "sub" / "data.csv").write_text("1,2")
    written = []
    with pytest.raises(ValueError, match="thesis.txt") as info:
        atomic_write_folder(target, lambda folder: written.append(folder), kind="test export", what="--export_dir")
    assert "--export_dir" in str(info.value) and str(target) in str(info.value) and "never deleted" in str(info.value)
    assert written == []  # refused before the (possibly long) write
    assert _tree(target) == ["sub", "sub/data.csv", "thesis.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_atomic_write_folder_replaces_only_its_own_kind_with_nothing_added(tmp_path):
    from emovit_utils.files import atomic_write_folder

    target = tmp_path / "export"
    target.mkdir()  # an empty folder holds nothing to lose
    atomic_write_folder(target, lambda folder: (folder / "a.txt").write_text("first"), kind="test export")
    atomic_write_folder(target, lambda folder: (folder / "b.txt").write_text("second"), kind="test export")
    assert (target / "b.txt").read_text() == "second" and not (target / "a.txt").exists()
    with pytest.raises(ValueError, match="other export"):
        atomic_write_folder(target, lambda folder: None, kind="other export")
    (target / "notes.md").write_text("mine")  # added by the user after the export was written
    with pytest.raises(ValueError, match="notes.md"):
        atomic_write_folder(target, lambda folder: None, kind="test export")
    assert (target / "notes.md").read_text() == "mine" and (target / "b.txt").read_text() == "second"
    (target / "notes.md").unlink()
    file = tmp_path / "file.txt"
    file.write_text("not a folder")
    with pytest.raises(ValueError, match="not a folder"):
        atomic_write_folder(file, lambda folder: None, kind="test export")
    assert file.read_text() == "not a folder"


def test_atomic_write_folder_refuses_the_current_folder_its_parents_and_protected_folders(tmp_path, monkeypatch):
    from emovit_utils.files import atomic_write_folder

    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "records.jsonl").write_text("{}\n")
    monkeypatch.chdir(work)
    for target in (".", "..", str(work)):
        with pytest.raises(ValueError, match="current folder"):
            atomic_write_folder(target, lambda folder: (folder / "x").write_text("x"), kind="test export")
    # The inputs of the writer, and every folder above them, are refused too, even when empty of anything else.
    data = work / "data"
    for target in (data, work / "data" / ".." / "data"):
        with pytest.raises(ValueError, match="input"):
            atomic_write_folder(target, lambda folder: None, kind="test export", protected=[data])
    outside = tmp_path / "other" / "data"
    outside.mkdir(parents=True)
    with pytest.raises(ValueError, match="input"):
        atomic_write_folder(tmp_path / "other", lambda folder: None, kind="test export", protected=[outside])
    assert (work / "data" / "records.jsonl").read_text() == "{}\n" and outside.is_dir()
    assert sorted(p.name for p in work.iterdir()) == ["data"] and sorted(p.name for p in tmp_path.iterdir()) == [
        "other", "work"]


def test_an_output_over_an_input_an_image_or_inside_a_folder_read_whole_is_refused(tmp_path):
    from PIL import Image

    from emovit_utils.files import check_output_path

    photos, data, model = tmp_path / "pin2", tmp_path / "data", tmp_path / "model"
    for folder in (photos, data / "awe", model):
        folder.mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(photos / "red.jpg")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "scan.dat", format="PNG")  # an image by content, not by name
    (model / "config.json").write_text("{}")
    os.symlink(photos / "red.jpg", tmp_path / "latest.jsonl")
    os.link(model / "config.json", tmp_path / "hard.jsonl")
    inputs = [str(photos / "red.jpg"), str(model / "config.json")]
    for output, words in [
        (photos / "red.jpg", "is the input"),
        (tmp_path / "latest.jsonl", "is the input"),  # a link to it
        (tmp_path / "hard.jsonl", "is the input"),  # a hard link to a model file
        (tmp_path / "new.png", "is named like an image (.png)"),
        (tmp_path / "scan.dat", "is an image file"),
        (photos, "is a folder"),
    ]:
        with pytest.raises(ValueError, match=rf"^--output '{output}' {re.escape(words)}.*[Pp]ass"):
            check_output_path("--output", str(output), inputs)
    check_output_path("--output", str(photos / "preds.jsonl"), inputs)  # next to the photos is fine

    folder_inputs = [str(model), str(data)]
    for output, words in [
        (data, "is the input"),
        (model, "is the input"),
        (data / "awe", f"lies inside {str(data)!r}"),
        (data / "eval", f"lies inside {str(data)!r}"),
        (photos / "red.jpg", "is an image file (JPEG), not a folder"),
        (model / "config.json", "is a file, not a folder"),
    ]:
        with pytest.raises(ValueError, match=rf"^--output_dir '{output}' {re.escape(words)}.*[Pp]ass"):
            check_output_path("--output_dir", str(output), folder_inputs, read_folders=[str(data)], folder=True)
    for output in (model / "eval", tmp_path / "runs" / "eval", tmp_path):
        check_output_path("--output_dir", str(output), folder_inputs, read_folders=[str(data)], folder=True)
