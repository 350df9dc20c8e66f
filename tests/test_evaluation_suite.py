"""emovit.evaluation.suite: reading a suite file (defaults, relative paths, the errors naming entry and key), missing
dataset paths listed before any work or reported as skipped rows, and a suite run of the tiny model over three
synthetic benchmarks whose table matches each entry's metrics.json."""

import json
import re

import pytest
import yaml

from emovit.evaluation.suite import SuiteArguments, format_table, read_suite, run_suite
from emovit.evaluation.synthetic_benchmarks import write_synthetic_benchmarks


def write_suite(path, content):
    path.write_text(yaml.safe_dump(content))
    return path


def test_read_suite_applies_defaults_and_resolves_paths_from_the_suite_folder(tmp_path):
    (tmp_path / "data").mkdir()
    suite = write_suite(tmp_path / "suite.yaml", {
        "defaults": {"method": "generate", "split": "all"},
        "entries": [{"name": "a", "dataset": "data"}, {"name": "b", "dataset": "/abs/b", "split": "test"}]})
    entries = read_suite(suite)
    assert entries == [{"method": "generate", "split": "all", "name": "a", "dataset": str(tmp_path / "data")},
                       {"method": "generate", "split": "test", "name": "b", "dataset": "/abs/b"}]
    bare = write_suite(tmp_path / "bare.yaml", [{"name": "a", "dataset": "data"}])
    assert read_suite(bare) == [{"name": "a", "dataset": str(tmp_path / "data")}]


@pytest.mark.parametrize("content, message", [
    ([], "holds no entries"),
    ({"entries": [{"name": "a", "dataset": "d"}], "extra": 1}, "top-level keys \\['extra'\\]"),
    ([{"name": "a", "dataset": "d", "model": "m"}], "entry 0 \\('a'\\): keys \\['model'\\] are not allowed"),
    ([{"name": "a", "dataset": "d", "labelmap": "x"}], "keys \\['labelmap'\\] are not allowed"),
    ([{"name": "a"}], "entry 0: 'dataset' is None"),
    ([{"name": "a", "dataset": "d"}, {"name": "a", "dataset": "e"}], "entry 1: name 'a' is repeated"),
    (["fi"], "entry 0 is 'fi'"),
])
def test_read_suite_errors_name_the_entry_and_key(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        read_suite(write_suite(tmp_path / "suite.yaml", content))


def test_missing_dataset_paths_are_listed_before_any_work(tmp_path):
    suite = write_suite(tmp_path / "suite.yaml", [{"name": "a", "dataset": "nope-a"},
                                                  {"name": "b", "dataset": "nope-b"}])
    args = SuiteArguments(model=str(tmp_path / "no-model"), suite=str(suite), output_dir=str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="2 of 2 dataset paths do not exist .*a: .*nope-a; b: .*nope-b"):
        run_suite(args)
    assert not (tmp_path / "out").exists()  # nothing ran, not even the model load (its path does not exist either)
    args.skip_missing = True
    table = run_suite(args)
    assert [row["status"] for row in table["rows"]] == ["skipped: dataset path does not exist"] * 2
    assert "skipped: dataset path does not exist" in (tmp_path / "out" / "suite_results.md").read_text()


def test_suite_on_three_synthetic_benchmarks_matches_each_metrics_json(tmp_path, tiny_dir):
    write_synthetic_benchmarks(tmp_path / "bench", images_per_class=3)
    suite = write_suite(tmp_path / "suite.yaml", {"defaults": {"method": "score", "batch_size": 8}, "entries": [
        {"name": "artphoto", "dataset": "bench/ArtPhoto", "dataset_format": "artphoto", "split": "all"},
        {"name": "emotion6", "dataset": "bench/Emotion6", "dataset_format": "emotion6", "split": "all",
         "label_map": "emotion6"},
        {"name": "webemo7", "dataset": "bench/WebEmo", "dataset_format": "webemo7", "label_map": "webemo7",
         "skip_uncovered_labels": True},
    ]})
    out = tmp_path / "out"
    table = run_suite(SuiteArguments(model=str(tiny_dir), suite=str(suite), output_dir=str(out), max_images=12))
    assert [row["name"] for row in table["rows"]] == ["artphoto", "emotion6", "webemo7"]
    assert json.loads((out / "suite_results.json").read_text()) == table
    for row in table["rows"]:
        metrics = json.loads((out / row["name"] / "metrics.json").read_text())
        for key in ("num_images", "num_skipped", "accuracy", "macro_f1"):
            assert row[key] == metrics[key]
        assert row["num_images"] == 12 and row["status"] == "evaluated"
        assert metrics["arguments"]["batch_size"] == 8 and metrics["arguments"]["max_images"] == 12
    emotion6, webemo7 = table["rows"][1], table["rows"][2]
    assert emotion6["label_map"] == "emotion6" and emotion6["dataset_format"] == "emotion6"
    assert emotion6["kl_divergence"] == json.loads((out / "emotion6" / "metrics.json").read_text())["kl_divergence"]
    assert "kl_divergence" not in table["rows"][0]
    assert webemo7["num_skipped"] == 1  # WebEmo's confusion folder: no EmoSet label maps to it
    markdown = (out / "suite_results.md").read_text()
    assert markdown == format_table(table)
    header = markdown.splitlines()[2]
    assert header.startswith("| name | dataset_format | split | label_map | method | num_images")
    assert "kl_divergence" in header
    artphoto_line = next(line for line in markdown.splitlines() if line.startswith("| artphoto "))
    assert f"| {table['rows'][0]['accuracy']:.4f} |" in artphoto_line and "| – |" in artphoto_line  # no KL


def test_an_output_dir_over_a_dataset_or_the_suite_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "data" / "awe").mkdir(parents=True)
    suite = write_suite(tmp_path / "suite.yaml", [{"name": "a", "dataset": "data"},
                                                  {"name": "data", "dataset": "data"}])
    before = sorted(tmp_path.rglob("*"))
    for output_dir, message in [
        (tmp_path / "data", f"--output_dir '{tmp_path / 'data'}' is the input"),
        # Entry `data` would write into tmp_path/data, its own dataset.
        (tmp_path, f"--output_dir '{tmp_path / 'data'}' is the input"),
        (suite, f"--output_dir '{suite}' is the input '{suite}'"),
    ]:
        args = SuiteArguments(model=str(tmp_path / "no-model"), suite=str(suite), output_dir=str(output_dir))
        with pytest.raises(ValueError, match=re.escape(message)):
            run_suite(args)
        assert sorted(tmp_path.rglob("*")) == before  # nothing written, nothing loaded
