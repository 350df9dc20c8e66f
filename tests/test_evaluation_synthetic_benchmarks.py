"""emovit.evaluation.synthetic_benchmarks: the stand-ins read back through their readers with nothing skipped, the
suite file covers every layout, and each image is drawn as the EmoSet emotion its preset maps to its label."""

import yaml

from emovit.evaluation.benchmarks import DATASET_FORMATS, load_benchmark
from emovit.evaluation.synthetic_benchmarks import emoset_emotion_for, write_synthetic_benchmarks


def test_emoset_emotion_for_inverts_the_preset():
    assert emoset_emotion_for("joy", "emotion6") == "amusement"
    assert emoset_emotion_for("surprise", "emotion6") == "awe"
    assert emoset_emotion_for("love", "unbiasedemo") == "contentment"
    assert emoset_emotion_for("negative", "twitter") == "anger"
    assert emoset_emotion_for("sad", None) == "sadness" and emoset_emotion_for("awe", None) == "awe"


def test_synthetic_benchmarks_read_back_in_every_layout(tmp_path):
    suite = write_synthetic_benchmarks(tmp_path, images_per_class=3)
    entries = yaml.safe_load(suite.read_text())["entries"]
    assert {entry.get("dataset_format") for entry in entries} >= set(DATASET_FORMATS)
    counts = {}
    for entry in entries:
        data = load_benchmark(str(tmp_path / entry["dataset"]), entry.get("split", "test"),
                              entry.get("dataset_format"))
        assert not data.skipped
        counts[entry["name"]] = len(data.ids)
    assert counts["fi-8"] == counts["fi-2"] == counts["artphoto-8"] == counts["abstract-8"] == 24
    assert counts["twitter1"] == counts["twitter2"] == 6 and counts["emoset-8"] == counts["emoset-2"] > 0
    assert counts["emotion6"] == 18 and counts["emotionroi"] == 6  # every third image is in testing.txt


def test_too_few_images_per_class_ends_in_one_line_and_writes_nothing(tmp_path):
    from emovit.evaluation.synthetic_benchmarks import main

    from testing_utils import run_main

    out = tmp_path / "bench"
    result = run_main("python -m emovit.evaluation.synthetic_benchmarks", main,
                      ["--output_dir", out, "--images_per_class", "2"])
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("python -m emovit.evaluation.synthetic_benchmarks: error: --images_per_class 2")
    assert "use 3 or more" in first and not out.exists()


def test_the_command_never_writes_over_a_folder_it_did_not_write(tmp_path):
    """Its stand-ins share names with the real releases' layouts (FI/<label>/..., suite.yaml): a folder of someone
    else's is refused and left as it was; its own earlier folder is replaced whole."""
    import pytest

    from emovit.evaluation.synthetic_benchmarks import main

    mine = tmp_path / "benchmarks"
    (mine / "FI").mkdir(parents=True)
    (mine / "suite.yaml").write_text("# my own suite\n")
    with pytest.raises(ValueError, match="--output_dir") as info:
        main(["--output_dir", str(mine), "--images_per_class", "3"])
    assert "suite.yaml" in str(info.value) and (mine / "suite.yaml").read_text() == "# my own suite\n"
    assert sorted(p.name for p in mine.iterdir()) == ["FI", "suite.yaml"] and not any((mine / "FI").iterdir())
    out = tmp_path / "synthetic"
    main(["--output_dir", str(out), "--images_per_class", "3"])
    main(["--output_dir", str(out), "--images_per_class", "3"])
    assert yaml.safe_load((out / "suite.yaml").read_text())["entries"]
