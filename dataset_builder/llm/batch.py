"""The batch LLM client: the same chat completions as `ChatClient`, sent through the OpenAI Batch API,
which answers within a completion window (24 h) at half the online price.

`BatchClient.complete_all(requests)` keeps `ChatClient`'s contract (results in the order of the requests, the
same cache, `stats`, `stop_reason`), so the writer's parsing, second sample for malformed replies and records work
unchanged; each call is one batch round:

1. requests answered in the cache come from it: the cache file and keys are the online client's, so online and
   batch runs share answers;
2. requests that an earlier run already submitted (it was killed while its batch was pending) are not sent again:
   that batch is polled;
3. the others become Batch API JSONL lines (`custom_id` is the request's cache key), split into files under the
   API's limits on lines and bytes; each file is uploaded and turned into a batch, as far as --max_cost allows
   (the estimated cost of every line is reserved before its file is uploaded, and stays reserved, recorded in the
   state file, until its batch is collected: batches of earlier runs count too);
4. every batch is polled until it ends; its output and error files are downloaded, the answers are appended to
   the cache with their cost at batch prices, and each request gets an answer or an error with the reason.
   Expired, failed and cancelled batches keep the lines they finished; the others fail with the batch's reason.

Crash safety: a state file beside the cache records each upload's file id and custom ids as soon as the upload
returns, and the batch id as soon as the create returns (each write atomic), before any waiting. After `kill -9`
the same command polls the recorded batches instead of submitting their lines again. A batch create that may have
happened without being recorded (a crash, or a create whose reply was lost) is looked up by its input file in
the server's batch list before anything is created, so no file is ever turned into two batches; an uploaded file
whose batch never came is uploaded again. A rerun after completion finds every answer in the cache and sends
nothing. A rerun in online mode first ends the recorded batches (`collect_pending`: collected, or cancelled when
asked), so their requests are not paid for twice.

The API key and the base URL's credential-like parts never reach the state file, the cache or the logs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import openai
from tqdm.auto import tqdm

from emovit_utils.files import atomic_write_text
from emovit_utils.numbers import is_finite_number, is_whole_number

from .base import REFUSING_STATUSES, BaseClient, ChatRequest, ChatResult, plan_sending
from .cache import ResponseCache
from .prices import are_prices, cost_usd
from .redaction import redact_url
from .settings import ClientSettings


logger = logging.getLogger(__name__)

BATCH_STATE_FILE = "llm_batches.json"
CHAT_ENDPOINT = "/v1/chat/completions"
# The OpenAI Batch API's limits on one input file.
MAX_LINES_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 200 * 1024 * 1024
# What batch prices are of the online ones unless given.
BATCH_PRICE_FACTOR = 0.5
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class BatchSettings:
    """How batch mode submits and waits. Prices are USD per million (prompt, completion) tokens; None means half of
    the online prices (`ClientSettings.prices()`)."""

    poll_seconds: float = 60.0
    completion_window: str = "24h"
    price_per_mtok: tuple[float, float] | None = None
    max_lines_per_file: int = MAX_LINES_PER_FILE
    max_bytes_per_file: int = MAX_BYTES_PER_FILE

    def __post_init__(self):
        if not is_finite_number(self.poll_seconds, 0, above=True):
            raise ValueError(f"batch poll_seconds is {self.poll_seconds!r}; use a finite number of seconds > 0")
        if not (isinstance(self.completion_window, str) and self.completion_window):
            raise ValueError(f"batch completion_window is {self.completion_window!r}; use e.g. 24h")
        if self.price_per_mtok is not None and not are_prices(self.price_per_mtok):
            raise ValueError(f"batch price_per_mtok is {self.price_per_mtok!r}; use two finite prices >= 0 "
                             "(prompt, completion)")
        for name in ("max_lines_per_file", "max_bytes_per_file"):
            value = getattr(self, name)
            if not is_whole_number(value, 1):
                raise ValueError(f"batch {name} is {value!r}; use a whole number >= 1")

    def prices(self, settings: ClientSettings) -> tuple[float, float]:
        if self.price_per_mtok is not None:
            return tuple(self.price_per_mtok)
        price_in, price_out = settings.prices()
        return price_in * BATCH_PRICE_FACTOR, price_out * BATCH_PRICE_FACTOR


@dataclass
class BatchCounts:
    """What batch mode asked of the server in this run (summary.json's `batch_api`)."""

    uploads: int = 0
    batches_created: int = 0
    # Batches an earlier run submitted (and recorded) that this run polled instead of submitting their lines again.
    batches_resumed: int = 0
    # Batches an earlier run submitted that this run cancelled on request (--pending_batches cancel).
    batches_cancelled: int = 0
    polls: int = 0
    downloads: int = 0
    lines_submitted: int = 0
    lines_answered: int = 0
    lines_failed: int = 0


class _Stop(Exception):
    """The server refuses the key, the URL or the model: nothing more is sent."""


def split_lines(lines: list[tuple[str, bytes]], max_lines: int,
                max_bytes: int) -> tuple[list[list[tuple[str, bytes]]], list[str]]:
    """`lines` ((custom_id, JSONL line) pairs, in order) cut into consecutive files of at most `max_lines` lines and
    `max_bytes` bytes, and the custom ids of lines that alone are over `max_bytes` (they fit in no file)."""
    files: list[list[tuple[str, bytes]]] = []
    too_big: list[str] = []
    current: list[tuple[str, bytes]] = []
    size = 0
    for custom_id, line in lines:
        if len(line) > max_bytes:
            too_big.append(custom_id)
            continue
        if current and (len(current) >= max_lines or size + len(line) > max_bytes):
            files.append(current)
            current, size = [], 0
        current.append((custom_id, line))
        size += len(line)
    if current:
        files.append(current)
    return files, too_big


class BatchState:
    """The state file: one entry per uploaded input file, `{"input_file_id", "custom_ids", "uploaded_at",
    "estimated_cost_usd", "batch_id", "status", "collected"}`. Every change rewrites the file atomically."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.entries: list[dict] = []
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                entries = data["uploads"]
                assert isinstance(entries, list) and all(isinstance(e, dict) and isinstance(e.get("custom_ids"), list)
                                                         for e in entries)
            except (ValueError, KeyError, TypeError, AssertionError) as e:
                raise ValueError(
                    f"{self.path} is not a batch state file this builder wrote ({type(e).__name__}: {e}). It lists the "
                    "batches submitted and not yet collected; move it away only if none is pending (rerunning without "
                    "it submits their requests again)."
                ) from e
            self.entries = entries

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({"uploads": self.entries}, indent=1))

    def pending(self) -> list[dict]:
        return [e for e in self.entries if not e.get("collected")]

    def reserved_usd(self) -> float:
        """The estimated cost of the lines of batches submitted and not collected: money that may be spent."""
        return sum(e.get("estimated_cost_usd") or 0.0 for e in self.pending())


def held_requests(state_path: str | os.PathLike) -> set[str]:
    """The custom ids (cache keys) of the requests held by batches submitted and not collected."""
    path = Path(state_path)
    if not path.exists():
        return set()
    return {cid for e in BatchState(path).pending() if e.get("batch_id") for cid in e["custom_ids"]}


@dataclass
class _Round:
    """The requests of one `complete_all` call that the cache did not answer, and where their results go."""

    requests: list[ChatRequest]
    # Cache key -> the indices of the requests with that key.
    pending: dict[str, list[int]]
    results: list
    state: BatchState

    def request(self, key: str) -> ChatRequest:
        return self.requests[self.pending[key][0]]


class BatchClient(BaseClient):
    """Sends chat completions through the Batch API; see the module docstring. Same `complete_all`, `stats`,
    `stop_reason` and `cache` as `ChatClient`, plus `counts` (uploads, batches, polls, lines)."""

    def __init__(self, settings: ClientSettings, batch: BatchSettings, cache: ResponseCache,
                 state_path: str | os.PathLike):
        super().__init__(settings, cache)
        self.batch = batch
        self.state_path = Path(state_path)
        self.counts = BatchCounts()
        self._client: openai.OpenAI | None = None
        # The request name of each custom id of this round, for the cache lines.
        self._names: dict[str, str] = {}

    # ------------------------------------------------------------------ accounting

    def _prices(self) -> tuple[float, float]:
        return self.batch.prices(self.settings)

    def reserved_usd(self) -> float:
        """What the batches recorded as submitted and not collected are estimated to cost (see `BatchState`)."""
        return BatchState(self.state_path).reserved_usd()

    def _line(self, custom_id: str, request: ChatRequest) -> bytes:
        body = self.request_body(request)
        return (json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT_ENDPOINT, "body": body},
                           ensure_ascii=False) + "\n").encode("utf-8")

    def estimate(self, requests: list[ChatRequest]) -> dict:
        """What `complete_all` would submit, with no network: requests, tokens, cost at batch prices, files and
        batches, and the requests already waiting in recorded batches."""
        plan = plan_sending(requests, self.settings, self.cache, held_requests(self.state_path))
        files, too_big = split_lines([(k, self._line(k, r)) for k, r in plan.to_send], self.batch.max_lines_per_file,
                                     self.batch.max_bytes_per_file)
        tokens = (plan.prompt_tokens, plan.completion_tokens)
        prices = self._prices()
        return {
            "llm_mode": "batch",
            "requests": len(requests),
            "cached": plan.cached,
            "already_submitted": plan.already_submitted,
            "to_send": len(plan.to_send),
            "batch_files": len(files),
            "batches": len(files),
            "too_big_for_a_file": len(too_big),
            "estimated_prompt_tokens": plan.prompt_tokens,
            "estimated_completion_tokens": plan.completion_tokens,
            "estimated_cost_usd": round(cost_usd(*tokens, prices), 6),
            "estimated_cost_usd_online": round(cost_usd(*tokens, self.settings.prices()), 6),
            "price_per_mtok": list(prices),
            "already_spent_usd": round(self.stats.spent_before_usd, 6),
            # Batches submitted by earlier runs and not collected: counted against --max_cost until they are.
            "reserved_usd": round(self.reserved_usd(), 6),
        }

    # ------------------------------------------------------------------ the server

    def _openai(self) -> openai.OpenAI:
        if self._client is None:
            self._client = openai.OpenAI(**self._openai_arguments(self.settings.max_retries))
        return self._client

    def _reason(self, error: Exception) -> str:
        if isinstance(error, openai.APIStatusError):
            text = f"HTTP {error.status_code}: {str(error.message)[:200]}"
        else:
            text = f"{type(error).__name__}: {str(error)[:200]}"
        return self._redact(text)

    def _refused(self, error: Exception, doing: str) -> _Stop | None:
        """A _Stop when `error` means nothing more will work (key, URL or model refused; no server), else None."""
        refused = isinstance(error, openai.APIStatusError) and error.status_code in REFUSING_STATUSES
        no_connection = isinstance(error, openai.APIConnectionError) and not isinstance(error, openai.APITimeoutError)
        if not (refused or no_connection):
            return None
        where = redact_url(self.settings.base_url) or "the default URL"
        return _Stop(f"the server at {where} refused {doing} ({self._reason(error)}); check OPENAI_API_KEY, "
                     f"--base_url and --llm_model. Batches already submitted are recorded in {self.state_path}; "
                     "rerun the same command to collect them")

    def _find_batch(self, input_file_id: str, uploaded_at: float):
        """The server's batch made from `input_file_id`, or None: looked up before a create that may already have
        happened. The list is newest first; batches created before the upload cannot be it."""
        for batch in self._openai().batches.list(limit=100):
            if batch.input_file_id == input_file_id:
                return batch
            if batch.created_at is not None and batch.created_at < uploaded_at - 60:
                return None
        return None

    def _create_batch(self, entry: dict, state: BatchState) -> None:
        """Turns the uploaded file of `entry` into a batch and records its id. Never creates a second batch from
        one file: a create whose reply was lost may have happened, so before trying again the server's list is
        checked for it."""
        client = self._openai().with_options(max_retries=0)
        last_error: Exception | None = None
        for attempt in range(self.settings.max_retries + 1):
            if attempt > 0:
                found = self._find_batch(entry["input_file_id"], entry["uploaded_at"])
                if found is not None:
                    entry["batch_id"] = found.id
                    state.save()
                    self.counts.batches_created += 1  # by the try whose reply was lost
                    logger.info("found batch %s of %s on the server; polling it", found.id, entry["input_file_id"])
                    return
                time.sleep(min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** attempt))
            try:
                created = client.batches.create(input_file_id=entry["input_file_id"], endpoint=CHAT_ENDPOINT,
                                                completion_window=self.batch.completion_window,
                                                metadata={"source": "emovit dataset_builder"})
            except openai.APIStatusError as e:
                if e.status_code in REFUSING_STATUSES or e.status_code in (400, 422):
                    raise
                last_error = e
                continue
            except (openai.APIConnectionError, openai.APITimeoutError) as e:
                last_error = e
                continue
            entry["batch_id"] = created.id
            entry["status"] = created.status
            state.save()
            self.counts.batches_created += 1
            logger.info("created batch %s (%d requests)", created.id, len(entry["custom_ids"]))
            return
        assert last_error is not None
        raise last_error

    def _submit(self, lines: list[tuple[str, bytes]], estimated_cost: float, state: BatchState) -> dict:
        """Uploads one input file and creates its batch; returns the state entry. Each step is recorded before the
        next one starts."""
        data = b"".join(line for _, line in lines)
        name = f"emovit-batch-{hashlib.sha256(data).hexdigest()[:12]}.jsonl"
        uploaded = self._openai().files.create(file=(name, data, "application/jsonl"), purpose="batch")
        self.counts.uploads += 1
        entry = {"input_file_id": uploaded.id, "custom_ids": [cid for cid, _ in lines], "lines": len(lines),
                 "bytes": len(data), "estimated_cost_usd": round(estimated_cost, 6),
                 "uploaded_at": float(uploaded.created_at or time.time()), "batch_id": None, "status": None,
                 "collected": False}
        state.entries.append(entry)
        state.save()
        try:
            self._create_batch(entry, state)
        except openai.APIStatusError as e:
            if e.status_code in (400, 422):  # the server refused this file: no batch exists, none will
                entry.update(status="refused", collected=True)
                state.save()
            raise
        self.counts.lines_submitted += len(lines)
        self.stats.api_calls += len(lines)
        return entry

    def _download(self, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        text = self._openai().files.content(file_id).text
        self.counts.downloads += 1
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                logger.warning("batch file %s line %d is not JSON; ignored", file_id, number)
                continue
            if isinstance(row, dict) and isinstance(row.get("custom_id"), str):
                rows.append(row)
            else:
                logger.warning("batch file %s line %d has no custom_id; ignored", file_id, number)
        return rows

    def _collect(self, entry: dict, batch, state: BatchState) -> dict[str, ChatResult | str]:
        """The outcome of every line of a finished batch, by custom id: a ChatResult (request filled in by the
        caller) for an answer, a reason string for a failure. Answers go to the cache first, then the entry is
        marked collected, so a crash between the two only downloads the files again."""
        outcome: dict[str, ChatResult | str] = {}
        wanted = set(entry["custom_ids"])
        rows = self._download(batch.output_file_id) + self._download(batch.error_file_id)
        fresh = []
        for row in rows:
            custom_id = row["custom_id"]
            if custom_id not in wanted or isinstance(outcome.get(custom_id), ChatResult):
                continue
            response = row.get("response") if isinstance(row.get("response"), dict) else {}
            body = response.get("body") if isinstance(response.get("body"), dict) else {}
            error = row.get("error")
            status = response.get("status_code")
            choices = body.get("choices") if isinstance(body.get("choices"), list) else []
            if error or status != 200 or not choices or not isinstance(choices[0], dict):
                detail = error or body.get("error") or "no choices in the reply"
                if isinstance(detail, dict):
                    detail = ": ".join(str(detail[k]) for k in ("code", "message") if detail.get(k))
                outcome[custom_id] = self._redact(
                    f"batch {batch.id}: the request failed (status {status}): {str(detail)[:300]}")
                continue
            message = choices[0].get("message") if isinstance(choices[0].get("message"), dict) else {}
            text = message.get("content") if isinstance(message.get("content"), str) else ""
            finish = choices[0].get("finish_reason")
            usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
            prompt_tokens = usage.get("prompt_tokens")
            completion_tokens = usage.get("completion_tokens")
            if not isinstance(prompt_tokens, int) or prompt_tokens < 0:
                prompt_tokens = 0
            if not isinstance(completion_tokens, int) or completion_tokens < 0:
                completion_tokens = max(1, len(text) // 4)
            cost = self._cost(prompt_tokens, completion_tokens)
            outcome[custom_id] = ChatResult(None, text=text, finish_reason=finish if isinstance(finish, str) else None,
                                            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                            cost_usd=cost)
            if custom_id not in self.cache:
                fresh.append({"key": custom_id, "name": self._names.get(custom_id), "model": self.settings.model,
                              "text": text, "finish_reason": finish if isinstance(finish, str) else None,
                              "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "cost_usd": cost, "batch_id": batch.id})
                self.stats.prompt_tokens += prompt_tokens
                self.stats.completion_tokens += completion_tokens
                self.stats.cost_usd += cost
        self.cache.append(*fresh)
        missing = {
            "completed": f"batch {batch.id} completed without a result for this request",
            "expired": f"batch {batch.id} expired (completion window {self.batch.completion_window}) before this "
                       "request ran; a rerun submits it again",
            "cancelled": f"batch {batch.id} was cancelled before this request ran; a rerun submits it again",
            "failed": f"batch {batch.id} failed: {self._batch_errors(batch)}; a rerun submits it again",
        }[batch.status]
        for custom_id in wanted - outcome.keys():
            outcome[custom_id] = missing
        entry.update(status=batch.status, collected=True,
                     answered=sum(isinstance(o, ChatResult) for o in outcome.values()),
                     failed=sum(isinstance(o, str) for o in outcome.values()))
        state.save()
        return outcome

    def _batch_errors(self, batch) -> str:
        data = getattr(batch.errors, "data", None) or []
        messages = [": ".join(str(v) for v in (e.code, e.message) if v) for e in data]
        return self._redact("; ".join(messages)[:300]) or "no reason given"

    def _wait(self, entries: list[dict], state: BatchState, progress, base: int) -> dict[str, ChatResult | str]:
        """Polls the batches of `entries` every poll_seconds until each has ended and is collected."""
        outcome: dict[str, ChatResult | str] = {}
        active = list(entries)
        failures_in_a_row = 0
        ended_lines = 0
        while active:
            # Lines of the batches still running, as the server counts them.
            running_completed = running_failed = 0
            statuses, still = [], []
            for entry in active:
                try:
                    batch = self._openai().batches.retrieve(entry["batch_id"])
                    self.counts.polls += 1
                    if batch.status in TERMINAL_STATUSES:
                        outcome.update(self._collect(entry, batch, state))
                        ended_lines += len(entry["custom_ids"])
                        statuses.append(batch.status)
                        continue
                    failures_in_a_row = 0
                except openai.APIError as e:
                    failures_in_a_row += 1
                    stop = self._refused(e, f"polling batch {entry['batch_id']}")
                    logger.warning("polling batch %s: %s", entry["batch_id"], self._reason(e))
                    if stop is not None and failures_in_a_row >= self.settings.fail_fast_after:
                        raise stop from e
                    still.append(entry)
                    continue
                if entry.get("status") != batch.status:
                    entry["status"] = batch.status
                    state.save()
                if batch.request_counts is not None:
                    running_completed += batch.request_counts.completed
                    running_failed += batch.request_counts.failed
                statuses.append(batch.status)
                still.append(entry)
            answered = sum(isinstance(o, ChatResult) for o in outcome.values())
            progress.n = min(progress.total, base + ended_lines + running_completed + running_failed)
            progress.set_postfix(batches=f"{len(entries) - len(still)}/{len(entries)} ended",
                                 completed=answered + running_completed,
                                 failed=len(outcome) - answered + running_failed,
                                 status=",".join(sorted(set(statuses))))
            progress.refresh()
            active = still
            if active:
                time.sleep(self.batch.poll_seconds)
        return outcome

    # ------------------------------------------------------------------ batches of earlier runs

    def _recorded_batches(self, state: BatchState, wanted: set[str] | None = None) -> list[dict]:
        """The batches of `state` that an earlier run submitted and did not collect (those holding any of the custom
        ids `wanted`, or all), each entry with its batch id: an upload whose create was not recorded is looked up on
        the server, and one that never became a batch is marked so (its lines are submitted afresh). A failed lookup
        sets `stop_reason` and ends the list there."""
        found = []
        for entry in state.pending():
            if wanted is not None and not wanted & set(entry["custom_ids"]):
                continue
            if entry.get("batch_id") is None:
                try:
                    batch = self._find_batch(entry["input_file_id"], entry["uploaded_at"])
                except openai.APIError as e:
                    stop = self._refused(e, "listing batches")
                    self.stop_reason = str(stop) if stop is not None else (
                        f"could not list the server's batches to find the one made from {entry['input_file_id']} "
                        f"({self._reason(e)}); rerun the same command to try again")
                    logger.error("%s", self.stop_reason)
                    break
                if batch is None:
                    entry.update(collected=True, status="never created")
                    state.save()
                    continue
                entry["batch_id"] = batch.id
                state.save()
            self.counts.batches_resumed += 1
            logger.info("resuming batch %s (%d requests) submitted by an earlier run", entry["batch_id"],
                        len(entry["custom_ids"]))
            found.append(entry)
        return found

    def collect_pending(self, cancel: bool = False, show_progress: bool = True) -> None:
        """Ends every batch an earlier run submitted and did not collect, before anything else is sent for the same
        records: each is polled until it ends and its answers go to the cache with their cost. With `cancel`, each is
        cancelled first; the lines it finished are kept (and paid for), the others are asked again later. When the
        server cannot be reached or refuses, `stop_reason` says so and the batches stay recorded (and reserved)."""
        state = BatchState(self.state_path)
        entries = self._recorded_batches(state)
        if self.stop_reason is not None or not entries:
            return
        if cancel:
            for entry in entries:
                try:
                    self._openai().batches.cancel(entry["batch_id"])
                    self.counts.batches_cancelled += 1
                    logger.info("cancelled batch %s (%d requests), as asked", entry["batch_id"],
                                len(entry["custom_ids"]))
                except openai.APIError as e:
                    stop = self._refused(e, f"cancelling batch {entry['batch_id']}")
                    if stop is not None:
                        self.stop_reason = str(stop)
                        logger.error("%s", self.stop_reason)
                        return
                    # e.g. the batch ended meanwhile: it is collected as it is
                    logger.warning("cancelling batch %s: %s", entry["batch_id"], self._reason(e))
        logger.info("collecting %d batch(es) an earlier run submitted (%s) before sending anything else",
                    len(entries), ", ".join(entry["batch_id"] for entry in entries))
        with tqdm(total=sum(len(entry["custom_ids"]) for entry in entries), desc="batches of an earlier run",
                  disable=not show_progress) as progress:
            try:
                outcome = self._wait(entries, state, progress, 0)
            except _Stop as e:
                self.stop_reason = (f"{e}. Nothing else is sent for these records while those batches are pending; "
                                    f"to give them up instead, move {self.state_path} away (their requests are then "
                                    "sent and paid for again)")
                logger.error("%s", self.stop_reason)
                return
        self.counts.lines_answered += sum(isinstance(o, ChatResult) for o in outcome.values())
        self.counts.lines_failed += sum(isinstance(o, str) for o in outcome.values())

    # ------------------------------------------------------------------ one round

    def complete_all(self, requests: list[ChatRequest], desc: str = "LLM batch", show_progress: bool = True) -> list[ChatResult]:
        """Results in the order of `requests`: cached answers without a request, the others from one batch round."""
        results, keys = self._look_up(requests)
        # Identical requests (same key) share one line of the batch.
        pending: dict[str, list[int]] = {}
        for index, result in enumerate(results):
            if result is None:
                pending.setdefault(keys[index], []).append(index)
        if pending:
            with tqdm(total=len(requests), initial=len(requests) - sum(map(len, pending.values())), desc=desc,
                      disable=not show_progress) as progress:
                self._round(requests, pending, results, progress)
        for result in results:
            assert result is not None
            self._count_failure(result)
        return results  # type: ignore[return-value]

    def _round(self, requests: list[ChatRequest], pending: dict[str, list[int]], results: list, progress) -> None:
        """One batch round for the requests the cache did not answer: batches an earlier run submitted for them are
        polled, never submitted again; the others are submitted as far as max_cost allows; every batch is polled
        until it ends, and each request gets its answer or the reason it has none."""
        round_ = _Round(requests, pending, results, BatchState(self.state_path))
        self._names = {key: round_.request(key).name for key in pending}
        resumed = self._recorded_batches(round_.state, set(pending))
        held = {key for entry in resumed for key in entry["custom_ids"]}
        lines = self._lines_within_budget(round_, held)
        submitted = self._submit_files(round_, lines)
        entries = [entry for entry in resumed + submitted if entry.get("batch_id")]
        if entries:
            self._collect_round(round_, entries, progress)

    def _settle(self, round_: _Round, keys: list[str], outcome: ChatResult | str, not_run: bool = False) -> None:
        """Gives each request of `keys` its result: the answer, or the reason it failed, or (`not_run`) the reason
        it was not sent."""
        for key in keys:
            for index in round_.pending.get(key, []):
                request = round_.requests[index]
                if isinstance(outcome, ChatResult):
                    round_.results[index] = ChatResult(
                        request, text=outcome.text, finish_reason=outcome.finish_reason,
                        prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
                        cost_usd=outcome.cost_usd)
                elif not_run:
                    round_.results[index] = self._not_sent(request, outcome)
                else:
                    round_.results[index] = ChatResult(request, error=outcome)

    def _lines_within_budget(self, round_: _Round, held: set[str]) -> list[tuple[str, bytes]]:
        """The batch lines of the pending requests that no recorded batch holds, in order, as far as max_cost
        allows; the requests left out are settled as not sent."""
        max_cost = self.settings.max_cost
        spent = self.stats.spent_before_usd + self.stats.cost_usd
        # Every batch submitted and not collected may still be paid for, whichever requests it holds.
        reserved = round_.state.reserved_usd()
        lines = []
        for key in round_.pending:
            if key in held:
                continue
            if self.stop_reason is not None:
                self._settle(round_, [key], self.stop_reason, not_run=True)
                continue
            cost = self._estimated_cost(round_.request(key))
            if max_cost is not None and spent + reserved + cost > max_cost:
                self.stats.stopped_by_max_cost = True
                self._settle(round_, [key], f"--max_cost {max_cost:g} USD reached ({spent:.4f} USD spent on this "
                                            f"cache, {reserved:.4f} USD reserved for batches submitted and not "
                                            "collected)", not_run=True)
                continue
            reserved += cost
            lines.append((key, self._line(key, round_.request(key))))
        return lines

    def _submit_files(self, round_: _Round, lines: list[tuple[str, bytes]]) -> list[dict]:
        """`lines` cut into files under the API's limits, each submitted as a batch; returns the state entries of
        those submitted. A line too big for any file is settled as failed."""
        files, too_big = split_lines(lines, self.batch.max_lines_per_file, self.batch.max_bytes_per_file)
        self._settle(round_, too_big, f"the request's batch line is over the {self.batch.max_bytes_per_file} bytes a "
                                      "batch file may hold")
        entries = []
        for number, file_lines in enumerate(files):
            entry = self._submit_file(round_, file_lines, f"batch file {number + 1} of {len(files)}")
            if entry is not None:
                entries.append(entry)
        return entries

    def _submit_file(self, round_: _Round, file_lines: list[tuple[str, bytes]], which: str) -> dict | None:
        """Submits one file as a batch and returns its state entry. When it is not submitted (the run has stopped,
        the server refuses, the upload or create failed), its requests are settled with the reason and None is
        returned."""
        keys = [key for key, _ in file_lines]
        if self.stop_reason is not None:
            self._settle(round_, keys, self.stop_reason, not_run=True)
            return None
        estimated = sum(self._estimated_cost(round_.request(key)) for key in keys)
        try:
            return self._submit(file_lines, estimated, round_.state)
        except openai.APIError as e:
            stop = self._refused(e, which)
            if stop is not None:
                self.stop_reason = str(stop)
                logger.error("%s", self.stop_reason)
                self._settle(round_, keys, self.stop_reason, not_run=True)
                return None
            reason = f"submitting {which} failed: {self._reason(e)}"
            logger.warning("%s", reason)
            self._settle(round_, keys, reason)
            return None

    def _collect_round(self, round_: _Round, entries: list[dict], progress) -> None:
        """Polls the batches of `entries` until each has ended and settles the round's requests with what they
        brought; when the server stops answering, the requests still waiting are settled as not sent."""
        try:
            outcome = self._wait(entries, round_.state, progress, progress.n)
        except _Stop as e:
            self.stop_reason = str(e)
            logger.error("%s", self.stop_reason)
            outcome = {}
        for entry in entries:
            for key in entry["custom_ids"]:
                if key not in round_.pending:
                    continue
                if key in outcome:
                    self._settle(round_, [key], outcome[key])
                else:
                    self._settle(round_, [key], f"submitted in batch {entry['batch_id']}, not collected: "
                                                f"{self.stop_reason}", not_run=True)
        self.counts.lines_answered += sum(isinstance(o, ChatResult) for o in outcome.values())
        self.counts.lines_failed += sum(isinstance(o, str) for o in outcome.values())
