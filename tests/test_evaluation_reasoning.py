"""emovit.evaluation.reasoning: the attributes read from EmoSet annotations, and the reasoning run on the tiny model
over a synthetic EmoSet: rows scored as `emovit.evaluation.explanations` scores them, metrics that follow from the
rows, unreadable images and broken annotations counted; BLEU-4 and ROUGE-L against the references of instruction data
built from the evaluated split or of a JSONL file, and the errors a bad references file gets."""

import json
import shutil

import pytest
from PIL import Image

from dataset_builder import load_records
from emovit.evaluation.data import load_eval_data, load_references
from emovit.evaluation.explanations import (
    DEFINITIONS,
    bertscore,
    load_bertscore_model,
    reference_scores,
    score_explanation,
)
from emovit.evaluation.reasoning import image_attributes
from modeling_emovit import EMOSET_EMOTIONS, EmoVitForConditionalGeneration, EmoVitProcessor

from testing_utils import save_tiny_bert


LABELS = list(EMOSET_EMOTIONS)


# ----------------------------------------------------------------------------------------------------- attributes


def test_image_attributes_from_annotation_and_pixels(tmp_path):
    white = Image.new("RGB", (20, 20), (255, 255, 255))
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"emotion": "awe", "scene": "mountain", "object": ["Sky", "Sky "],
                                "human_action": "hiking ", "brightness": 0.34}))
    attributes, computed, problem = image_attributes(str(path), white)
    # Cleaned as the data pipeline cleans them; brightness rounded to EmoSet's grid, colourfulness from pixels.
    assert attributes == {"brightness": 0.3, "scene": "mountain", "object": ["Sky"], "human_action": "hiking",
                          "colorfulness": 0.0}
    assert computed == ["colorfulness"] and problem is None

    attributes, computed, problem = image_attributes(str(tmp_path / "missing.json"), white)
    assert attributes == {"brightness": 1.0, "colorfulness": 0.0} and computed == ["brightness", "colorfulness"]
    assert "missing.json" in problem and "could not be used" in problem
    path.write_text(json.dumps({"brightness": "very"}))
    assert "'brightness' is 'very'" in image_attributes(str(path), white)[2]


# ----------------------------------------------------------------------------------------------------- the run


@pytest.fixture(scope="module")
def reasoning_run(tmp_path_factory, run_evaluation, eval_emoset_dir):
    """The reasoning run (free preset, 16 new tokens, batches of 3) on the first 6 test images of a copy of
    `eval_emoset_dir` whose first test image's annotation file is broken and whose sixth image is not an image."""
    root = tmp_path_factory.mktemp("reasoning") / "emoset"
    shutil.copytree(eval_emoset_dir, root)
    entries = json.loads((root / "test.json").read_text())
    (root / entries[0][2]).write_text("{not json")
    (root / entries[5][1]).write_bytes(b"not a JPEG")
    metrics, lines, out = run_evaluation(root.parent, root, task="reasoning", max_images=6, max_new_tokens=16,
                                         batch_size=3)
    return root, metrics, lines, out


def test_run_explanations_are_explains_and_rows_are_scored(reasoning_run, tiny_dir):
    root, metrics, lines, out = reasoning_run
    data = load_eval_data(str(root), "test")
    model = EmoVitForConditionalGeneration.from_pretrained(tiny_dir).eval()
    processor = EmoVitProcessor.from_pretrained(tiny_dir)
    images = [data.image(i) for i in range(5)]
    # The unreadable sixth image leaves the second batch with two.
    expected = [model.explain(images[start : start + 3], processor, preset="free", max_new_tokens=16, batch_size=3)
                for start in (0, 3)]
    assert [line["id"] for line in lines] == data.ids[:5]
    assert [line["explanation"] for line in lines] == [text for part in expected for text in part.explanations]
    assert [line["prediction"] for line in lines] == [label for part in expected for label in part.labels]
    assert [line["mentioned"] for line in lines] == [named for part in expected for named in part.mentioned]
    for line, image, path in zip(lines, images, data.annotation_paths):
        attributes, computed, _ = image_attributes(path, image)
        assert line["attributes"] == attributes and line["attributes_computed"] == computed
        assert {**line, **score_explanation(line["explanation"], line["label"], line["prediction"], LABELS,
                                            attributes)} == line
    # The annotations reached the rows: scene and objects as the files say, where the file is readable.
    second = json.loads((root / json.loads((root / "test.json").read_text())[1][2]).read_text())
    assert lines[1]["attributes"].get("scene") == second.get("scene")
    assert any(line["grounded"] for line in lines)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "predictions.jsonl"]


def test_run_metrics_follow_from_the_rows(reasoning_run):
    root, metrics, lines, out = reasoning_run
    assert metrics == json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "reasoning" and metrics["preset"] == "free" and metrics["num_images"] == 5
    assert metrics["consistency"] == sum(line["consistency"] == "agrees" for line in lines) / 5
    assert metrics["accuracy"] == sum(line["correct"] for line in lines) / 5
    # The unreadable image is counted and named, not dropped.
    [skipped] = metrics["skipped"]
    assert metrics["num_skipped"] == 1 and skipped["id"] == load_eval_data(str(root), "test").ids[5]
    assert "could not be read" in skipped["reason"]
    grounded = [line["grounding"] for line in lines if line["grounding"] is not None]
    assert metrics["grounding"] == pytest.approx(sum(grounded) / len(grounded))
    assert metrics["definitions"] == DEFINITIONS and metrics["judge"] is None
    # The broken annotation is counted with its file named; its image is still explained and scored from pixels.
    [problem] = metrics["annotation_problems"]
    assert metrics["num_annotation_problems"] == 1 and problem["id"] == lines[0]["id"]
    assert "could not be used" in problem["reason"] and lines[0]["attributes_computed"] == ["brightness",
                                                                                           "colorfulness"]


def test_a_budget_past_the_model_context_is_refused_before_any_explanation(tmp_path, run_evaluation,
                                                                           eval_emoset_dir):
    # The tiny model's language model has 512 positions, 8 of them for the image's query tokens.
    with pytest.raises(ValueError, match=r"--max_new_tokens is 100000, more than this model's context holds.*at "
                                         r"most 504 new tokens.*Pass --max_new_tokens 504 or less"):
        run_evaluation(tmp_path, eval_emoset_dir, task="reasoning", max_images=1, max_new_tokens=100_000)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------- references


@pytest.fixture(scope="module")
def test_split_instructions(tmp_path_factory, eval_emoset_dir):
    """Template instruction data built from `eval_emoset_dir`'s test split: one reasoning and one conversation
    record for one test image of each emotion (8 of its 16 images)."""
    from dataset_builder.build import BuildOptions, run_build

    out = tmp_path_factory.mktemp("test-split-instructions")
    run_build(BuildOptions(emoset_root=str(eval_emoset_dir), output_dir=str(out), types=("conversation", "reasoning"),
                           per_class={"categorical": 0, "conversation": 1, "reasoning": 1}, split="test",
                           captioner="none", seed=0, show_progress=False))
    return out


def test_run_scores_explanations_against_the_held_out_reasoning_answers(tmp_path, run_evaluation, eval_emoset_dir,
                                                                         test_split_instructions):
    bert = save_tiny_bert(tmp_path / "bert")
    metrics, lines, out = run_evaluation(tmp_path, eval_emoset_dir, task="reasoning", max_new_tokens=8,
                                         batch_size=8, references=str(test_split_instructions),
                                         bertscore_model=str(bert), bertscore_layer=1)
    answers = {record["image"]: record["conversations"][1]["value"]
               for record in load_records(test_split_instructions, types=("reasoning",))}
    data = load_eval_data(str(eval_emoset_dir), "test")
    expected = [[answers[path]] if path in answers else [] for path in data.paths]
    assert [line["references"] for line in lines] == expected
    scored = [line for line in lines if line["references"]]
    assert len(scored) == 8
    references = metrics["references"]
    scores = reference_scores([line["explanation"] for line in scored], [line["references"] for line in scored])
    assert references["bleu4"] == pytest.approx(scores["bleu4"]) and references["rouge_l"] == pytest.approx(
        scores["rouge_l"])
    assert [line["rouge_l"] for line in scored] == pytest.approx(scores["rouge_l_per_image"])
    # The images without a reference are counted and named, not silently dropped.
    assert references["images_with_reference"] == 8 and references["images_without_reference"] == 8
    assert references["without_reference"] == [line["id"] for line in lines if not line["references"]]
    assert all(line["rouge_l"] is None for line in lines if not line["references"])
    assert references["types"] == ["reasoning"] and references["references_unmatched"] == 0
    expected_bert = bertscore([line["explanation"] for line in scored], [line["references"] for line in scored],
                              *load_bertscore_model(str(bert)), layer=1)
    assert references["bertscore"] == pytest.approx({"model": str(bert), **expected_bert})
    assert metrics == json.loads((out / "metrics.json").read_text())


def test_a_bertscore_layer_past_the_model_stops_the_run_before_any_explanation(tmp_path, run_evaluation,
                                                                             eval_emoset_dir, test_split_instructions):
    bert = save_tiny_bert(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"--bertscore_layer is 5; the model has 2 layers, so use 0 to 2"):
        run_evaluation(tmp_path, eval_emoset_dir, task="reasoning", references=str(test_split_instructions),
                       bertscore_model=str(bert), bertscore_layer=5)
    assert not (tmp_path / "out").exists()


def test_references_from_a_jsonl_by_id_and_by_path(tmp_path, eval_emoset_dir):
    data = load_eval_data(str(eval_emoset_dir), "test")
    data.keep_first(3)
    relative = json.loads((eval_emoset_dir / "test.json").read_text())[1][1]
    path = tmp_path / "references.jsonl"
    path.write_text("".join(json.dumps(entry) + "\n" for entry in [
        {"id": data.ids[0], "reference": "one"}, {"image": relative, "reference": ["two", "three"]},
        {"id": data.ids[0], "reference": "four"}, {"id": "not-in-the-split", "reference": "five"}]) + "\n")
    references = load_references(str(path), data)
    assert references.texts == [["one", "four"], ["two", "three"], []] and references.unmatched == 1


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"id": "a", "reference": "x"}', "{oops"], r"line 2 is not valid JSON"),
        (['["a", "x"]'], r"line 1 holds a list; each line must be an object"),
        (['{"reference": "x"}'], r"line 1: field 'id' or 'image' must be given"),
        (['{"id": "a", "image": "b.jpg", "reference": "x"}'], r"line 1: field 'id' or 'image' must be given, one"),
        (['{"id": "a"}'], r"line 1: field 'reference' is 'None'"),
        (['{"id": "a", "reference": ["x", 3]}'], r"line 1: field 'reference' is .*non-empty text"),
        (['{"id": "nowhere", "reference": "x"}'], r"has 1 references, none of them for the 16 evaluated images"),
    ],
)
def test_a_bad_references_file_names_the_file_line_and_field(tmp_path, eval_emoset_dir, lines, message):
    path = tmp_path / "references.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message) as raised:
        load_references(str(path), load_eval_data(str(eval_emoset_dir), "test"))
    assert str(path) in str(raised.value)


def test_instruction_data_of_another_split_is_refused_naming_it(instructions_dir, eval_emoset_dir):
    with pytest.raises(ValueError, match=r"built from split 'train' of .*none of them for the 16 evaluated images"):
        load_references(str(instructions_dir), load_eval_data(str(eval_emoset_dir), "test"))
