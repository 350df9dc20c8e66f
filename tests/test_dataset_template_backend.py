"""The offline template sentences: grounded in the caption and attributes, the same on every run."""

from dataset_builder.template_backend import write_conversation, write_reasoning

ATTRIBUTES = {"brightness": 0.9, "colorfulness": 0.2, "scene": "amusement_park", "object": ["Balloon"],
              "facial_expression": "happy"}


def test_conversation_has_three_grounded_pairs_and_is_repeatable():
    pairs = write_conversation("awe_00001", "awe", "a mountain at dawn.", ATTRIBUTES)
    assert pairs == write_conversation("awe_00001", "awe", "a mountain at dawn.", ATTRIBUTES)
    assert len(pairs) == 3 and all(question.strip() for question, _ in pairs)
    assert pairs[0][1].startswith("A mountain at dawn.") and "a face that looks happy" in pairs[0][1]
    assert pairs[1][1] == "The image is very bright and its palette is almost colourless."
    assert "grand and overwhelming" in pairs[2][1] and pairs[2][1].endswith("one of awe.")


def test_reasoning_names_the_emotion_and_falls_back_to_attributes_without_a_caption():
    [(question, answer)] = write_reasoning("fear_00002", "fear", "", ATTRIBUTES)
    assert "fear" in question and answer.endswith("most likely to feel fear.")
    assert "a picture featuring balloon set in a amusement park" in answer
    assert write_reasoning("fear_00002", "fear", "", {}) != write_reasoning("fear_00002", "fear", "", ATTRIBUTES)
