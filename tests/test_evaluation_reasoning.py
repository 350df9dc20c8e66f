"""emovit.evaluation.reasoning: hand-written explanations scored exactly (emotion consistency, grounding with
synonyms, plurals and EmoSet's spellings, brightness / colourfulness contradictions, the summary's rates), the
attributes read from EmoSet annotations, and the reasoning run on the tiny model over a synthetic EmoSet."""

import json
import shutil

import pytest
from PIL import Image

from emovit.evaluation.data import load_eval_data
from emovit.evaluation.reasoning import (
    DEFINITIONS,
    contradictions,
    fold,
    image_attributes,
    score_explanation,
    summarise_scores,
)
from modeling_emovit import EMOSET_EMOTIONS, EmoVitForConditionalGeneration, EmoVitProcessor


LABELS = list(EMOSET_EMOTIONS)


def scored(text, label="sadness", prediction="sadness", **attributes):
    return {"label": label, **score_explanation(text, label, prediction, LABELS, attributes)}


# ----------------------------------------------------------------------------------------------------- consistency


@pytest.mark.parametrize(
    "text, label, prediction, consistency, first, agreement",
    [
        ("The grey rain makes the viewer feel sad.", "sadness", "sadness", "agrees", "sadness", "agrees"),
        ("Scary shadows; fear, then sadness.", "sadness", "sadness", "names_other", "fear", "names_other"),
        ("An awe-inspiring peak.", "awe", "excitement", "agrees", "awe", "names_other"),
        ("A quiet bench under a tree.", "contentment", "contentment", "names_none", None, "names_none"),
        ("It is amusing.", "amusement", None, "agrees", "amusement", "no_label"),
        # Negation is not parsed: "not angry" names anger.
        ("The man is not angry, he is excited.", "excitement", "excitement", "names_other", "anger", "names_other"),
    ],
)
def test_consistency_of_hand_written_explanations(text, label, prediction, consistency, first, agreement):
    row = score_explanation(text, label, prediction, LABELS, {})
    assert (row["consistency"], row["first_mentioned"], row["agreement"]) == (consistency, first, agreement)


def test_summary_rates_are_exact():
    rows = [
        scored("So sad.", "sadness"),
        scored("Sadness and fear.", "sadness"),
        scored("Fear first, then sadness.", "sadness"),
        scored("Nothing emotional here.", "sadness"),
    ]
    summary = summarise_scores(rows)
    assert summary["consistency"] == 0.25
    assert summary["consistency_rates"] == {"agrees": 0.25, "names_other": 0.5, "names_none": 0.25}
    assert summary["first_mentioned_is_label"] == 0.5  # "So sad." and "Sadness and fear."
    assert summary["agreement_with_prediction"] == {"agrees": 0.25, "names_other": 0.5, "names_none": 0.25,
                                                    "no_label": 0.0}
    # No attributes: nothing to ground, nothing to contradict; said as such, not as zero.
    assert summary["grounding"] is None and summary["grounding_images"] == 0
    assert summary["contradiction_rate"] is None and summary["contradiction_images_checked"] == 0


# ----------------------------------------------------------------------------------------------------- grounding


def test_grounding_with_synonyms_plurals_and_emoset_spellings():
    attributes = {"scene": "amusement_park", "object": ["Balloon", "Waste container", "Person"],
                  "facial_expression": "happy", "human_action": "juggling balls"}
    text = "Children at a funfair hold BALLOONS next to overflowing bins; a clown is juggling and grinning."
    row = scored(text, **attributes)
    assert [(g["kind"], g["value"], g["matched"]) for g in row["grounded"]] == [
        ("scene", "amusement_park", "funfair"),
        ("object", "Balloon", "balloon"),
        ("object", "Waste container", "bin"),
        ("object", "Person", "children"),
        ("facial_expression", "happy", "grinning"),
        ("human_action", "juggling balls", "juggling"),
    ]
    assert row["grounding"] == 1.0


def test_grounding_counts_only_what_is_mentioned():
    attributes = {"scene": "stadium/football", "object": ["Person", "Ball", "Person"], "facial_expression": "surprise",
                  "human_action": "cheering"}
    # "surprise" alone names a feeling, not a face; "football" is the scene's qualifier, not the scene.
    row = scored("A football match full of surprise; the crowd in the stands.", **attributes)
    assert [(g["value"], g["matched"]) for g in row["grounded"]] == [
        ("stadium/football", None), ("Person", "crowd"), ("Ball", "football"), ("surprise", None), ("cheering", None)]
    assert row["grounding"] == pytest.approx(2 / 5)  # the duplicate "Person" is one term
    assert scored("Fans cheer in the stadium as the ball flies; surprised faces.", **attributes)["grounding"] == 1.0


def test_compound_names_match_their_head_word_and_folding():
    assert scored("A narrow path between trees.", scene="forest_path")["grounded"][0]["matched"] == "path"
    assert scored("An open container.", object=["Waste container"])["grounded"][0]["matched"] == "container"
    assert scored("She is reading quietly.", human_action="reading book")["grounded"][0]["matched"] == "reading"
    assert fold("Waste_containers, SKIES; benches!") == " waste container sky bench "


def test_grounding_over_images_and_kinds():
    rows = [
        scored("A bench in a garden.", scene="garden", object=["Bench", "Flower"]),  # 2 of 3
        scored("Nothing to see.", scene="cemetery"),  # 0 of 1
        scored("No annotation at all."),  # not counted
    ]
    summary = summarise_scores(rows)
    assert summary["grounding"] == pytest.approx((2 / 3 + 0) / 2) and summary["grounding_images"] == 2
    assert summary["grounding_per_kind"]["scene"] == {"terms": 2, "mentioned": 1, "rate": 0.5}
    assert summary["grounding_per_kind"]["object"] == {"terms": 2, "mentioned": 1, "rate": 0.5}
    assert summary["grounding_per_kind"]["human_action"] == {"terms": 0, "mentioned": 0, "rate": None}


# ----------------------------------------------------------------------------------------------------- contradictions


def test_brightness_and_colourfulness_contradictions():
    assert contradictions("Dim light and dark corners.", {"brightness": 0.9}) == [
        {"attribute": "brightness", "value": 0.9, "words": ["dark", "dim"]}]
    assert contradictions("A bright, sunny day.", {"brightness": 0.2}) == [
        {"attribute": "brightness", "value": 0.2, "words": ["bright", "sunny"]}]
    assert contradictions("A dark night.", {"brightness": 0.2}) == []  # agrees with the image
    assert contradictions("Dark and bright at once.", {"brightness": 0.5}) == []  # middle brightness: no claim
    assert contradictions("Grey, washed-out walls.", {"brightness": 0.6, "colorfulness": 0.7}) == [
        {"attribute": "colorfulness", "value": 0.7, "words": ["grey", "washed out"]}]
    assert contradictions("Vivid, colourful balloons.", {"colorfulness": 0.1}) == [
        {"attribute": "colorfulness", "value": 0.1, "words": ["colourful", "vivid"]}]


def test_contradiction_rates_count_only_images_at_an_extreme():
    rows = [
        scored("Dark and gloomy.", brightness=0.8),  # contradicts
        scored("A bright day.", brightness=0.9),  # checked, fine
        scored("Dark.", brightness=0.5),  # middle: not checked
        scored("Vivid colours.", brightness=0.1, colorfulness=0.2),  # colourfulness contradicted
    ]
    summary = summarise_scores(rows)
    assert summary["contradictions"]["brightness"] == {"images_checked": 3, "contradicted": 1, "rate": 1 / 3}
    assert summary["contradictions"]["colorfulness"] == {"images_checked": 1, "contradicted": 1, "rate": 1.0}
    assert summary["contradiction_images_checked"] == 3 and summary["contradiction_rate"] == pytest.approx(2 / 3)
    assert set(DEFINITIONS) == {"consistency", "first_mentioned_is_label", "agreement_with_prediction", "grounding",
                                "contradiction", "judge", "known_word_rate"}


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
