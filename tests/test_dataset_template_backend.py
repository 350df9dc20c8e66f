"""The offline template sentences: grounded in the caption and attributes, free of stray emotion words and of
contradictions, the same on every run."""

import random

import numpy as np

from dataset_builder.attributes import compute_brightness, compute_colorfulness
from dataset_builder.synthetic import draw_scene
from dataset_builder.template_backend import describe, write_conversation, write_reasoning
from emovit.evaluation.explanations import annotated_terms, contradictions, ground
from modeling_emovit import EXPLANATION_PRESETS, mentioned_emotions
from modeling_emovit.configuration_emovit import EMOSET_EMOTIONS


ATTRIBUTES = {"brightness": 0.9, "colorfulness": 0.2, "scene": "amusement_park", "object": ["Balloon", "Person"],
              "facial_expression": "happy", "human_action": "juggling balls "}


def test_conversation_has_three_grounded_pairs_and_is_repeatable():
    pairs = write_conversation("awe_00001", "awe", "a mountain at dawn.", ATTRIBUTES)
    assert pairs == write_conversation("awe_00001", "awe", "a mountain at dawn.", ATTRIBUTES)
    assert len(pairs) == 3 and all(question.strip() for question, _ in pairs)
    assert pairs[0][1] == "A mountain at dawn."  # a caption, when there is one, says what is there
    assert pairs[1][1] == "The picture is bright and almost colourless."
    assert "grand and vast" in pairs[2][1] and pairs[2][1].endswith("one of awe.")


def test_without_a_caption_the_attributes_say_what_is_there():
    assert describe("", ATTRIBUTES) == ("A red balloon and a person with a smiling face who is juggling at a fairground "
                                        "with a big wheel.")
    assert describe("", {"scene": "cemetery"}) == "A view in a cemetery with rows of headstones."
    assert describe("", {"object": ["Alarm clock"], "scene": "bakery/shop"}) == "A alarm clock in a bakery, shop."
    assert describe("", {}) == "A picture whose content is hard to name."


def test_reasoning_names_its_emotion_and_some_questions_leave_it_to_the_model():
    """Some questions name the emotion, some do not; among them are the ones explain() asks by default (the demo's
    "why this emotion" and the free question), so the trained model has met them."""
    questions = set()
    for number in range(40):
        [(question, answer)] = write_reasoning(f"fear_{number:05d}", "fear", "", ATTRIBUTES)
        assert answer.startswith("This picture evokes fear.") and answer.endswith("most likely to feel fear.")
        questions.add(question)
    assert {"fear" in question for question in questions} == {True, False}
    assert {EXPLANATION_PRESETS["label"].format(emotion="fear"), EXPLANATION_PRESETS["free"]} <= questions


def test_answers_about_drawn_scenes_are_grounded_name_only_their_emotion_and_contradict_nothing():
    """Over the synthetic sample's pictures, every answer mentions every annotated term (as the reasoning metrics
    match them), names no emotion but its own, and never says the opposite of the measured light and colour."""
    rng = random.Random(0)
    for number in range(200):
        emotion = EMOSET_EMOTIONS[number % 8]
        image, attributes = draw_scene(emotion, rng)
        pixels = np.asarray(image)
        attributes.update(brightness=compute_brightness(pixels), colorfulness=compute_colorfulness(pixels))
        answers = [a for _, a in write_conversation(str(number), emotion, "", attributes)]
        [(_, reasoning)] = write_reasoning(str(number), emotion, "", attributes)
        for answer in answers[2:] + [reasoning]:
            assert mentioned_emotions(answer, EMOSET_EMOTIONS) == [emotion], answer
            assert all(g["matched"] for g in ground(answer, annotated_terms(attributes))), (attributes, answer)
            assert contradictions(answer, attributes) == [], answer
        assert mentioned_emotions(answers[0] + answers[1], EMOSET_EMOTIONS) == []
