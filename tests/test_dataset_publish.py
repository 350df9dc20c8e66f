"""Export to a Hub-ready Parquet folder (loaded back with plain `load_dataset`) and upload to an HfApi stand-in."""

import json
import shutil
from pathlib import Path

import datasets
import pytest
import yaml

from dataset_builder.build import BuildOptions, run_build
from dataset_builder.prompts import prompt_hash, template_hash
from dataset_builder.publish import LICENCE_NOTE, check_loadable, export_parquet_folder, upload_folder


@pytest.fixture(scope="module")
def exported(synthetic_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("publish")
    # A private copy of the images, removed after export: the Parquet files must not need it.
    root = base / "emoset"
    shutil.copytree(synthetic_root, root)
    out = base / "out"
    run_build(BuildOptions(emoset_root=str(root), output_dir=str(out), show_progress=False,
                           per_class={"categorical": 2, "conversation": 1, "reasoning": 1}))
    counts = export_parquet_folder(out, base / "hub")
    shutil.rmtree(root)
    return base / "hub", counts


def test_exported_folder_loads_without_remote_code(exported, tmp_path):
    hub, counts = exported
    assert counts == {"categorical": 16, "conversation": 24, "reasoning": 8, "all": 48}
    reasoning = datasets.load_dataset(str(hub), "reasoning", split="train", cache_dir=str(tmp_path))
    assert len(reasoning) == 8 and set(reasoning["type"]) == {"reasoning"}
    assert isinstance(reasoning.features["emotion"], datasets.ClassLabel)
    assert reasoning[0]["image"].size == (64, 64)  # bytes embedded: the EmoSet copy is gone
    everything = datasets.load_dataset(str(hub), split="train", cache_dir=str(tmp_path))  # the default config is "all"
    assert len(everything) == 48


def test_card_has_counts_prompts_generator_and_licence(exported):
    hub, _ = exported
    card = (hub / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert [c["config_name"] for c in header["configs"]] == ["categorical", "conversation", "reasoning", "all"]
    assert "| reasoning | 8 |" in card and "| all | 48 |" in card
    assert prompt_hash("categorical") in card and template_hash() in card
    assert "conversation: `template`" in card
    assert LICENCE_NOTE in card
    summary = json.loads((hub / "summary.json").read_text())
    assert "emoset_root" not in summary and "emoset_root" not in summary["args"]


def test_card_has_the_quality_report_and_its_plot(exported):
    from PIL import Image

    hub, _ = exported
    card = (hub / "README.md").read_text()
    quality = card.split("## Quality")[1].split("\n## ")[0]
    # 8 images x 3 template pairs; categorical answers of 3 words; the template writer removed nothing, sent nothing
    assert "| conversation | 24 |" in quality and "| categorical | 16 | 3 / 3 / 3 / 3 |" in quality
    assert "| 0 / 0 | - | - |" in quality and "Jaccard >= 0.7" in quality
    assert "![Quality report](quality.png)" in quality
    with Image.open(hub / "quality.png") as image:
        assert image.format == "PNG"
    summary = json.loads((hub / "summary.json").read_text())
    assert summary["quality"]["records_per_type_and_emotion"]["reasoning"]["awe"] == 1


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: records calls and copies the folder to a local 'remote'."""

    def __init__(self, remote: Path):
        self.remote = remote
        self.calls = []

    def create_repo(self, repo_id, repo_type=None, private=False, exist_ok=False):
        self.calls.append(("create_repo", repo_id, repo_type, private, exist_ok))
        return f"https://hub.invalid/datasets/{repo_id}"

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None, ignore_patterns=None):
        self.calls.append(("upload_folder", repo_id, repo_type, commit_message))
        # As the Hub client does: files matching ignore_patterns stay behind.
        shutil.copytree(folder_path, self.remote / repo_id, ignore=shutil.ignore_patterns(*(ignore_patterns or [])))
        return f"https://hub.invalid/datasets/{repo_id}/commit/1"


def test_upload_sends_the_exported_folder(exported, tmp_path):
    hub, _ = exported
    api = RecordingHfApi(tmp_path)
    url = upload_folder(api, hub, "me/emovit-instructions", private=True)
    assert url.endswith("/commit/1")
    assert api.calls[0] == ("create_repo", "me/emovit-instructions", "dataset", True, True)
    assert api.calls[1][:3] == ("upload_folder", "me/emovit-instructions", "dataset")
    remote = tmp_path / "me" / "emovit-instructions"
    assert len(datasets.load_dataset(str(remote), "conversation", split="train", cache_dir=str(tmp_path / "c"))) == 24


def test_check_loadable_refuses_a_wrong_row_count(exported):
    hub, _ = exported
    with pytest.raises(RuntimeError, match="loads 8 rows, expected 9"):
        check_loadable(hub, "reasoning", 9)


def test_push_command_without_repo_only_exports(synthetic_root, tmp_path, capsys):
    from dataset_builder.__main__ import main

    out = tmp_path / "out"
    run_build(BuildOptions(emoset_root=str(synthetic_root), output_dir=str(out), types=("categorical",),
                           per_class={"categorical": 1}, show_progress=False))
    main(["push", "--dataset_dir", str(out)])
    assert "'categorical': 8" in capsys.readouterr().out
    assert (out / "hub" / "categorical" / "train-00000-of-00001.parquet").is_file()
    assert len(datasets.load_dataset(str(out / "hub"), "categorical", split="train", cache_dir=str(tmp_path / "c"))) == 8


@pytest.fixture(scope="module")
def small_build(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("small-build") / "out"
    run_build(BuildOptions(emoset_root=str(synthetic_root), output_dir=str(out), types=("categorical",),
                           per_class={"categorical": 1}, show_progress=False))
    return out


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_push_never_deletes_a_folder_it_did_not_write(small_build, tmp_path):
    """`--export_dir` naming a folder of the user's own is refused with one line, and the folder stays as it was."""
    from dataset_builder.__main__ import main

    from testing_utils import run_main

    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "thesis.txt").write_text("three years of work")
    (mine / "sub" / "notes.md").write_text("notes")
    result = run_main("python -m dataset_builder", main,
                      ["push", "--dataset_dir", small_build, "--export_dir", mine])
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "--export_dir" in result.stderr and "thesis.txt" in result.stderr
    assert _tree(mine) == ["sub", "sub/notes.md", "thesis.txt"]
    assert (mine / "thesis.txt").read_text() == "three years of work"


@pytest.mark.parametrize("where", ["current folder", "dataset folder", "parent of the dataset folder"])
def test_push_refuses_the_current_folder_the_dataset_folder_and_its_parents(small_build, tmp_path, monkeypatch,
                                                                            where):
    from dataset_builder.__main__ import main

    before = _tree(small_build.parent)
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    export_dir = {"current folder": ".", "dataset folder": str(small_build),
                  "parent of the dataset folder": str(small_build.parent)}[where]
    with pytest.raises(ValueError, match="--export_dir"):
        main(["push", "--dataset_dir", str(small_build), "--export_dir", export_dir])
    assert _tree(small_build.parent) == before and _tree(work) == ["keep.txt"]


def test_push_replaces_its_own_earlier_export_and_uploads_no_marker(small_build, tmp_path):
    from emovit_utils.files import FOLDER_MARKER

    hub = tmp_path / "hub"
    assert export_parquet_folder(small_build, hub) == {"categorical": 8, "all": 8}
    first = (hub / "categorical" / "train-00000-of-00001.parquet").stat().st_mtime_ns
    assert export_parquet_folder(small_build, hub) == {"categorical": 8, "all": 8}  # an earlier export: replaced
    assert (hub / "categorical" / "train-00000-of-00001.parquet").stat().st_mtime_ns != first
    api = RecordingHfApi(tmp_path / "remote")
    upload_folder(api, hub, "me/small")
    assert (hub / FOLDER_MARKER).is_file() and not (tmp_path / "remote" / "me" / "small" / FOLDER_MARKER).exists()
    assert (tmp_path / "remote" / "me" / "small" / "README.md").is_file()


@pytest.mark.parametrize("damage, words", [
    (lambda out: open(out / "instructions.jsonl", "a").write('{"broken": 1}\n'), "instructions.jsonl:9"),
    (lambda out: (out / "summary.json").write_text("[]"), "summary.json holds a list"),
    (lambda out: shutil.rmtree(out), "summary.json does not exist"),
])
def test_push_input_errors_end_in_one_line_naming_the_file(small_build, tmp_path, damage, words):
    from dataset_builder.__main__ import main

    from testing_utils import run_main

    out = tmp_path / "out"
    shutil.copytree(small_build, out)
    damage(out)
    result = run_main("python -m dataset_builder", main,
                      ["push", "--dataset_dir", out, "--export_dir", tmp_path / "hub"])
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"python -m dataset_builder: error: {out}" in result.stderr and words in result.stderr
    assert not (tmp_path / "hub").exists()
