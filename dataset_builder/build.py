"""The `build` command: runs the stages in order and writes the output folder. Kept thin on purpose; the
work is in the stage modules (emoset, attributes, captions, prompts, llm_client, parsing, records).

A folder is built up over runs: a build rewrites the records of the types it is asked for and keeps those
of the other types. One build at a time holds a folder (a lock the kernel releases when the process ends).
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from . import attributes as attrs
from .emoset import ImageItem, Skip, read_annotation, read_split, sample_per_class
from .llm_client import CUT_OFF_FINISH_REASONS, ChatClient, ChatRequest, ClientSettings, ResponseCache, estimate, redact_url
from .parsing import parse_reply
from .prompts import EXPECTED_COMPLETION_TOKENS, MAX_COMPLETION_TOKENS, build_messages, prompt_hash, template_hash
from .records import (INSTRUCTION_TYPES, SUMMARY_FILE, categorical_pair, make_record, read_summary, read_written_records,
                      write_outputs)
from .template_backend import write_conversation, write_reasoning

logger = logging.getLogger(__name__)

DEFAULT_PER_CLASS = {"categorical": 4600, "conversation": 1000, "reasoning": 100}
LLM_CACHE_FILE = "llm_cache.jsonl"
CAPTION_CACHE_FILE = "captions.jsonl"
LOCK_FILE = ".build.lock"
# A malformed reply is asked for once more with a fresh sample, then recorded as failed.
SAMPLES_PER_PROMPT = 2


class FolderLockedError(RuntimeError):
    """Another build holds the output (or cache) folder."""


class BuildStopped(RuntimeError):
    """The server kept refusing requests; the outputs hold what was answered before that."""


@contextmanager
def hold_folder_lock(folder: Path):
    """Holds an exclusive lock on `folder` while the block runs; raises FolderLockedError when another process has it.

    The lock is `flock` on a file in the folder: the kernel releases it when the process ends, however it ends,
    so a killed build leaves nothing that blocks the next one. The file itself stays; it only names the last holder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderLockedError(
                f"{folder} is in use by another build (process {holder}; lock file {path}). Two builds into one folder "
                "would pay for every request twice: wait for that one to finish, or build into another --output_dir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@dataclass
class BuildOptions:
    emoset_root: str
    output_dir: str
    types: tuple[str, ...] = INSTRUCTION_TYPES
    per_class: dict = field(default_factory=lambda: dict(DEFAULT_PER_CLASS))
    llm_backend: str = "template"
    captioner: str = "none"
    caption_batch_size: int = 16
    split: str = "train"
    seed: int = 42
    dry_run: bool = False
    cache_dir: str | None = None
    show_progress: bool = True
    llm: ClientSettings | None = None


@dataclass
class PreparedImage:
    item: ImageItem
    attributes: dict
    computed: list[str]


def prepare_images(items: list[ImageItem], show_progress: bool = True) -> tuple[dict[str, PreparedImage], list[Skip]]:
    """Annotation + pixel checks for each image; unusable ones become Skips with a reason."""
    prepared, skipped = {}, []
    for item in tqdm(items, desc="attributes", disable=not show_progress):
        annotation, skip = read_annotation(item)
        if skip is not None:
            skipped.append(skip)
            continue
        try:
            normalised = attrs.normalise_attributes(annotation)
        except ValueError as e:
            skipped.append(Skip(item.image_id, f"{item.annotation_path}: {e}"))
            continue
        try:
            pixels = attrs.load_pixels(item.image_path)
        except (OSError, ValueError, SyntaxError) as e:
            skipped.append(Skip(item.image_id, f"image {item.image_path} cannot be decoded ({e}); replace or remove it"))
            continue
        completed, computed = attrs.complete_attributes(normalised, pixels)
        prepared[item.image_id] = PreparedImage(item, completed, computed)
    for skip in skipped:
        logger.warning("skipped %s: %s", skip.item, skip.reason)
    return prepared, skipped


def _llm_records(kind: str, images: list[PreparedImage], captions: dict, options: BuildOptions, client: ChatClient,
                 failed: list, not_run: list) -> list[dict]:
    """Asks the LLM for `kind` pairs for each image; a malformed reply gets one fresh sample."""
    settings = options.llm
    p_hash = prompt_hash(kind)
    generator = f"openai-compatible:{settings.model}"
    records, todo = [], images
    reasons: dict[str, str] = {}
    for sample in range(SAMPLES_PER_PROMPT):
        requests = []
        for image in todo:
            caption = captions.get(image.item.image_path, "")
            messages = build_messages(kind, caption, attrs.render_attributes(image.attributes, image.item.emotion))
            requests.append(ChatRequest(f"{kind}/{image.item.image_id}", messages, p_hash, MAX_COMPLETION_TOKENS[kind],
                                        sample, EXPECTED_COMPLETION_TOKENS[kind]))
        results = client.complete_all(requests, desc=f"{kind} (sample {sample + 1})", show_progress=options.show_progress)
        retry = []
        for image, result in zip(todo, results):
            image_id = image.item.image_id
            if result.error is not None:
                reasons[image_id] = result.error
                (not_run if result.not_run else failed).append({"image_id": image_id, "type": kind, "reason": result.error})
                continue
            if result.finish_reason in CUT_OFF_FINISH_REASONS:
                pairs, reason = [], f"cut off by the server (finish_reason {result.finish_reason})"
            else:
                pairs, reason = parse_reply(result.text, kind)
            if reason is not None:
                reasons[image_id] = f"malformed reply: {reason}"
                retry.append(image)
                continue
            caption = captions.get(image.item.image_path, "")
            for index, (question, answer) in enumerate(pairs):
                records.append(make_record(kind, image_id, image.item.relative_path, image.item.emotion, index, question,
                                           answer, image.attributes, image.computed, caption, generator, p_hash))
        todo = retry
        if not todo:
            break
    for image in todo:
        failed.append({"image_id": image.item.image_id, "type": kind,
                       "reason": f"{reasons[image.item.image_id]} (after {SAMPLES_PER_PROMPT} samples)"})
    return records


def _earlier_records(output_dir: Path, types: tuple[str, ...], root: Path) -> tuple[list[dict], dict]:
    """Records (and the summary) of earlier builds in `output_dir` whose type is not in `types`: they are kept."""
    earlier = read_written_records(output_dir)
    kept = [r for r in earlier if r["type"] not in types]
    if len(kept) < len(earlier):
        logger.info("rebuilding %s: the %d records of these types from earlier builds are replaced", list(types),
                    len(earlier) - len(kept))
    if not kept:
        return [], {}
    summary = read_summary(output_dir) if (output_dir / SUMMARY_FILE).is_file() else {}
    if summary.get("emoset_root") != str(root):
        counts = dict(Counter(r["type"] for r in kept))
        raise ValueError(
            f"{output_dir} holds {counts} records built from emoset_root {summary.get('emoset_root')!r}, and this "
            f"build reads {str(root)!r}; their image paths would point into the wrong folder. Build into another "
            "--output_dir, or add those types to --types to rebuild them from this root."
        )
    return kept, summary


def run_build(options: BuildOptions) -> dict:
    """Builds `options.output_dir`; returns the summary (also written as summary.json).

    Raises FolderLockedError when another build holds the folder, and BuildStopped (after writing what was
    answered) when the LLM server kept refusing requests.
    """
    unknown = [t for t in options.types if t not in INSTRUCTION_TYPES]
    if unknown:
        raise ValueError(f"--types has {unknown}; choose from {list(INSTRUCTION_TYPES)}")
    if options.llm_backend not in ("openai", "template"):
        raise ValueError(f"--llm_backend is {options.llm_backend!r}; use openai or template")
    if options.dry_run:
        return _run_build(options)
    output_dir = Path(options.output_dir)
    cache_dir = Path(options.cache_dir) if options.cache_dir else output_dir
    with ExitStack() as locks:
        for folder in dict.fromkeys([output_dir.resolve(), cache_dir.resolve()]):
            locks.enter_context(hold_folder_lock(folder))
        return _run_build(options)


def _run_build(options: BuildOptions) -> dict:
    output_dir = Path(options.output_dir)
    cache_dir = Path(options.cache_dir) if options.cache_dir else output_dir
    root = Path(options.emoset_root).resolve()
    kept, earlier_summary = ([], {}) if options.dry_run else _earlier_records(output_dir, options.types, root)

    # Reading and sampling
    listing = read_split(root, options.split)
    drawn = sample_per_class(listing.items, {t: options.per_class[t] for t in options.types}, options.seed)
    unique = {item.image_id: item for items in drawn.values() for item in items}

    # Attributes
    prepared, skipped = prepare_images(list(unique.values()), options.show_progress)
    skipped = listing.skipped + skipped

    # Captions
    captions: dict[str, str] = {}
    if options.captioner != "none" and not options.dry_run:
        from .captions import caption_images

        captions = caption_images([p.item.image_path for p in prepared.values()], options.captioner,
                                  cache_dir / CAPTION_CACHE_FILE, options.caption_batch_size)

    # Instructions
    records: list[dict] = []
    failed: list[dict] = []
    not_run: list[dict] = []
    dry_run_report = None
    client = None
    if options.llm_backend == "openai" and any(t in options.types for t in ("conversation", "reasoning")):
        client = ChatClient(options.llm, ResponseCache(cache_dir / LLM_CACHE_FILE))
    for kind in options.types:
        images = [prepared[item.image_id] for item in drawn[kind] if item.image_id in prepared]
        if kind == "categorical":
            for image in images:
                q, a = categorical_pair(image.item.emotion)
                records.append(make_record("categorical", image.item.image_id, image.item.relative_path,
                                           image.item.emotion, 0, q, a, image.attributes, image.computed,
                                           captions.get(image.item.image_path, ""), "none", prompt_hash("categorical")))
        elif options.llm_backend == "template":
            write = write_conversation if kind == "conversation" else write_reasoning
            for image in images:
                caption = captions.get(image.item.image_path, "")
                for index, (q, a) in enumerate(write(image.item.image_id, image.item.emotion, caption, image.attributes)):
                    records.append(make_record(kind, image.item.image_id, image.item.relative_path, image.item.emotion,
                                               index, q, a, image.attributes, image.computed, caption, "template",
                                               template_hash()))
        elif options.dry_run:
            requests = [ChatRequest(f"{kind}/{image.item.image_id}",
                                    build_messages(kind, captions.get(image.item.image_path, ""),
                                                   attrs.render_attributes(image.attributes, image.item.emotion)),
                                    prompt_hash(kind), MAX_COMPLETION_TOKENS[kind], 0, EXPECTED_COMPLETION_TOKENS[kind])
                        for image in images]
            report = estimate(requests, options.llm, client.cache)
            dry_run_report = dry_run_report or {}
            dry_run_report[kind] = report
        else:
            records.extend(_llm_records(kind, images, captions, options, client, failed, not_run))

    if options.dry_run:
        return {"dry_run": True, "llm_backend": options.llm_backend, "images": len(prepared),
                "skipped": [vars(s) for s in skipped], "estimate": dry_run_report or {}}

    # Output: this build's types, plus the records of other types that earlier builds left in the folder
    kept_per_type = dict(Counter(r["type"] for r in kept))
    if kept:
        logger.info("keeping %d records from earlier builds (%s), types not asked for this time", len(kept),
                    kept_per_type)
    records = kept + records
    types = [kind for kind in INSTRUCTION_TYPES if kind in options.types or kind in kept_per_type]
    kept_types = [kind for kind in types if kind in kept_per_type]
    per_type = {kind: sum(r["type"] == kind for r in records) for kind in types}
    stats = client.stats if client is not None else None
    settings = options.llm
    stop_reason = client.stop_reason if client is not None else None
    summary = {
        "emoset_root": str(root),
        "records_per_type": per_type,
        "records": len(records),
        "images_per_type": {kind: len({r["image"] for r in records if r["type"] == kind}) for kind in types},
        # Records of these types were not rebuilt this time; they come from earlier builds into this folder.
        "kept_from_earlier_builds": kept_per_type,
        "failed": [f for f in earlier_summary.get("failed", []) if f.get("type") in kept_types] + failed,
        "skipped": [vars(s) for s in skipped],
        # Images never asked about because --max_cost was reached or the server kept refusing; a rerun picks them up.
        "not_run": [f for f in earlier_summary.get("not_run", []) if f.get("type") in kept_types] + not_run,
        "stopped_by_max_cost": stats.stopped_by_max_cost if stats else False,
        "stopped_by_server_error": stop_reason,
        "api_calls": stats.api_calls if stats else 0,
        "retries": stats.retries if stats else 0,
        "capped_retry_waits": stats.capped_retry_waits if stats else 0,
        "cache_hits": stats.cache_hits if stats else 0,
        "cache_lines_ignored": client.cache.torn_lines if client is not None else 0,
        "prompt_tokens": stats.prompt_tokens if stats else 0,
        "completion_tokens": stats.completion_tokens if stats else 0,
        "cost_usd": round(stats.cost_usd, 6) if stats else 0.0,
        # Everything the LLM cache records as spent, this run and earlier ones: what --max_cost limits.
        "cost_usd_total": round(stats.spent_before_usd + stats.cost_usd, 6) if stats else 0.0,
        "generator": {**{kind: earlier_summary.get("generator", {}).get(kind, "unknown") for kind in kept_types},
                      **{kind: ("none" if kind == "categorical" else "template" if options.llm_backend == "template"
                                else f"openai-compatible:{settings.model}") for kind in options.types}},
        "prompt_hashes": {**{kind: earlier_summary.get("prompt_hashes", {}).get(kind, "unknown") for kind in kept_types},
                          **{kind: (template_hash() if options.llm_backend == "template" and kind != "categorical"
                                    else prompt_hash(kind)) for kind in options.types}},
        "captioner": options.captioner,
        "args": {
            "emoset_root": str(root), "output_dir": str(output_dir), "types": list(options.types),
            "per_class": {t: options.per_class[t] for t in options.types}, "llm_backend": options.llm_backend,
            "captioner": options.captioner, "split": options.split, "seed": options.seed,
            **({"llm_model": settings.model, "base_url": redact_url(settings.base_url), "concurrency": settings.concurrency,
                "requests_per_minute": settings.requests_per_minute, "tokens_per_minute": settings.tokens_per_minute,
                "max_retries": settings.max_retries, "timeout_s": settings.timeout_s, "temperature": settings.temperature,
                "top_p": settings.top_p, "stream": settings.stream, "price_per_mtok": list(settings.prices()),
                "max_cost": settings.max_cost, "max_retry_wait_s": settings.max_retry_wait_s,
                "fail_fast_after": settings.fail_fast_after} if settings is not None and options.llm_backend == "openai" else {}),
        },
    }
    write_outputs(output_dir, records, summary, options.seed)
    logger.info("wrote %d records to %s (%s); %d failed, %d skipped", len(records), output_dir, per_type, len(failed), len(skipped))
    if stop_reason is not None:
        raise BuildStopped(f"{stop_reason}. {output_dir} holds what was answered; rerun the same command once fixed.")
    return summary
