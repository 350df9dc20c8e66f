"""emovit.evaluation.explanations: hand-written explanations scored exactly (emotion consistency, grounding with
synonyms, plurals and EmoSet's spellings, brightness / colourfulness contradictions, the summary's rates)."""

import pytest

from emovit.evaluation.explanations import DEFINITIONS, contradictions, fold, score_explanation, summarise_scores
from modeling_emovit import EMOSET_EMOTIONS


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
