import json

import pytest

from dataset_builder.parsing import EXPECTED_PAIRS, pairs_schema, parse_qa_pairs, parse_reply, validate_pairs

from testing_utils import CONVERSATION_REPLY, MALFORMED_REPLY, REASONING_REPLY


LONG = "The saturated colours and bold round form feel playful and light, so a viewer smiles at the scene."


def test_plain_format():
    assert parse_qa_pairs("Question: Is it red?\nAnswer: Yes, bright red.") == [("Is it red?", "Yes, bright red.")]


def test_messy_conversation_reply():
    pairs, reason = parse_reply(CONVERSATION_REPLY, "conversation")
    assert reason is None
    assert [q for q, _ in pairs] == [
        "What colour dominates the background of this picture?",
        "What shape stands in the middle of the frame?",
        "Why might this simple composition feel cheerful to a viewer?",
    ]
    assert pairs[0][1] == "The background is mostly a warm, bright yellow."


@pytest.mark.parametrize("reply", [
    "1. **Question:** What is shown here?\n   **Answer:** A red ball on grass.\n\n2) Question: Any people?\nAnswer: No.",
    "### Q1: What is shown here?\n\nA1: A red ball on grass.\n\n- Q: Any people?\n- A: No.",
    "Question: What is shown here? Answer: A red ball on grass.\nQuestion: Any people? Answer: No.",
    "__Question 1__: What is shown here?\n\n__Answer 1__: A red ball\non grass.\nQuestion 2 - Any people?\nAnswer 2 - No.",
])
def test_numbering_emphasis_blank_lines_and_inline(reply):
    pairs = parse_qa_pairs(reply)
    assert [q for q, _ in pairs] == ["What is shown here?", "Any people?"]
    assert pairs[0][1] == "A red ball on grass." and pairs[1][1] == "No."


def test_stray_text_and_multiline_answers():
    reply = ("Here is what I came up with:\n\nComplex question: Why does it feel sad?\nAnswer: The colours are grey.\n\n"
             "The figure is alone.\n\nI hope this helps!")
    [(question, answer)] = parse_qa_pairs(reply)
    assert question == "Why does it feel sad?"
    # Text after the last answer cannot be told apart from the answer: it stays with it, never invents a pair.
    assert answer.startswith("The colours are grey. The figure is alone.")


def test_answer_without_question_is_ignored():
    assert parse_qa_pairs("Answer: orphan\nQuestion: Is it big?\nAnswer: Very big indeed.") == [("Is it big?", "Very big indeed.")]


def test_a_sentence_starting_with_a_is_not_an_answer_label():
    assert parse_qa_pairs("Question: What is there?\nAnswer: A dog.\nA cat too.") == [("What is there?", "A dog. A cat too.")]


@pytest.mark.parametrize("pairs, reason_part", [
    ([], "found 0"),
    ([("What is there?", "A dog.")] * 2, "expected 3"),
    ([("What is there?", "")] * 3, "empty answer"),
    ([("Why?", "A dog in the park.")] * 3, "question length"),
    ([("What is there?", "A dog.")] * 2 + [("What does the caption say?", "It says a dog.")], "the caption"),
    ([("What is there?", "A dog.")] * 2 + [("How bright is it?", "Given the attributes, bright.")], "the attributes"),
])
def test_conversation_validation_rejects(pairs, reason_part):
    assert reason_part in validate_pairs(pairs, "conversation")


def test_reasoning_needs_one_long_answer():
    assert validate_pairs([("Why does this feel playful?", LONG)], "reasoning") is None
    assert "answer length" in validate_pairs([("Why does this feel playful?", "It is red.")], "reasoning")
    pairs, reason = parse_reply(REASONING_REPLY, "reasoning")
    assert reason is None and len(pairs) == 1


def test_refusal_is_invalid_with_reason():
    pairs, reason = parse_reply(MALFORMED_REPLY, "conversation")
    assert pairs == [] and "found 0" in reason


@pytest.mark.parametrize("token", ["<image>", "</s>", "<s>", "<unk>", "<pad>", "[PAD]", "[CLS]", "[SEP]", "[MASK]",
                                   "<|endoftext|>", "<|im_start|>", "<IMAGE>"])
def test_reply_with_a_special_token_is_malformed(token):
    reply = CONVERSATION_REPLY.replace("a warm, bright yellow.", f"a warm, bright yellow{token}.")
    assert parse_reply(CONVERSATION_REPLY, "conversation")[1] is None
    pairs, reason = parse_reply(reply, "conversation")
    assert pairs == [] and "special token" in reason and token in reason


def test_angle_brackets_in_ordinary_text_are_fine():
    reply = "Question: Is the left side brighter than the right?\nAnswer: Yes, left > right, and 3 < 4 shapes show."
    assert parse_reply(reply + "\n" + reply + "\n" + reply, "conversation")[1] is None


# ---------------------------------------------------------------- structured (JSON) replies

def json_reply(*pairs):
    return json.dumps({"pairs": [{"question": q, "answer": a} for q, a in pairs]})


def test_json_reply_gives_the_same_pairs_as_text():
    pairs = [("What colour is the ball?", "It is a bright red."), ("Is anyone playing?", "No, the lawn is empty."),
             ("Why does the scene feel calm?", "The soft light and open space make it feel unhurried.")]
    assert parse_reply(json_reply(*pairs), "conversation", "json_schema") == (pairs, None)
    text = "\n".join(f"Question: {q}\nAnswer: {a}" for q, a in pairs)
    assert parse_reply(text, "conversation") == (pairs, None)


@pytest.mark.parametrize("reply, reason", [
    ("Question: What is shown?\nAnswer: A ball.", "not valid JSON"),
    ('{"pairs": [{"question": "What is shown?", "answer": "A ball."}', "not valid JSON"),
    ('[{"question": "What is shown?", "answer": "A ball."}]', "expected an object with a 'pairs' list"),
    ('{"pairs": [{"question": "What is shown here?", "answer": 3}]}', "pair 1 is not an object"),
    ('{"pairs": ["What is shown here?"]}', "pair 1 is not an object"),
    (json_reply(("What is shown in the picture?", "A ball.")), "expected 3 question/answer pair(s), found 1"),
    (json_reply(("What does \u003cimage\u003e show?", "A ball."), ("Any people?", "No."), ("Why calm?", "Light.")),
     "special token '<image>'"),
])
def test_malformed_json_replies_have_reasons(reply, reason):
    pairs, why = parse_reply(reply, "conversation", "json_schema")
    assert pairs == [] and reason in why


def test_json_replies_pass_the_same_checks():
    leak = json_reply(("What does the caption say about the picture?", "It says a ball."),
                      ("Is anyone playing?", "No."), ("Why does the scene feel calm?", "Soft light."))
    assert "instead of the image" in parse_reply(leak, "conversation", "json_schema")[1]
    short = json_reply(("Why does this picture feel joyful?", "Bright."))
    assert "answer length" in parse_reply(short, "reasoning", "json_schema")[1]
    # JSON may escape "<"; the check reads the decoded text.
    escaped = json.dumps({"pairs": [{"question": "Why is it <image> here?", "answer": LONG}]}).replace("<", "\\u003c")
    assert "<" not in escaped
    assert "special token" in parse_reply(escaped, "reasoning", "json_schema")[1]


def test_schema_asks_for_the_expected_number_of_pairs():
    for kind, count in EXPECTED_PAIRS.items():
        schema = pairs_schema(kind)["properties"]["pairs"]
        assert schema["minItems"] == schema["maxItems"] == count
        assert schema["items"]["required"] == ["question", "answer"]
