"""Instruction writers: the conversation and reasoning pairs of each image, written either by templates (offline)
or by an LLM behind an OpenAI-compatible server. Both have the same methods, so the build picks one and runs it:

- `write(kind, images, captions)`: the records of `kind` for the images (the LLM writer also notes failures);
- `estimate(kind, images, captions)`: what writing would send and cost, or None when it costs nothing;
- `generator(kind)`, `prompt_hash(kind)`: what the records' fields of the same names say;
- `usage()`: the LLM counters for the summary; `stop_reason`: why the server refused to go on, or None;
- `unanswered`: per type, why each image that got no reply from the server went without one.

Categorical records need no writer: their question and answer are fixed (`categorical_records`).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from .attributes import PreparedImage, render_attributes
from .build_folder import LlmUsage
from .llm import (
    BATCH_STATE_FILE,
    CUT_OFF_FINISH_REASONS,
    BatchClient,
    BatchSettings,
    BatchState,
    ChatClient,
    ChatRequest,
    ClientSettings,
    ResponseCache,
    estimate,
    held_requests,
)
from .parsing import parse_reply
from .prompts import (
    EXPECTED_COMPLETION_TOKENS,
    MAX_COMPLETION_TOKENS,
    build_messages,
    prompt_hash,
    response_format_field,
    template_hash,
)
from .records import Record, categorical_pair, question_and_answer
from .template_backend import write_conversation, write_reasoning


logger = logging.getLogger(__name__)

# A malformed reply is asked for once more with a fresh sample, then recorded as failed.
SAMPLES_PER_PROMPT = 2
# What a build does first with batches an earlier run submitted and did not collect (--pending_batches).
PENDING_BATCHES = ("collect", "cancel")


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
        self.unanswered: dict[str, list[str]] = {}

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

    With `settings.response_format == "json_schema"` the pairs are asked for as JSON under a schema. When the
    server refuses that field, the writer falls back to text prompts for the rest of its run, once: the refused
    requests are asked again as text, every later one is text from the start, and `usage()` says so. A rerun
    starts with structured outputs again (one refused request, then text replies from the cache).
    """

    def __init__(self, settings: ClientSettings, cache_path: Path, show_progress: bool = True,
                 batch: BatchSettings | None = None, pending_batches: str = "collect", poll_seconds: float = 60.0):
        if pending_batches not in PENDING_BATCHES:
            raise ValueError(f"pending_batches is {pending_batches!r}; use one of {', '.join(PENDING_BATCHES)}")
        self.settings = settings
        self.state_path = Path(cache_path).with_name(BATCH_STATE_FILE)
        # Batch mode (`batch` given) changes only how the requests travel: same cache, results, parsing and retries.
        cache = ResponseCache(cache_path)
        if batch is None:
            self.client = ChatClient(settings, cache)
        else:
            self.client = BatchClient(settings, batch, cache, self.state_path)
        # Batches an earlier batch-mode run submitted and did not collect (read now: a damaged state file fails
        # before any work). They are ended before the first request (`_end_pending_batches`): collected, or
        # cancelled when `pending_batches` is "cancel"; in batch mode without cancelling, each round resumes its own.
        self._pending = BatchState(self.state_path).pending()
        self._pending_batches = pending_batches
        self._poll_seconds = poll_seconds
        # The Batch API counters of ending them in online mode (summary.json's batch_api), or None.
        self._pending_counts = None
        self.show_progress = show_progress
        self.failed: list[dict] = []
        self.not_run: list[dict] = []
        # Per type, the reason of each image whose request got no reply (refused, failed, never sent): such a type
        # is not whole, and the build keeps an earlier build's records of it.
        self.unanswered: dict[str, list[str]] = {}
        # The format requests are made in now: settings.response_format, or "text" after a refusal.
        self.response_format = settings.response_format
        self.response_format_fallback_reason: str | None = None
        # Replies parsed per type, second samples included; the malformed ones among them are in `rejected`.
        self.replies_parsed: Counter[str] = Counter()
        self._hashes_used: dict[str, set[str]] = {}
        # Every malformed reply refused, retried ones included (`{"image_id", "type", "sample", "reason"}`).
        self.rejected: list[dict] = []

    @property
    def stop_reason(self) -> str | None:
        return self.client.stop_reason

    def generator(self, kind: str) -> str:
        return f"openai-compatible:{self.settings.model}"

    def prompt_hash(self, kind: str) -> str:
        """The hash of the prompt `kind`'s records were written with; comma-joined when a fallback to text left
        records of both formats (each record names its own)."""
        used = self._hashes_used.get(kind)
        return ",".join(sorted(used)) if used else prompt_hash(kind, self.response_format)

    def _requests(self, kind: str, images: list[PreparedImage], captions: dict[str, str], sample: int,
                  response_format: str | None = None) -> list[ChatRequest]:
        response_format = response_format or self.response_format
        structured = response_format_field(kind) if response_format == "json_schema" else None
        hash_ = prompt_hash(kind, response_format)
        requests = []
        for image in images:
            messages = build_messages(kind, captions.get(image.item.image_path, ""),
                                      render_attributes(image.attributes, image.item.emotion), response_format)
            requests.append(ChatRequest(f"{kind}/{image.item.image_id}", messages, hash_, MAX_COMPLETION_TOKENS[kind],
                                        sample, EXPECTED_COMPLETION_TOKENS[kind], structured))
        return requests

    def _ask(self, kind: str, images: list[PreparedImage], captions: dict[str, str], sample: int) -> list:
        """The client's results for `kind` about `images`; requests whose response format the server refused are
        asked again as text, and every later request of the run is text."""
        desc = f"{kind} (sample {sample + 1})"
        results = self.client.complete_all(self._requests(kind, images, captions, sample), desc=desc,
                                           show_progress=self.show_progress)
        refused = [index for index, result in enumerate(results) if result.format_refused]
        if refused:
            if self.response_format != "text":
                self.response_format = "text"
                self.response_format_fallback_reason = self.client.format_refusal
                logger.warning("%s; asking for text replies (Question:/Answer: lines) for the rest of this run",
                               self.client.format_refusal)
            again = self.client.complete_all(self._requests(kind, [images[i] for i in refused], captions, sample, "text"),
                                             desc=f"{desc}, as text", show_progress=self.show_progress)
            for index, result in zip(refused, again):
                results[index] = result
        return results

    def _end_pending_batches(self) -> None:
        """Collects (or cancels, on request) the batches an earlier run left pending, once, before any request: the
        requests they hold are otherwise sent and paid for a second time. Online, a client for the Batch API does it
        and a fresh online client then starts from the cache that holds their answers; if they cannot be ended, the
        online client sends nothing (its `stop_reason` says why)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        cancel = self._pending_batches == "cancel"
        if isinstance(self.client, BatchClient):
            if cancel:
                self.client.collect_pending(cancel=True, show_progress=self.show_progress)
            return  # otherwise each round resumes the batches that hold its requests
        settle = BatchClient(self.settings, BatchSettings(poll_seconds=self._poll_seconds), self.client.cache,
                             self.state_path)
        settle.collect_pending(cancel=cancel, show_progress=self.show_progress)
        self._pending_counts = settle.counts
        self.client = ChatClient(self.settings, self.client.cache)
        self.client.stop_reason = settle.stop_reason

    def write(self, kind: str, images: list[PreparedImage], captions: dict[str, str]) -> list[Record]:
        """Asks for `kind` pairs for each image; a malformed or cut-off reply gets one fresh sample."""
        self._end_pending_batches()
        generator = self.generator(kind)
        records, todo = [], images
        reasons: dict[str, str] = {}
        for sample in range(SAMPLES_PER_PROMPT):
            results = self._ask(kind, todo, captions, sample)
            retry = []
            for image, result in zip(todo, results):
                image_id = image.item.image_id
                if result.error is not None:
                    reasons[image_id] = result.error
                    self.unanswered.setdefault(kind, []).append(result.error)
                    (self.not_run if result.not_run else self.failed).append(
                        {"image_id": image_id, "type": kind, "reason": result.error})
                    continue
                request = result.request
                if result.finish_reason in CUT_OFF_FINISH_REASONS:
                    pairs, reason = [], f"cut off by the server (finish_reason {result.finish_reason})"
                else:
                    pairs, reason = parse_reply(result.text, kind,
                                                "json_schema" if request.response_format is not None else "text")
                self.replies_parsed[kind] += 1
                if reason is not None:
                    reasons[image_id] = f"malformed reply: {reason}"
                    self.rejected.append({"image_id": image_id, "type": kind, "sample": sample, "reason": reason})
                    retry.append(image)
                    continue
                self._hashes_used.setdefault(kind, set()).add(request.prompt_hash)
                caption = captions.get(image.item.image_path, "")
                for index, (question, answer) in enumerate(pairs):
                    records.append(image_record(kind, image, index, question, answer, caption, generator,
                                                request.prompt_hash))
            todo = retry
            if not todo:
                break
        for image in todo:
            self.failed.append({"image_id": image.item.image_id, "type": kind,
                                "reason": f"{reasons[image.item.image_id]} (after {SAMPLES_PER_PROMPT} samples)"})
        return records

    def estimate(self, kind: str, images: list[PreparedImage], captions: dict[str, str]) -> dict | None:
        """Requests to send (not in the cache), estimated tokens and cost of writing `kind` for the images."""
        requests = self._requests(kind, images, captions, 0)
        if isinstance(self.client, BatchClient):
            return self.client.estimate(requests)
        return estimate(requests, self.settings, self.client.cache, held=held_requests(self.state_path),
                        reserved_usd=BatchState(self.state_path).reserved_usd())

    def usage(self) -> LlmUsage:
        stats = self.client.stats
        reserved = BatchState(self.state_path).reserved_usd()
        if isinstance(self.client, BatchClient):
            batch_api = vars(self.client.counts).copy()
        else:
            batch_api = None if self._pending_counts is None else vars(self._pending_counts).copy()
        return LlmUsage(
            stopped_by_max_cost=stats.stopped_by_max_cost, stopped_by_server_error=self.client.stop_reason,
            api_calls=stats.api_calls, retries=stats.retries, capped_retry_waits=stats.capped_retry_waits,
            cache_hits=stats.cache_hits, cache_lines_ignored=self.client.cache.torn_lines,
            prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens,
            cost_usd=round(stats.cost_usd, 6),
            cost_usd_total=round(stats.spent_before_usd + stats.cost_usd + reserved, 6),
            cost_usd_reserved=round(reserved, 6),
            held_by_rate_limit_headers=stats.held_by_rate_limit_headers,
            response_format=self.settings.response_format, response_format_used=self.response_format,
            response_format_fallback_reason=self.response_format_fallback_reason,
            batch_api=batch_api,
        )
