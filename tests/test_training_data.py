"""emovit.training.data: examples from a builder folder or a LLaVA-style JSON, their checks, evaluation images."""

import json
import logging
from pathlib import Path

import pytest

from emovit.training.arguments import DataArguments
from emovit.training.data import (
    InstructionDataset,
    categorical_eval_examples,
    check_emotions,
    count_types,
    load_eval_images,
    load_examples,
)

from testing_utils import categorical_images, private_copy


def test_builder_folder_gives_examples_of_the_asked_types(instructions_dir):
    examples, root = load_examples(DataArguments(dataset=str(instructions_dir), types="categorical,reasoning"))
    assert root is not None and {e["type"] for e in examples} == {"categorical", "reasoning"}
    assert set(examples[0]) == {"image", "image_key", "instruction", "answer", "type", "emotion"}
    counts = count_types(examples)
    assert list(counts) == ["categorical", "reasoning"] and sum(counts.values()) == len(examples)
    dataset = InstructionDataset(examples)
    assert len(dataset) == len(examples) and dataset[0] == examples[0]
    assert dataset[(3, 1)] == {**examples[1], "augment_key": (3, 1)}
    with pytest.raises(ValueError, match="--types 'categorical,captions' names \\['captions'\\]"):
        load_examples(DataArguments(dataset=str(instructions_dir), types="categorical,captions"))


def test_emotions_the_model_lacks_are_refused(instructions_dir):
    examples, _ = load_examples(DataArguments(dataset=str(instructions_dir), types="categorical"))
    check_emotions(examples, sorted({e["emotion"] for e in examples}))
    with pytest.raises(ValueError, match="The data has emotions \\['amusement'\\]"):
        check_emotions(examples, sorted({e["emotion"] for e in examples} - {"amusement"}))


def test_llava_json_source_matches_the_builder_folder(instructions_dir, synthetic_root, tmp_path):
    from_folder, _ = load_examples(DataArguments(dataset=str(instructions_dir), types="categorical"))
    # the official files hold one instruction type each; keep the categorical entries of ours
    entries = json.loads((instructions_dir / "instructions_llava.json").read_text())
    categorical = [e for e in entries if e["conversations"][1]["value"].startswith("Predict emotion:")]
    (tmp_path / "categorical.json").write_text(json.dumps(categorical))
    llava = DataArguments(dataset=str(tmp_path / "categorical.json"), types="categorical",
                          image_root=str(synthetic_root), official_type="auto")
    from_json, _ = load_examples(llava)
    assert sorted((e["image"], e["answer"]) for e in from_json) == sorted((e["image"], e["answer"]) for e in from_folder)
    assert all(Path(e["image"]).is_file() for e in from_json)
    with pytest.raises(ValueError, match="--image_root"):
        load_examples(DataArguments(dataset=llava.dataset, types="categorical"))


def test_a_missing_training_image_is_named_before_training(synthetic_root, instructions_dir, tmp_path):
    root, data = private_copy(synthetic_root, instructions_dir, tmp_path)
    gone = categorical_images(data)[5]
    (root / gone).unlink()
    with pytest.raises(FileNotFoundError, match=f"1 training image.*{gone}"):
        load_examples(DataArguments(dataset=str(data), types="categorical"))


def test_a_categorical_answer_naming_another_emotion_is_refused(synthetic_root, instructions_dir, tmp_path):
    _, data = private_copy(synthetic_root, instructions_dir, tmp_path)
    lines = (data / "instructions.jsonl").read_text().splitlines()
    number, record = next((n, json.loads(line)) for n, line in enumerate(lines, start=1)
                          if json.loads(line)["type"] == "categorical" and json.loads(line)["emotion"] != "fear")
    record["conversations"][1]["value"] = "Predict emotion: fear"
    lines[number - 1] = json.dumps(record)
    (data / "instructions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"instructions.jsonl:{number}: the categorical answer .* names 'fear'"):
        load_examples(DataArguments(dataset=str(data), types="categorical"))


def test_llava_json_entries_leaving_the_image_root_are_skipped(instructions_dir, synthetic_root, tmp_path, caplog):
    entries = json.loads((instructions_dir / "instructions_llava.json").read_text())
    categorical = [e for e in entries if e["conversations"][1]["value"].startswith("Predict emotion:")][:3]
    outside = dict(categorical[0], image="../" + Path(synthetic_root).name + "-elsewhere/x.jpg")
    (tmp_path / "data.json").write_text(json.dumps(categorical + [outside]))
    with caplog.at_level(logging.WARNING, logger="emovit.training.data"):
        examples, _ = load_examples(DataArguments(dataset=str(tmp_path / "data.json"), types="categorical",
                                                  image_root=str(synthetic_root)))
    assert len(examples) == 3
    assert all(Path(e["image"]).resolve().is_relative_to(Path(synthetic_root).resolve()) for e in examples)
    assert "skipped 1 entries" in caplog.text


def test_an_unreadable_evaluation_image_is_left_out_not_fatal(synthetic_root, instructions_dir, tmp_path, caplog):
    from dataset_builder.emoset import read_split

    root, _ = private_copy(synthetic_root, instructions_dir, tmp_path)
    broken = read_split(root, "val").items[0]
    Path(broken.image_path).write_bytes(b"not an image")
    with caplog.at_level(logging.INFO, logger="emovit.training.data"):
        images = load_eval_images(str(root), "val", max_images=2000)
    assert len(images) == 7 and broken.image_path not in [path for path, _ in images]
    assert "evaluating accuracy on 7 images" in caplog.text and f"{broken.image_path} could not be read" in caplog.text
    assert len(load_eval_images(str(root), "val", max_images=3)) == 2  # the cap counts the unreadable one
    for item in read_split(root, "val").items:
        Path(item.image_path).write_bytes(b"not an image")
    with pytest.raises(ValueError, match="None of the images of .* could be read"):
        load_eval_images(str(root), "val", max_images=2000)


def test_evaluation_examples_are_categorical_and_never_cached(tiny_processor):
    (example,) = categorical_eval_examples([("a.png", "awe")], tiny_processor.categorical_instruction)
    assert example["image_key"] == "eval:a.png" and example["type"] == "categorical"
    assert example["instruction"] == tiny_processor.categorical_instruction and "awe" in example["answer"]
