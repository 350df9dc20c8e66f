"""emovit.inference.predict: the prediction run on the tiny model, in one process (the two-process run is tested
through predict.py in tests/test_predict_script.py)."""

import json
import os

import pytest

from emovit.inference.arguments import PredictArguments
from emovit.inference.files import find_images, read_image
from emovit.inference.predict import predict_images, write_predictions


def test_one_line_per_image_equal_to_classify_and_bad_images_skipped_with_reasons(photo_folder, tiny_dir,
                                                                                  tiny_model, tiny_processor):
    root, expected = photo_folder
    # Batches of 4: the 1x1 image shares its batch with two readable images, which are still predicted.
    args = PredictArguments(model=str(tiny_dir), top_k=3, batch_size=4)
    lines, summary = predict_images(args, find_images([str(root)]))

    assert [line["path"] for line in lines] == sorted(expected["readable"] + list(expected["unreadable"]))
    predicted = [line for line in lines if "error" not in line]
    assert [line["path"] for line in predicted] == expected["readable"]
    reference = tiny_model.classify([read_image(path) for path in expected["readable"]], tiny_processor)
    labels = list(tiny_model.config.emotion_labels)
    for line, label, scores in zip(predicted, reference.labels, reference.scores.tolist()):
        assert set(line) == {"path", "label", "scores"}
        assert line["label"] == label == line["scores"][0]["label"]
        assert len(line["scores"]) == 3
        assert [s["score"] for s in line["scores"]] == sorted((s["score"] for s in line["scores"]), reverse=True)
        for entry in line["scores"]:
            assert entry["score"] == pytest.approx(scores[labels.index(entry["label"])], abs=1e-5)
        assert max(scores) == pytest.approx(line["scores"][0]["score"], abs=1e-5)

    skipped = {line["path"]: line["error"] for line in lines if "error" in line}
    assert set(skipped) == set(expected["unreadable"])
    for path, words in expected["unreadable"].items():
        assert words in skipped[path] and (words == "1x1" or path in skipped[path])
    assert "processor refused this 1x1 image" in skipped[str(root / "bad" / "one_pixel.png")]

    assert summary["num_images"] == 13 and summary["num_predicted"] == 9 and summary["num_skipped"] == 4
    assert summary["skipped"] == [{"path": path, "error": skipped[path]} for path in sorted(skipped)]
    assert sum(summary["label_counts"].values()) == 9
    assert list(summary["label_counts"].values()) == sorted(summary["label_counts"].values(), reverse=True)
    assert summary["not_images"] == [str(root / "notes.txt")] and summary["num_processes"] == 1
    assert summary["images_per_second"] == pytest.approx(9 / summary["seconds"])


def test_generate_lines_carry_the_answer_text(photo_folder, tiny_dir, tiny_model, tiny_processor):
    root, expected = photo_folder
    paths = expected["readable"][:3]
    lines, summary = predict_images(PredictArguments(model=str(tiny_dir), method="generate", max_new_tokens=6),
                                    find_images(paths))
    reference = tiny_model.classify([read_image(path) for path in paths], tiny_processor, method="generate",
                                    max_new_tokens=6)
    assert [line["text"] for line in lines] == reference.texts
    assert [line["label"] for line in lines] == reference.labels
    assert summary["num_invalid"] == sum(label is None for label in reference.labels)
    for line in lines:
        assert len(line["scores"]) == len(tiny_model.config.emotion_labels)


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path):
    out = tmp_path / "predictions.jsonl"
    write_predictions(out, [{"path": "a.jpg", "label": "awe"}])
    before = out.read_bytes()
    with pytest.raises(TypeError):  # the second line cannot be written as JSON
        write_predictions(out, [{"path": "b.jpg", "label": "awe"}, {"path": "c.jpg", "label": object()}])
    assert out.read_bytes() == before and json.loads(before) == {"path": "a.jpg", "label": "awe"}
    assert os.listdir(tmp_path) == ["predictions.jsonl"]  # no temporary file left behind


@pytest.mark.parametrize("flags, message", [
    ({"method": "vote"}, r"--method is 'vote'"),
    ({"top_k": 0}, r"--top_k is 0"),
    ({"batch_size": 0}, r"--batch_size is 0"),
    ({"preset": "humour"}, r"--preset humour chooses the explanation's question; add --explain"),
    ({"explain": True, "preset": "poem"}, r"--preset is 'poem'"),
    ({"max_new_tokens": 20}, r"--max_new_tokens 20 bounds generated text"),
    ({"dtype": "int8"}, r"--dtype is 'int8'"),
])
def test_arguments_refuse_bad_values_by_name(flags, message):
    with pytest.raises(ValueError, match=message):
        PredictArguments(model="m", **flags)


def test_output_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"--output '.*' is a folder; pass a file name"):
        PredictArguments(model="m", output=str(tmp_path))


def test_explain_lines_are_explain_rows(photo_folder, tiny_dir, tiny_model, tiny_processor):
    root, expected = photo_folder
    paths = expected["readable"][:3] + [str(root / "bad" / "empty.png")]
    args = PredictArguments(model=str(tiny_dir), explain=True, preset="free", top_k=2, max_new_tokens=8)
    lines, summary = predict_images(args, find_images(paths))
    reference = tiny_model.explain([read_image(path) for path in paths[:3]], tiny_processor, preset="free",
                                   max_new_tokens=8)
    rows = reference.rows(list(tiny_model.config.emotion_labels), top_k=2)
    assert [line["path"] for line in lines] == sorted(paths)
    explained = [line for line in lines if "error" not in line]
    for line, row in zip(explained, rows):
        assert set(line) == {"path", "label", "scores", "explanation", "mentioned", "agreement"}
        assert {k: v for k, v in line.items() if k not in ("path", "scores")} == {
            k: v for k, v in row.items() if k != "scores"}
        assert [s["label"] for s in line["scores"]] == [s["label"] for s in row["scores"]]
        assert [s["score"] for s in line["scores"]] == pytest.approx([s["score"] for s in row["scores"]], abs=1e-5)
    assert summary["num_skipped"] == 1 and sum(summary["agreement_counts"].values()) == 3
    assert summary["names_other"] == [line["path"] for line in explained if line["agreement"] == "names_other"]
