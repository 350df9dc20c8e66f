"""emovit.evaluation.explanations: hand-written explanations scored exactly (emotion consistency, grounding with
synonyms, plurals and EmoSet's spellings, brightness / colourfulness contradictions, the summary's rates), and
against references: BLEU-4 and ROUGE-L as sacrebleu and rouge-score give them, BERTScore on a tiny offline BERT."""

import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer

from emovit.evaluation.explanations import (
    DEFINITIONS,
    bertscore,
    contradictions,
    corpus_bleu,
    fold,
    load_bertscore_model,
    reference_scores,
    score_explanation,
    summarise_scores,
)
from modeling_emovit import EMOSET_EMOTIONS

from testing_utils import save_tiny_bert


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
                                "contradiction", "judge", "known_word_rate", "bleu4", "rouge_l", "bertscore"}


# ----------------------------------------------------------------------------------------------------- references

EXPLANATIONS = ["The dark street and the lone figure make the viewer feel uneasy and afraid.",
                "Bright balloons and smiling children at a funfair evoke amusement."]
REFERENCES = [["A lone figure walks down a dark street at night, which feels threatening.",
               "The empty dark street evokes fear."],
              ["Children smile among colourful balloons at the fair, an amusing scene."]]


def test_bleu_and_rouge_are_sacrebleus_and_rouge_scores_own_values():
    scores = reference_scores(EXPLANATIONS, REFERENCES)
    # Images with different numbers of references: the missing ones are None in sacrebleu's reference streams.
    expected_bleu = sacrebleu.corpus_bleu(EXPLANATIONS, [[REFERENCES[0][0], REFERENCES[1][0]],
                                                         [REFERENCES[0][1], None]])
    assert scores["bleu4"] == pytest.approx(expected_bleu.score) and 0 < scores["bleu4"] < 100
    assert "13a" in scores["bleu_signature"]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    per_image = [max(scorer.score(ref, text)["rougeL"].fmeasure for ref in refs)
                 for text, refs in zip(EXPLANATIONS, REFERENCES)]
    assert scores["rouge_l_per_image"] == pytest.approx(per_image)
    assert scores["rouge_l"] == pytest.approx(sum(per_image) / 2) and 0 < scores["rouge_l"] < 1


def test_identical_text_scores_full_marks_and_disjoint_text_zero():
    same = reference_scores(EXPLANATIONS, [[text] for text in EXPLANATIONS])
    assert same["bleu4"] == pytest.approx(100) and same["rouge_l"] == pytest.approx(1.0)
    disjoint = reference_scores(["red apples fall quickly"], [["the dog sleeps under a blue sky"]])
    assert disjoint["bleu4"] == 0 and disjoint["rouge_l"] == 0
    # The best of several references counts for ROUGE-L; BLEU takes all of them.
    assert reference_scores([EXPLANATIONS[0]], [["nothing alike here", EXPLANATIONS[0]]])["rouge_l"] == 1.0
    assert corpus_bleu([EXPLANATIONS[0]], [["nothing alike here", EXPLANATIONS[0]]])[0] == pytest.approx(100)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), EXPLANATIONS + [t for refs in REFERENCES for t in refs])


def test_bertscore_is_greedy_cosine_matching_of_the_chosen_layer(tiny_bert_dir):
    tokenizer, model = load_bertscore_model(str(tiny_bert_dir))
    same = bertscore(EXPLANATIONS, [[text] for text in EXPLANATIONS], tokenizer, model)
    assert same["layer"] == 2 and all(same[k] == pytest.approx(1.0) for k in ("precision", "recall", "f1"))

    # By hand for one pair at layer 1: cosine matrix of the non-special tokens, best match per row and column.
    def states(text):
        encoded = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**encoded, output_hidden_states=True).hidden_states[1][0, 1:-1]  # [CLS] ... [SEP]
        return torch.nn.functional.normalize(hidden, dim=-1)

    similarity = states(EXPLANATIONS[1]) @ states(REFERENCES[1][0]).T
    precision, recall = similarity.max(1).values.mean().item(), similarity.max(0).values.mean().item()
    scores = bertscore([EXPLANATIONS[1]], [REFERENCES[1]], tokenizer, model, layer=1)
    assert scores["precision"] == pytest.approx(precision, abs=1e-5)
    assert scores["recall"] == pytest.approx(recall, abs=1e-5)
    assert scores["f1"] == pytest.approx(2 * precision * recall / (precision + recall), abs=1e-5)
    assert scores["f1"] < 0.999
    # Of several references, the one with the highest F1 counts.
    best = bertscore([EXPLANATIONS[1]], [[REFERENCES[0][0], EXPLANATIONS[1]]], tokenizer, model)
    assert best["f1"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"--bertscore_layer is 3; the model has 2 layers, so use 0 to 2"):
        bertscore(EXPLANATIONS, [[text] for text in EXPLANATIONS], tokenizer, model, layer=3)


def test_a_bertscore_folder_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"(?s)--bertscore_model '.*' could not be loaded .*save_pretrained"):
        load_bertscore_model(str(tmp_path))
