"""The instruction writers: template sentences offline, and an LLM on a real OpenAI-compatible server on loopback
(llmock's pytest fixture `llmock`), with the fixed categorical records beside them."""

import json

import pytest
from llmock.scenarios import Fail, Reply

from dataset_builder.attributes import prepare_images
from dataset_builder.emoset import read_split
from dataset_builder.llm import ClientSettings
from dataset_builder.prompts import prompt_hash, response_format_field, template_hash
from dataset_builder.records import training_record_problem
from dataset_builder.writers import SAMPLES_PER_PROMPT, LlmWriter, TemplateWriter, categorical_records

from testing_utils import CONVERSATION_REPLY, MALFORMED_REPLY, REASONING_REPLY


CHAT_PATH = "/v1/chat/completions"


@pytest.fixture()
def prepared_images(synthetic_root):
    """Two prepared validation images of different emotions."""
    items = read_split(synthetic_root, "val").items[:2]
    prepared, skipped = prepare_images(items, show_progress=False)
    assert not skipped
    return [prepared[item.image_id] for item in items]


def llm_writer(llmock, tmp_path):
    settings = ClientSettings(model="gpt-4o", base_url=llmock.base_url(), api_key="sk-test", concurrency=1,
                              backoff_base_s=0.01, backoff_max_s=0.02)
    return LlmWriter(settings, tmp_path / "llm_cache.jsonl", show_progress=False)


def test_categorical_records_are_fixed_pairs(prepared_images):
    captions = {prepared_images[0].item.image_path: "a caption"}
    records = categorical_records(prepared_images, captions)
    assert [r.id for r in records] == [f"categorical/{image.item.image_id}/0" for image in prepared_images]
    answers = [r.conversations[1]["value"] for r in records]
    assert answers == [f"Predict emotion: {image.item.emotion}" for image in prepared_images]
    assert records[0].caption == "a caption" and records[1].caption == ""
    assert {(r.generator, r.prompt_hash) for r in records} == {("none", prompt_hash("categorical"))}
    assert all(training_record_problem(r.to_dict()) is None for r in records)


def test_template_writer_is_deterministic_and_costs_nothing(prepared_images):
    writer = TemplateWriter()
    conversation = writer.write("conversation", prepared_images, {})
    assert conversation == writer.write("conversation", prepared_images, {})
    first = prepared_images[0].item.image_id
    assert [r.id for r in conversation[:3]] == [f"conversation/{first}/{i}" for i in range(3)]
    reasoning = writer.write("reasoning", prepared_images, {})
    assert len(conversation) == 6 and len(reasoning) == 2
    assert all(r.generator == "template" and r.prompt_hash == template_hash() for r in conversation + reasoning)
    assert all(r.attributes == image.attributes for r, image in zip(reasoning, prepared_images))
    assert writer.generator("reasoning") == "template" and writer.prompt_hash("reasoning") == template_hash()
    assert writer.estimate("conversation", prepared_images, {}) is None
    assert writer.usage().api_calls == 0 and writer.failed == writer.not_run == [] and writer.stop_reason is None


def test_llm_writer_writes_parsed_pairs_and_records_failures(prepared_images, llmock, tmp_path):
    writer = llm_writer(llmock, tmp_path)
    estimate = writer.estimate("conversation", prepared_images, {})
    assert estimate["to_send"] == 2 and [r for r in llmock.requests if r.path == CHAT_PATH] == []

    # first image: a good reply; second: malformed on every sample
    llmock.add(Reply(text=CONVERSATION_REPLY, times=1), Reply(text=MALFORMED_REPLY, times=None))
    records = writer.write("conversation", prepared_images, {})
    assert [r.id for r in records] == [f"conversation/{prepared_images[0].item.image_id}/{i}" for i in range(3)]
    assert records[0].conversations[0]["value"] == "What colour dominates the background of this picture?"
    assert {(r.generator, r.prompt_hash) for r in records} == {("openai-compatible:gpt-4o", prompt_hash("conversation"))}
    [failed] = writer.failed
    assert failed["image_id"] == prepared_images[1].item.image_id and failed["type"] == "conversation"
    assert "malformed reply" in failed["reason"] and f"after {SAMPLES_PER_PROMPT} samples" in failed["reason"]
    usage = writer.usage()
    assert usage.api_calls == len([r for r in llmock.requests if r.path == CHAT_PATH]) == 1 + SAMPLES_PER_PROMPT
    assert usage.prompt_tokens > 0 and writer.stop_reason is None and writer.not_run == []


# ---------------------------------------------------------------- structured outputs

def structured_writer(llmock, tmp_path, **overrides):
    settings = dict(model="gpt-4o", base_url=llmock.base_url(), api_key="sk-test", concurrency=1,
                    backoff_base_s=0.01, backoff_max_s=0.02, response_format="json_schema")
    settings.update(overrides)
    return LlmWriter(ClientSettings(**settings), tmp_path / "llm_cache.jsonl", show_progress=False)


def test_structured_writer_asks_for_json_under_the_schema(prepared_images, llmock, tmp_path):
    # llmock answers a json_schema request with JSON valid under the schema: three short pairs for a conversation
    # (usable) and one for reasoning (its answer is too short for a reasoning answer: malformed, twice).
    writer = structured_writer(llmock, tmp_path)
    conversation = writer.write("conversation", prepared_images, {})
    reasoning = writer.write("reasoning", prepared_images[:1], {})
    assert [(r.conversations[0]["value"], r.conversations[1]["value"]) for r in conversation[:1]] == [
        ("mock-question", "mock-answer")]
    assert len(conversation) == 6 and reasoning == []
    sent = [r.body for r in llmock.requests if r.path == CHAT_PATH]
    assert sent[0]["response_format"] == response_format_field("conversation")
    assert sent[-1]["response_format"]["json_schema"]["schema"]["properties"]["pairs"]["maxItems"] == 1
    assert all("Question:" not in m["content"] for body in sent for m in body["messages"])
    assert {r.prompt_hash for r in conversation} == {prompt_hash("conversation", "json_schema")} \
        != {prompt_hash("conversation")}
    usage = writer.usage()
    assert usage.response_format == usage.response_format_used == "json_schema"
    assert writer.replies_parsed == {"conversation": 2, "reasoning": 2}
    assert [r["type"] for r in writer.rejected] == ["reasoning", "reasoning"]
    assert "answer length" in writer.failed[0]["reason"]


def test_scripted_json_reply_becomes_records(prepared_images, llmock, tmp_path):
    pairs = [{"question": "What colour dominates the background?", "answer": "A warm, bright yellow."},
             {"question": "What shape is in the middle?", "answer": "A round red ball."},
             {"question": "Why might this feel cheerful?", "answer": "Warm colours and a simple playful shape."}]
    llmock.add(Reply(text="not json at all", times=1), Reply(text=json.dumps({"pairs": pairs}), times=None))
    writer = structured_writer(llmock, tmp_path)
    records = writer.write("conversation", prepared_images[:1], {})
    assert [r.conversations[1]["value"] for r in records] == [p["answer"] for p in pairs]
    # The malformed first reply counts, and so does the second sample that succeeded.
    assert writer.replies_parsed == {"conversation": 2} and [r["sample"] for r in writer.rejected] == [0]


def test_refused_structured_outputs_fall_back_to_text_once(prepared_images, llmock, tmp_path, caplog):
    llmock.add(Fail(400, message="Invalid parameter: 'response_format' of type 'json_schema' is not supported",
                    times=1),
               Reply(text=CONVERSATION_REPLY, times=2), Reply(text=REASONING_REPLY, times=None))
    writer = structured_writer(llmock, tmp_path)
    with caplog.at_level("WARNING"):
        conversation = writer.write("conversation", prepared_images, {})
        reasoning = writer.write("reasoning", prepared_images[:1], {})
    assert len(conversation) == 6 and len(reasoning) == 1 and writer.failed == []
    sent = [r for r in llmock.requests if r.path == CHAT_PATH]
    # One refused structured request; everything after it, the other type included, is a text request.
    assert [("response_format" in r.body, r.status) for r in sent] == [(True, 400)] + [(False, 200)] * 3
    assert all(r.prompt_hash == prompt_hash(r.type) for r in conversation + reasoning)
    usage = writer.usage()
    assert usage.response_format == "json_schema" and usage.response_format_used == "text"
    assert "response_format" in usage.response_format_fallback_reason
    assert writer.prompt_hash("conversation") == prompt_hash("conversation")
    assert caplog.text.count("asking for text replies") == 1
