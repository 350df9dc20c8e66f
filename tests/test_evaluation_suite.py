"""emovit.evaluation.suite: reading a suite file (defaults, relative paths, groups, skipped entries, the errors naming
entry, group and key), missing dataset paths listed before any work or reported as skipped rows, the binary sentiment
tasks on the synthetic layouts, configs/eval_vecbench.yaml's grouping, and suite runs of the tiny model whose task
rows match each entry's metrics.json and whose group rows match what the entries' predictions give."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import f1_score, roc_auc_score

from emovit.evaluation.benchmarks import load_benchmark
from emovit.evaluation.labels import label_mapping, reference_indices
from emovit.evaluation.suite import SuiteArguments, format_table, read_groups, read_suite, run_suite
from emovit.evaluation.synthetic_benchmarks import VECBENCH_GROUPS, write_synthetic_benchmarks
from modeling_emovit import EMOSET_EMOTIONS

from testing_utils import run_script


REPO_ROOT = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="module")
def synthetic_benchmarks(tmp_path_factory):
    return write_synthetic_benchmarks(tmp_path_factory.mktemp("bench"), images_per_class=3)


@pytest.mark.parametrize("entry", ["fi-2", "emoset-2", "webemo-2", "twitter1", "twitter2"])
def test_binary_sentiment_tasks_read_the_synthetic_layouts_through_their_label_maps(synthetic_benchmarks, entry):
    settings = next(e for e in read_suite(synthetic_benchmarks) if e["name"] == entry)
    data = load_benchmark(settings["dataset"], settings.get("split", "test"), settings.get("dataset_format"))
    labels = label_mapping(settings["label_map"], list(EMOSET_EMOTIONS))
    assert labels.targets == ["positive", "negative"]
    references = reference_indices(data.labels, labels.mapping, labels.targets)
    assert set(references) == {0, 1}  # both sentiments present
    # Mikels' first four emotions are positive (FI, EmoSet read as their 8 labels and folded by the map).
    for label, reference in zip(data.labels, references):
        expected = label if label in ("positive", "negative") else labels.mapping[label]
        assert labels.targets[reference] == expected
        if label in EMOSET_EMOTIONS:
            assert expected == ("positive" if EMOSET_EMOTIONS.index(label) < 4 else "negative")


def test_read_groups_keeps_the_file_order_and_allows_ungrouped_entries(tmp_path):
    suite = write_suite(tmp_path / "suite.yaml", {"entries": [{"name": n, "dataset": "d"} for n in "abcd"],
                                                  "groups": {"second": ["c", "a"], "first": ["b"]}})
    assert read_groups(suite, read_suite(suite)) == {"second": ["c", "a"], "first": ["b"]}  # d in no group
    bare = write_suite(tmp_path / "bare.yaml", [{"name": "a", "dataset": "d"}])
    assert read_groups(bare, read_suite(bare)) == {}


@pytest.mark.parametrize("groups, message", [
    ({"g": ["a", "nope"]}, "group 'g': \\['nope'\\] are not entry names of this suite"),
    ({"g": []}, "group 'g' is \\[\\]; a group must list at least one entry name"),
    ({"g": "a"}, "group 'g' is 'a'; a group must list at least one entry name"),
    ({"g": ["a", "a"]}, "group 'g' lists an entry more than once"),
    (["a"], "'groups' is \\['a'\\]; it must be a non-empty mapping"),
    ({}, "'groups' is \\{\\}; it must be a non-empty mapping"),
])
def test_read_groups_errors_name_the_group(tmp_path, groups, message):
    suite = write_suite(tmp_path / "suite.yaml", {"entries": [{"name": "a", "dataset": "d"},
                                                              {"name": "b", "dataset": "d"}], "groups": groups})
    with pytest.raises(ValueError, match=message):
        read_groups(suite, read_suite(suite))


def test_a_skip_needs_a_reason_and_a_skipped_entry_needs_no_dataset(tmp_path):
    refused = write_suite(tmp_path / "refused.yaml", [{"name": "a", "dataset": "d", "skip": True}])
    with pytest.raises(ValueError, match="entry 0 \\('a'\\): 'skip' is True; give the reason"):
        read_suite(refused)
    suite = write_suite(tmp_path / "suite.yaml", {"entries": [{"name": "a", "dataset": "nope", "skip": "why not"}],
                                                  "groups": {"g": ["a"]}})
    table = run_suite(SuiteArguments(model=str(tmp_path / "no-model"), suite=str(suite),
                                     output_dir=str(tmp_path / "out")))
    assert table["rows"][0]["status"] == "skipped: why not"  # the missing dataset was not checked, nothing loaded
    assert table["groups"][0] | {"status": None} == {
        "group": "g", "tasks": "a", "num_tasks_evaluated": 0, "num_images": 0, "accuracy_mean": None,
        "macro_f1_mean": None, "weighted_f1_mean": None, "ece_10": None, "brier": None, "auroc_correct": None,
        "aurc": None, "selective": None, "status": None}
    assert table["groups"][0]["status"] == "no task evaluated"


def test_eval_vecbench_config_holds_vecbench_groups_with_webemo25_skipped(tmp_path):
    config = REPO_ROOT / "configs" / "eval_vecbench.yaml"
    entries = read_suite(config)
    assert read_groups(config, entries) == VECBENCH_GROUPS
    by_name = {entry["name"]: entry for entry in entries}
    assert [name for name, entry in by_name.items() if "skip" in entry] == ["webemo-25"]
    assert by_name["fi-2"]["label_map"] == "binary" and by_name["webemo-2"]["label_map"] == "webemo2"
    table = run_suite(SuiteArguments(model=str(tmp_path / "no-model"), suite=str(config),
                                     output_dir=str(tmp_path / "out"), skip_missing=True))
    assert [group["group"] for group in table["groups"]] == list(VECBENCH_GROUPS)
    assert table["rows"][5]["status"].startswith("skipped: WebEmo's 25 fine labels")


def pooled_expected(out: Path, members: list[str]) -> dict:
    """The group's pooled calibration computed here from the members' predictions.jsonl, independently of the suite:
    10-bin ECE by hand, Brier over each task's own labels, AUROC and F1 by scikit-learn (labels by name), AURC by
    hand (equal confidences share their errors)."""
    confidence, correct, brier, gold, answer = [], [], [], [], []
    for member in members:
        for text in (out / member / "predictions.jsonl").read_text().splitlines():
            line = json.loads(text)
            confidence.append(max(line["scores"].values()))
            correct.append(line["correct"])
            gold.append(line["label"])
            answer.append(max(line["scores"], key=line["scores"].get))
            brier.append(sum((p - (label == line["label"])) ** 2 for label, p in line["scores"].items()))
    confidence, correct = np.array(confidence), np.array(correct, dtype=float)
    ece = 0.0
    for b in range(10):
        members_of_bin = (confidence > b / 10) & (confidence <= (b + 1) / 10) | ((b == 0) & (confidence == 0))
        if members_of_bin.any():
            ece += members_of_bin.mean() * abs(correct[members_of_bin].mean() - confidence[members_of_bin].mean())
    auroc = roc_auc_score(correct, confidence) if 0 < correct.sum() < len(correct) else None
    gold, answer = np.array(gold), np.array(answer)
    selective = []
    for threshold in [round(0.1 * k, 1) for k in range(1, 10)]:
        kept = confidence >= threshold - 1e-9
        selective.append({"coverage": kept.mean(), "accuracy": correct[kept].mean() if kept.any() else None,
                          "macro_f1": f1_score(gold[kept], answer[kept], average="macro") if kept.any() else None})
    errors = []
    for value in sorted(set(confidence.tolist()), reverse=True):
        tie = confidence == value
        errors += [1 - correct[tie].mean()] * int(tie.sum())
    aurc = float(np.mean(np.cumsum(errors) / np.arange(1, len(errors) + 1)))
    return {"ece_10": ece, "brier": float(np.mean(brier)), "auroc_correct": auroc, "num_images": len(confidence),
            "selective": selective, "aurc": aurc}


def test_suite_group_rows_match_the_pooled_predictions_of_their_tasks(tmp_path, tiny_dir, synthetic_benchmarks):
    out = tmp_path / "out"
    done = run_script("evaluate", ["--model", tiny_dir, "--suite", synthetic_benchmarks, "--output_dir", out,
                                   "--batch_size", 16])
    assert done.returncode == 0, done.stderr
    table = json.loads((out / "suite_results.json").read_text())
    assert [group["group"] for group in table["groups"]] == list(VECBENCH_GROUPS)
    rows = {row["name"]: row for row in table["rows"]}
    defined_auroc = 0
    for group, members in zip(table["groups"], VECBENCH_GROUPS.values()):
        evaluated = [member for member in members if rows[member]["status"] == "evaluated"]
        assert evaluated == [member for member in members if member != "webemo-25"]
        metrics = [json.loads((out / member / "metrics.json").read_text()) for member in evaluated]
        assert group["accuracy_mean"] == pytest.approx(np.mean([m["accuracy"] for m in metrics]), abs=1e-12)
        assert group["macro_f1_mean"] == pytest.approx(np.mean([m["macro_f1"] for m in metrics]), abs=1e-12)
        expected = pooled_expected(out, evaluated)
        assert group["num_images"] == expected["num_images"] == sum(m["num_images"] for m in metrics)
        assert group["ece_10"] == pytest.approx(expected["ece_10"], abs=1e-9)
        assert group["brier"] == pytest.approx(expected["brier"], abs=1e-9)
        if expected["auroc_correct"] is None:
            assert group["auroc_correct"] is None
        else:
            defined_auroc += 1
            assert group["auroc_correct"] == pytest.approx(expected["auroc_correct"], abs=1e-9)
        assert group["aurc"] == pytest.approx(expected["aurc"], abs=1e-9)
        assert [row["threshold"] for row in group["selective"]] == [round(0.1 * k, 1) for k in range(1, 10)]
        for row, expected_row in zip(group["selective"], expected["selective"]):
            assert row["coverage"] == pytest.approx(expected_row["coverage"], abs=1e-12)
            for key in ("accuracy", "macro_f1"):
                assert (row[key] is None) == (expected_row[key] is None)
                if row[key] is not None:
                    assert row[key] == pytest.approx(expected_row[key], abs=1e-9)
        assert group["num_tasks_evaluated"] == len(evaluated)
        assert group["status"] == ("evaluated" if len(evaluated) == len(members)
                                   else "3 of 4 tasks; not evaluated: webemo-25 (see rows)")
    assert defined_auroc >= 1  # the comparison of AUROCs ran at least once
    # The printed table is the written one, group section included.
    markdown = (out / "suite_results.md").read_text()
    assert markdown == format_table(table) and markdown in done.stdout
    group_line = next(line for line in markdown.splitlines() if line.startswith("| out-of-domain "))
    assert f"| {table['groups'][2]['ece_10']:.4f} |" in group_line
    assert "Selective prediction" in markdown
    selective_lines = [line for line in markdown.splitlines() if line.startswith("| in-domain-sentiment | ")]
    assert len(selective_lines) == 1 + 9  # its group row and one row per threshold
