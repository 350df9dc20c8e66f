"""Instruction writers: the conversation and reasoning pairs of each image, written either by templates (offline)
or by an LLM behind an OpenAI-compatible server. Both have the same methods, so the build picks one and runs it:

- `write(kind, images, captions)`: the records of `kind` for the images (the LLM writer also notes failures);
- `estimate(kind, images, captions)`: what writing would send and cost, or None when it costs nothing;
- `generator(kind)`, `prompt_hash(kind)`: what the records' fields of the same names say;
- `usage()`: the LLM counters for the summary; `stop_reason`: why the server refused to go on, or None.

Categorical records need no writer: their question and answer are fixed (`categorical_records`).
"""

from __future__ import annotations

from pathlib import Path

from .attributes import PreparedImage, render_attributes
from .build_folder import LlmUsage
from .llm_client import CUT_OFF_FINISH_REASONS, ChatClient, ChatRequest, ClientSettings, ResponseCache, estimate
from .parsing import parse_reply
from .prompts import EXPECTED_COMPLETION_TOKENS, MAX_COMPLETION_TOKENS, build_messages, prompt_hash, template_hash
from .records import Record, categorical_pair, question_and_answer
from .template_backend import write_conversation, write_reasoning

# A malformed reply is asked for once more with a fresh sample, then recorded as failed.
SAMPLES_PER_PROMPT = 2


def image_record(kind: str, image: PreparedImage, pair_index: int, question: str, answer: str, caption: str,
                 generator: str, prompt_hash_: str) -> Record:
    """The record of the `pair_index`-th question/answer pair written about `image`."""
    item = image.item
    return Record(id=f"{kind}/{item.image_id}/{pair_index}", image=item.relative_path, emotion=item.emotion,
                  type=kind, conversations=question_and_answer(question, answer), attributes=image.attributes,
                  attributes_computed=image.computed, caption=caption, generator=generator, prompt_hash=prompt_hash_)


def categorical_records(images: list[PreparedImage], captions: dict[str, str]) -> list[Record]:
    """One record per image: the categorical instruction and `Predict emotion: <emotion>`."""
    records = []
    for image in images:
        question, answer = categorical_pair(image.item.emotion)
        records.append(image_record("categorical", image, 0, question, answer,
                                    captions.get(image.item.image_path, ""), "none", prompt_hash("categorical")))
    return records


class TemplateWriter:
    """Formulaic but grounded sentences from caption + attributes (template_backend); no network, no cost, and
    nothing fails (`failed` and `not_run` stay empty)."""

    stop_reason = None

    def __init__(self):
        self.failed: list[dict] = []
        self.not_run: list[dict] = []

    def generator(self, kind: str) -> str:
        return "template"

    def prompt_hash(self, kind: str) -> str:
        return template_hash()

    def write(self, kind: str, images: list[PreparedImage], captions: dict[str, str]) -> list[Record]:
        write_pairs = write_conversation if kind == "conversation" else write_reasoning
        records = []
        for image in images:
            caption = captions.get(image.item.image_path, "")
            pairs = write_pairs(image.item.image_id, image.item.emotion, caption, image.attributes)
            for index, (question, answer) in enumerate(pairs):
                records.append(image_record(kind, image, index, question, answer, caption, "template", template_hash()))
        return records

    def estimate(self, kind: str, images: list[PreparedImage], captions: dict[str, str]) -> dict | None:
        return None

    def usage(self) -> LlmUsage:
        return LlmUsage()


class LlmWriter:
    """Asks an OpenAI-compatible server for the pairs of each image, through the cached, rate-limited client.

    Images whose reply failed, or that were never asked because --max_cost was reached or the server kept
    refusing, collect in `failed` and `not_run` (`{"image_id", "type", "reason"}` each).
    """

    def __init__(self, settings: ClientSettings, cache_path: Path, show_progress: bool = True):
        self.settings = settings
        self.client = ChatClient(settings, ResponseCache(cache_path))
        self.show_progress = show_progress
        self.failed: list[dict] = []
        self.not_run: list[dict] = []
        # Every malformed reply refused, retried ones included (`{"image_id", "type", "sample", "reason"}`).
        self.rejected: list[dict] = []

    @property
    def stop_reason(self) -> str | None:
        return self.client.stop_reason

    def generator(self, kind: str) -> str:
        return f"openai-compatible:{self.settings.model}"

    def prompt_hash(self, kind: str) -> str:
        return prompt_hash(kind)

    def _requests(self, kind: str, images: list[PreparedImage], captions: dict[str, str], sample: int) -> list[ChatRequest]:
        requests = []
        for image in images:
            messages = build_messages(kind, captions.get(image.item.image_path, ""),
                                      render_attributes(image.attributes, image.item.emotion))
            requests.append(ChatRequest(f"{kind}/{image.item.image_id}", messages, prompt_hash(kind),
                                        MAX_COMPLETION_TOKENS[kind], sample, EXPECTED_COMPLETION_TOKENS[kind]))
        return requests

    def write(self, kind: str, images: list[PreparedImage], captions: dict[str, str]) -> list[Record]:
        """Asks for `kind` pairs for each image; a malformed or cut-off reply gets one fresh sample."""
        generator = self.generator(kind)
        records, todo = [], images
        reasons: dict[str, str] = {}
        for sample in range(SAMPLES_PER_PROMPT):
            results = self.client.complete_all(self._requests(kind, todo, captions, sample),
                                               desc=f"{kind} (sample {sample + 1})", show_progress=self.show_progress)
            retry = []
            for image, result in zip(todo, results):
                image_id = image.item.image_id
                if result.error is not None:
                    reasons[image_id] = result.error
                    (self.not_run if result.not_run else self.failed).append(
                        {"image_id": image_id, "type": kind, "reason": result.error})
                    continue
                if result.finish_reason in CUT_OFF_FINISH_REASONS:
                    pairs, reason = [], f"cut off by the server (finish_reason {result.finish_reason})"
                else:
                    pairs, reason = parse_reply(result.text, kind)
                if reason is not None:
                    reasons[image_id] = f"malformed reply: {reason}"
                    self.rejected.append({"image_id": image_id, "type": kind, "sample": sample, "reason": reason})
                    retry.append(image)
                    continue
                caption = captions.get(image.item.image_path, "")
                for index, (question, answer) in enumerate(pairs):
                    records.append(image_record(kind, image, index, question, answer, caption, generator,
                                                prompt_hash(kind)))
            todo = retry
            if not todo:
                break
        for image in todo:
            self.failed.append({"image_id": image.item.image_id, "type": kind,
                                "reason": f"{reasons[image.item.image_id]} (after {SAMPLES_PER_PROMPT} samples)"})
        return records

    def estimate(self, kind: str, images: list[PreparedImage], captions: dict[str, str]) -> dict | None:
        """Requests to send (not in the cache), estimated tokens and cost of writing `kind` for the images."""
        return estimate(self._requests(kind, images, captions, 0), self.settings, self.client.cache)

    def usage(self) -> LlmUsage:
        stats = self.client.stats
        return LlmUsage(
            stopped_by_max_cost=stats.stopped_by_max_cost, stopped_by_server_error=self.client.stop_reason,
            api_calls=stats.api_calls, retries=stats.retries, capped_retry_waits=stats.capped_retry_waits,
            cache_hits=stats.cache_hits, cache_lines_ignored=self.client.cache.torn_lines,
            prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens,
            cost_usd=round(stats.cost_usd, 6), cost_usd_total=round(stats.spent_before_usd + stats.cost_usd, 6),
        )
