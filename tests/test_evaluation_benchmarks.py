"""emovit.evaluation.benchmarks: each reader on a tiny dataset written here in that benchmark's published layout, the
counted skips and the errors naming file, line, field and value, WebEmo's hierarchy, leaving out uncovered labels,
the KL divergence (by hand and through an evaluation run)."""

import json
import math
import random
from pathlib import Path

import pytest

from dataset_builder.synthetic import draw_image
from emovit.evaluation.benchmarks import (
    distribution_metrics,
    drop_uncovered,
    kl_divergence,
    load_benchmark,
    webemo_label,
)
from emovit.evaluation.data import EvalData


def save_image(path, emotion="awe", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_image(emotion, random.Random(seed)).save(path)


# ----------------------------------------------------------------------------------------------------- ArtPhoto


def test_artphoto_labels_come_from_file_name_prefixes(tmp_path):
    for name in ("amusement_1.jpg", "sad_0012.jpg", "awe_a_b.jpg", "fear_3.png"):
        save_image(tmp_path / name)
    save_image(tmp_path / "holiday_2.jpg")  # no emotion prefix
    save_image(tmp_path / "nounderscore.jpg")
    (tmp_path / "readme.txt").write_text("not an image")
    data = load_benchmark(str(tmp_path), "all", "artphoto")
    assert dict(zip(data.ids, data.labels)) == {"amusement_1": "amusement", "awe_a_b": "awe", "fear_3": "fear",
                                                "sad_0012": "sadness"}
    assert all(path.startswith(str(tmp_path)) for path in data.paths)
    reasons = {skip["id"]: skip["reason"] for skip in data.skipped}
    assert set(reasons) == {"holiday_2.jpg", "nounderscore.jpg"}
    assert "'holiday'" in reasons["holiday_2.jpg"]
    assert data.image(0).mode == "RGB"


def test_formats_without_a_split_take_all_or_test_only(tmp_path):
    save_image(tmp_path / "anger_1.jpg")
    assert load_benchmark(str(tmp_path), "test", "artphoto").ids == ["anger_1"]
    with pytest.raises(ValueError, match="no published split.*'train'"):
        load_benchmark(str(tmp_path), "train", "artphoto")
    with pytest.raises(ValueError, match="--dataset_format is 'artfoto'"):
        load_benchmark(str(tmp_path), "all", "artfoto")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_benchmark(str(tmp_path / "nowhere"), "all", "artphoto")


# ----------------------------------------------------------------------------------------------------- Abstract


ABSTRACT_HEADER = "'','Amusement','Anger','Awe','Content','Disgust','Excitement','Fear','Sad'"


def write_abstract(root, rows):
    root.mkdir(parents=True, exist_ok=True)
    (root / "ABSTRACT_groundTruth.csv").write_text("\n".join([ABSTRACT_HEADER, *rows]) + "\n")


def test_abstract_takes_the_majority_vote_and_skips_ties(tmp_path):
    for n in range(1, 5):
        save_image(tmp_path / f"abstract_{n:04d}.jpg")
    write_abstract(tmp_path, [
        "'abstract_0001.jpg',0,1,0,9,0,0,2,0",  # content -> contentment
        "'abstract_0002.jpg',0,0,0,0,0,0,1,5",  # sad -> sadness
        "'abstract_0003.jpg',3,0,3,0,0,0,0,0",  # tie
        "'abstract_0004.jpg',0,0,0,0,0,0,0,0",  # no votes
        "'abstract_0099.jpg',7,0,0,0,0,0,0,0",  # no such image
        "'abstract_0005.jpg',1,2",  # short row
    ])
    data = load_benchmark(str(tmp_path), "all", "abstract")
    assert dict(zip(data.ids, data.labels)) == {"abstract_0001": "contentment", "abstract_0002": "sadness"}
    reasons = {skip["id"]: skip["reason"] for skip in data.skipped}
    assert "tie between ['amusement', 'awe']" in reasons["abstract_0003.jpg"]
    assert reasons["abstract_0004.jpg"] == "no votes"
    assert "missing" in reasons["abstract_0099.jpg"]
    assert "3 fields" in reasons["ABSTRACT_groundTruth.csv:7"]


def test_abstract_errors_name_the_file_line_and_value(tmp_path):
    save_image(tmp_path / "abstract_0001.jpg")
    write_abstract(tmp_path, ["'abstract_0001.jpg',0,1,0,x9,0,0,2,0"])
    with pytest.raises(ValueError, match=r"line 2 \(abstract_0001.jpg\), column 'contentment': vote count 'x9'"):
        load_benchmark(str(tmp_path), "all", "abstract")
    (tmp_path / "ABSTRACT_groundTruth.csv").write_text("'','Amusement','Joy'\n")
    with pytest.raises(ValueError, match="column 3 is 'Joy'"):
        load_benchmark(str(tmp_path), "all", "abstract")
    (tmp_path / "ABSTRACT_groundTruth.csv").unlink()
    with pytest.raises(FileNotFoundError, match="ABSTRACT_groundTruth.csv"):
        load_benchmark(str(tmp_path), "all", "abstract")


# ----------------------------------------------------------------------------------------------------- Emotion6


EMOTION6_HEADER = "\t".join(["[image_filename]", "[valence]", "[arousal]", "[prob. anger]", "[prob. disgust]",
                              "[prob. fear]", "[prob. joy]", "[prob. sadness]", "[prob. surprise]", "[prob. neutral]"])


def write_emotion6(root, rows):
    root.mkdir(parents=True, exist_ok=True)
    (root / "ground_truth.txt").write_text("\n".join([EMOTION6_HEADER, *rows]) + "\n")


def test_emotion6_reads_folder_labels_and_the_seven_probabilities(tmp_path):
    save_image(tmp_path / "images" / "joy" / "1.jpg")
    save_image(tmp_path / "images" / "fear" / "7.jpg")
    write_emotion6(tmp_path, [
        "joy/1.jpg\t6.2\t4.1\t0\t0\t0.1\t0.7\t0\t0.1\t0.1",
        "fear/7.jpg\t2.5\t6.0\t0.1\t0.1\t0.5\t0\t0.2\t0\t0.1",
        "fear/8.jpg\t2.5\t6.0\t0.1\t0.1\t0.5\t0\t0.2\t0\t0.1",  # image missing
        "nofolder.jpg\t2.5\t6.0\t0.1\t0.1\t0.5\t0\t0.2\t0\t0.1",
    ])
    data = load_benchmark(str(tmp_path), "all", "emotion6")
    assert data.ids == ["joy/1", "fear/7"] and data.labels == ["joy", "fear"]
    assert data.distributions[0] == {"anger": 0.0, "disgust": 0.0, "fear": 0.1, "joy": 0.7, "sadness": 0.0,
                                     "surprise": 0.1, "neutral": 0.1}
    assert data.distributions[1]["fear"] == 0.5
    reasons = {skip["id"]: skip["reason"] for skip in data.skipped}
    assert "missing" in reasons["fear/8.jpg"] and "no label folder" in reasons["nofolder.jpg"]


def test_emotion6_errors_name_the_line_and_field(tmp_path):
    save_image(tmp_path / "images" / "joy" / "1.jpg")
    write_emotion6(tmp_path, ["joy/1.jpg\t6.2\t4.1\t0\t0\t0.1\tlots\t0\t0.1\t0.1"])
    with pytest.raises(ValueError, match=r"line 2 \(joy/1.jpg\), field 'prob. joy': 'lots' is not a number"):
        load_benchmark(str(tmp_path), "all", "emotion6")
    write_emotion6(tmp_path, ["joy/1.jpg\t6.2\t4.1\t0\t0\t0.1\t-0.5\t0\t0.1\t0.1"])
    with pytest.raises(ValueError, match="'prob. joy': -0.5 is not a probability"):
        load_benchmark(str(tmp_path), "all", "emotion6")
    (tmp_path / "ground_truth.txt").write_text("file\tvalence\n")
    with pytest.raises(ValueError, match="no '\\[prob. <label>\\]' columns"):
        load_benchmark(str(tmp_path), "all", "emotion6")


# ----------------------------------------------------------------------------------------------------- EmotionROI


def test_emotionroi_reads_the_published_split_lists(tmp_path):
    for label, n in (("anger", 1), ("anger", 2), ("joy", 3), ("surprise", 4)):
        save_image(tmp_path / "images" / label / f"{n}.jpg")
    lists = tmp_path / "training_testing_split"
    lists.mkdir()
    (lists / "training.txt").write_text("anger/1.jpg\njoy/3.jpg\n")
    (lists / "testing.txt").write_text("anger/2.jpg\nsurprise/4.jpg\n\nsurprise/9.jpg\nbroken-line\n")
    test = load_benchmark(str(tmp_path), "test", "emotionroi")
    assert test.ids == ["anger/2", "surprise/4"] and test.labels == ["anger", "surprise"]
    assert [skip["id"] for skip in test.skipped] == ["testing.txt:4 (surprise/9.jpg)", "testing.txt:5 (broken-line)"]
    train = load_benchmark(str(tmp_path), "train", "emotionroi")
    assert train.labels == ["anger", "joy"]
    assert len(load_benchmark(str(tmp_path), "all", "emotionroi").ids) == 4
    with pytest.raises(ValueError, match="splits are .* got --split 'val'"):
        load_benchmark(str(tmp_path), "val", "emotionroi")
    (lists / "testing.txt").unlink()
    with pytest.raises(FileNotFoundError, match="testing.txt"):
        load_benchmark(str(tmp_path), "test", "emotionroi")


# ----------------------------------------------------------------------------------------------------- WebEmo


def test_webemo_relabels_fine_grained_folders_at_each_level(tmp_path):
    for folder in ("affection", "rage", "confusion", "Cheerfulness"):
        save_image(tmp_path / "test" / folder / "a.jpg")
    save_image(tmp_path / "train" / "zest" / "b.jpg")
    # Folders are read in sorted order ("Cheerfulness" first); its usual spelling is the label list's "cheerfullness".
    assert load_benchmark(str(tmp_path), "test", "webemo25").labels == ["cheerfullness", "affection", "confusion",
                                                                       "rage"]
    assert load_benchmark(str(tmp_path), "test", "webemo7").labels == ["joy", "love", "confusion", "anger"]
    assert load_benchmark(str(tmp_path), "test", "webemo2").labels == ["positive", "positive", "negative",
                                                                      "negative"]
    assert load_benchmark(str(tmp_path), "train", "webemo7").labels == ["joy"]
    assert webemo_label("disgust", 7) == "anger" and webemo_label("irritability", 25) == "irritabilty"
    save_image(tmp_path / "test" / "boredom" / "c.jpg")
    with pytest.raises(ValueError, match="folder 'boredom' is not one of WebEmo's 25"):
        load_benchmark(str(tmp_path), "test", "webemo7")


def test_drop_uncovered_counts_what_it_leaves_out(tmp_path):
    data = EvalData(ids=["a", "b", "c"], labels=["joy", "confusion", "love"], paths=["pa", "pb", "pc"],
                    skipped=[{"id": "x", "reason": "earlier"}], distributions=[{"joy": 1}, {"x": 1}, {"love": 1}])
    kept = drop_uncovered(data, {"joy", "love", "anger"})
    assert kept.ids == ["a", "c"] and kept.paths == ["pa", "pc"] and kept.labels == ["joy", "love"]
    assert kept.distributions == [{"joy": 1}, {"love": 1}]
    assert kept.skipped[0]["reason"] == "earlier"
    assert kept.skipped[1]["id"] == "b" and "'confusion'" in kept.skipped[1]["reason"]
    with pytest.raises(ValueError, match="None of the dataset's labels"):
        drop_uncovered(EvalData(ids=["a"], labels=["confusion"], paths=["p"]), {"joy"})


# ----------------------------------------------------------------------------------------------------- KL


def test_kl_divergence_by_hand():
    p = {"joy": 0.5, "fear": 0.5}
    assert kl_divergence(p, {"joy": 0.5, "fear": 0.5}) == 0.0
    assert kl_divergence(p, {"joy": 0.25, "fear": 0.75}) == pytest.approx(
        0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75))
    # A label the annotators gave 0 costs nothing; one the model gives 0 costs a large finite amount.
    assert kl_divergence({"joy": 1.0, "fear": 0.0}, {"joy": 1.0, "fear": 0.0}) == 0.0
    assert kl_divergence({"joy": 1.0}, {"joy": 0.0}) == pytest.approx(-math.log(1e-12))


def test_distribution_metrics_drop_neutral_and_renormalise():
    data = EvalData(ids=["a", "b", "c"], labels=["joy", "fear", "joy"], paths=["", "", ""],
                    distributions=[{"joy": 0.4, "fear": 0.4, "neutral": 0.2}, {"joy": 0.0, "fear": 0.0, "neutral": 1.0},
                                   {"joy": 0.9, "fear": 0.0, "neutral": 0.1}])
    rows = [{"index": 0, "prompt_variant": 0, "scores": {"joy": 0.5, "fear": 0.5}},
            {"index": 1, "prompt_variant": 0, "scores": {"joy": 0.5, "fear": 0.5}},
            {"index": 2, "prompt_variant": 0, "scores": {"joy": 0.8, "fear": 0.2}},
            {"index": 0, "prompt_variant": 1, "scores": {"joy": 0.01, "fear": 0.99}}]  # other instruction: ignored
    metrics = distribution_metrics(data, rows, ["joy", "fear"])
    # Image 0: (0.5, 0.5) vs (0.5, 0.5) -> 0. Image 2: (1, 0) vs (0.8, 0.2) -> log(1/0.8). Image 1: neutral only.
    assert metrics["kl_divergence"] == pytest.approx(math.log(1 / 0.8) / 2)
    assert metrics["kl_num_images"] == 2 and metrics["kl_num_neutral_only"] == 1
    assert distribution_metrics(EvalData(ids=[], labels=[]), rows, ["joy"]) == {}
    assert "use --method score" in distribution_metrics(data, [{"index": 0, "prompt_variant": 0}], ["joy",
                                                                                                   "fear"])["kl_note"]
    assert distribution_metrics(data, rows, ["joy", "anger"])["kl_divergence"] is None


def test_emotion6_run_writes_kl_divergence_into_metrics_json(tmp_path, run_evaluation):
    root = tmp_path / "Emotion6"
    rows = []
    for k, label in enumerate(("anger", "disgust", "fear", "joy", "sadness", "surprise")):
        save_image(root / "images" / label / "1.jpg", seed=k)
        probabilities = ["0"] * 7
        probabilities[k], probabilities[6] = "0.75", "0.25"
        rows.append("\t".join([f"{label}/1.jpg", "5", "5", *probabilities]))
    write_emotion6(root, rows)
    metrics, lines, out = run_evaluation(tmp_path, root, split="all", dataset_format="emotion6",
                                         label_map="emotion6")
    assert metrics["num_images"] == 6
    # Each image's annotators put all the non-neutral mass on its label, so KL is -log(model's p(label)).
    expected = sum(-math.log(max(line["scores"][line["label"]], 1e-12)) for line in lines) / len(lines)
    assert metrics["kl_divergence"] == pytest.approx(expected, rel=1e-6)
    assert json.loads((out / "metrics.json").read_text())["kl_num_images"] == 6


# ----------------------------------------------------------------------------------------------------- symlinks


def _layout_emoset(root, link_name):
    save_image(root / "image" / "awe" / "awe_1.jpg")
    (root / "test.json").write_text(json.dumps([["awe", "awe_1", "image/awe/awe_1.jpg", ""],
                                                ["awe", "awe_2", f"image/awe/{link_name}", ""]]))
    return root / "image" / "awe" / link_name, None, "test"


def _layout_imagefolder(root, link_name):
    save_image(root / "awe" / "awe_1.jpg")
    return root / "awe" / link_name, None, "test"


def _layout_artphoto(root, link_name):
    save_image(root / "awe_1.jpg")
    return root / link_name, "artphoto", "all"


def _layout_abstract(root, link_name):
    save_image(root / "awe_1.jpg")
    write_abstract(root, ["'awe_1.jpg',0,0,5,0,0,0,0,0", f"'{link_name}',0,0,5,0,0,0,0,0"])
    return root / link_name, "abstract", "all"


def _layout_emotion6(root, link_name):
    save_image(root / "images" / "joy" / "awe_1.jpg")
    probabilities = "\t0\t0\t0\t1\t0\t0\t0"
    write_emotion6(root, [f"joy/awe_1.jpg\t5\t5{probabilities}", f"joy/{link_name}\t5\t5{probabilities}"])
    return root / "images" / "joy" / link_name, "emotion6", "all"


def _layout_emotionroi(root, link_name):
    save_image(root / "images" / "joy" / "awe_1.jpg")
    (root / "training_testing_split").mkdir()
    (root / "training_testing_split" / "testing.txt").write_text(f"joy/awe_1.jpg\njoy/{link_name}\n")
    return root / "images" / "joy" / link_name, "emotionroi", "test"


def _layout_webemo(root, link_name):
    save_image(root / "test" / "rage" / "awe_1.jpg")
    return root / "test" / "rage" / link_name, "webemo7", "test"


@pytest.mark.parametrize("layout", [_layout_emoset, _layout_imagefolder, _layout_artphoto, _layout_abstract,
                                    _layout_emotion6, _layout_emotionroi, _layout_webemo],
                         ids=lambda layout: layout.__name__.removeprefix("_layout_"))
def test_every_reader_skips_an_image_symlinked_from_outside_the_root(tmp_path, layout):
    outside = tmp_path / "private" / "awe_secret.jpg"
    save_image(outside, seed=1)
    root = tmp_path / "dataset"
    root.mkdir()
    link, dataset_format, split = layout(root, "awe_2.jpg")
    link.symlink_to(outside)
    data = load_benchmark(str(root), split, dataset_format)
    assert len(data.ids) == 1 and not any("awe_2" in image_id for image_id in data.ids)
    assert all(Path(path).resolve().is_relative_to(root.resolve()) for path in data.paths)
    reasons = [skip["reason"] for skip in data.skipped]
    assert any("outside the dataset root" in reason for reason in reasons), reasons


ANNOTATION_TABLES = {"test.json": _layout_emoset, "ABSTRACT_groundTruth.csv": _layout_abstract,
                     "ground_truth.txt": _layout_emotion6, "training_testing_split/testing.txt": _layout_emotionroi}


@pytest.mark.parametrize("table", list(ANNOTATION_TABLES))
def test_an_annotation_table_symlinked_from_outside_the_root_is_refused(tmp_path, table):
    layout = ANNOTATION_TABLES[table]
    root = tmp_path / "dataset"
    root.mkdir()
    _, dataset_format, split = layout(root, "awe_2.jpg")
    outside = tmp_path / "private.txt"
    (root / table).rename(outside)
    (root / table).symlink_to(outside)
    with pytest.raises(ValueError, match="outside the dataset root"):
        load_benchmark(str(root), split, dataset_format)


@pytest.mark.parametrize("layout", [_layout_emoset, _layout_imagefolder, _layout_artphoto, _layout_abstract,
                                    _layout_emotion6, _layout_emotionroi, _layout_webemo],
                         ids=lambda layout: layout.__name__.removeprefix("_layout_"))
def test_every_reader_counts_a_looping_symlink_as_a_skip(tmp_path, layout):
    root = tmp_path / "dataset"
    root.mkdir()
    link, dataset_format, split = layout(root, "awe_2.jpg")
    link.symlink_to(link.name)  # points at itself
    data = load_benchmark(str(root), split, dataset_format)
    assert [Path(path).name for path in data.paths] == ["awe_1.jpg"]
    assert any("awe_2" in skip["id"] and "loop" in skip["reason"] for skip in data.skipped), data.skipped
