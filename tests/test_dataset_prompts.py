import pytest

from dataset_builder import prompts


def test_hashes_are_stable_distinct_and_follow_the_text(monkeypatch):
    hashes = {kind: prompts.prompt_hash(kind) for kind in ("categorical", "conversation", "reasoning")}
    assert len(set(hashes.values())) == 3 and all(len(h) == 12 for h in hashes.values())
    assert prompts.prompt_hash("conversation") == hashes["conversation"]
    monkeypatch.setattr(prompts, "CONVERSATION_SYSTEM", prompts.CONVERSATION_SYSTEM + " Be brief.")
    assert prompts.prompt_hash("conversation") != hashes["conversation"]
    assert prompts.prompt_hash("reasoning") == hashes["reasoning"]
    with pytest.raises(ValueError, match="unknown instruction type 'humor'"):
        prompts.prompt_hash("humor")


def test_conversation_messages():
    messages = prompts.build_messages("conversation", " a dog on a beach ", "emotion: contentment\nbrightness: 0.8")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == "description: a dog on a beach\nemotion: contentment\nbrightness: 0.8"
    system = messages[0]["content"]
    assert "0 (darkest)" in system and "0 (black" in system and "Question:" in system and "Answer:" in system


def test_reasoning_messages_carry_few_shot_examples():
    messages = prompts.build_messages("reasoning", "", "emotion: fear")
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * len(prompts.REASONING_EXAMPLES) + ["user"]
    assert messages[-1]["content"] == "description: (none)\nemotion: fear"
    assert all(m["content"].startswith("Question:") for m in messages if m["role"] == "assistant")


def test_categorical_is_not_an_llm_prompt():
    with pytest.raises(ValueError, match="not written by an LLM"):
        prompts.build_messages("categorical", "x", "y")
