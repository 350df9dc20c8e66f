"""The `build` command: runs the stages in order and writes the output folder. Kept thin on purpose; the
work is in the stage modules (emoset, attributes, captions, writers, records, build_folder).

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

from .attributes import prepare_images
from .build_folder import SUMMARY_FILE, BuildSummary, read_summary, read_written_records, write_outputs
from .emoset import read_split, sample_per_class
from .llm import BatchSettings, ClientSettings, redact_url
from .prompts import prompt_hash
from .quality import carry_over, plot_quality, quality_report, remove_duplicates
from .records import INSTRUCTION_TYPES, Record
from .writers import LlmWriter, TemplateWriter, categorical_records


logger = logging.getLogger(__name__)

DEFAULT_PER_CLASS = {"categorical": 4600, "conversation": 1000, "reasoning": 100}
LLM_CACHE_FILE = "llm_cache.jsonl"
CAPTION_CACHE_FILE = "captions.jsonl"
QUALITY_PLOT_FILE = "quality.png"
LOCK_FILE = ".build.lock"


class FolderLockedError(RuntimeError):
    """Another build holds the output (or cache) folder."""


class BuildStopped(RuntimeError):
    """The server kept refusing requests; the outputs hold what was answered before that."""


# What to do when the folder of each flag is held by another build.
_LOCKED_ADVICE = {
    "--output_dir": "Two builds into one folder would pay for every request twice: wait for that one to finish, or "
                    "build into another --output_dir.",
    "--cache_dir": "It holds the LLM and caption caches, which two builds must not write at once (they would pay for "
                   "the same requests twice). Wait for that build to finish and run this one again (it then reuses "
                   "every answer the other paid for), or give this build another --cache_dir of its own (it starts "
                   "with an empty cache).",
}


@contextmanager
def hold_folder_lock(folder: Path, flag: str = "--output_dir"):
    """Holds an exclusive lock on `folder` while the block runs; raises FolderLockedError, naming `flag` (the
    command-line flag that chose the folder: --output_dir or --cache_dir), when another process has it.

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
            raise FolderLockedError(f"{flag} {folder} is in use by another build (process {holder}; lock file "
                                    f"{path}). {_LOCKED_ADVICE[flag]}") from None
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
    # Batch API mode of the LLM writer (--llm_mode batch); None sends online requests.
    batch: BatchSettings | None = None
    # Let the template backend replace records an LLM wrote (refused otherwise).
    replace_llm_records: bool = False
    # What the LLM writer does first with batches an earlier batch-mode run submitted and did not collect: "collect"
    # (wait for them, keep their answers) or "cancel" (cancel them, keep the lines they finished). Online, they are
    # polled every `pending_poll_seconds`; batch mode polls at `batch.poll_seconds`.
    pending_batches: str = "collect"
    pending_poll_seconds: float = 60.0


# What the records of an LLM (the openai backend's, or the official ones imported) say in their `generator` field.
_LLM_GENERATORS = ("openai-compatible:", "official-emovit")


def _earlier_records(output_dir: Path, types: tuple[str, ...], root: Path) -> tuple[list[Record], dict]:
    """The records earlier builds left in `output_dir`, in file order, and their summary. Those of types not in
    `types` are kept; those of `types` are replaced once this build has written all of them (`run_build`)."""
    earlier = [Record.from_dict(r) for r in read_written_records(output_dir)]
    if not earlier:
        return [], {}
    summary = read_summary(output_dir) if (output_dir / SUMMARY_FILE).is_file() else {}
    kept = [r for r in earlier if r.type not in types]
    if kept and summary.get("emoset_root") != str(root):
        counts = dict(Counter(r.type for r in kept))
        raise ValueError(
            f"{output_dir} holds {counts} records built from emoset_root {summary.get('emoset_root')!r}, and this "
            f"build reads {str(root)!r}; their image paths would point into the wrong folder. Build into another "
            "--output_dir, or add those types to --types to rebuild them from this root."
        )
    return earlier, summary


def _refuse_template_over_llm_records(output_dir: Path, earlier: list[Record], options: BuildOptions) -> None:
    """Raises ValueError when the template backend would replace records an LLM wrote (paid for, or the official
    ones) with template sentences, unless `options.replace_llm_records` asks for it."""
    if options.llm_backend != "template" or options.replace_llm_records:
        return
    written = Counter((r.type, r.generator) for r in earlier
                      if r.type in options.types and r.generator.startswith(_LLM_GENERATORS))
    if written:
        found = ", ".join(f"{n} {kind} records written by {generator}" for (kind, generator), n in written.items())
        raise ValueError(
            f"{output_dir} holds {found}; --llm_backend template would replace them with template sentences. Pass "
            "--replace_llm_records to replace them anyway, leave those types out of --types, or build into another "
            "--output_dir.")


def run_build(options: BuildOptions) -> dict:
    """Builds `options.output_dir` and returns its summary (as written to summary.json).

    The stages, in order: read the split; draw the images of each type; complete their attributes; caption them;
    write the instructions of each type (the fixed categorical pair, or the template or LLM writer); write the
    records, with those of other types kept from earlier builds, and the summary. A dry run stops before writing
    and returns what the LLM writer would send and cost.

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
    for flag, folder in (("--output_dir", output_dir), ("--cache_dir", cache_dir)):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{flag} {folder} is a file, not a folder; name a folder (it is created if missing).")
    with ExitStack() as locks:
        locks.enter_context(hold_folder_lock(output_dir.resolve(), "--output_dir"))
        if cache_dir.resolve() != output_dir.resolve():
            locks.enter_context(hold_folder_lock(cache_dir.resolve(), "--cache_dir"))
        return _run_build(options)


def _run_build(options: BuildOptions) -> dict:
    output_dir = Path(options.output_dir)
    cache_dir = Path(options.cache_dir) if options.cache_dir else output_dir
    root = Path(options.emoset_root).resolve()
    earlier, earlier_summary = ([], {}) if options.dry_run else _earlier_records(output_dir, options.types, root)
    _refuse_template_over_llm_records(output_dir, earlier, options)

    # Reading the split and drawing the images of each type
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

    # Instructions, one type at a time (categorical ones are fixed; the others come from the writer)
    if options.llm_backend == "openai" and any(t in options.types for t in ("conversation", "reasoning")):
        writer = LlmWriter(options.llm, cache_dir / LLM_CACHE_FILE, options.show_progress, options.batch,
                           options.pending_batches, options.pending_poll_seconds)
    else:
        writer = TemplateWriter()
    records: list[Record] = []
    estimates: dict[str, dict] = {}
    duplicates: list[dict] = []  # pairs removed as duplicates of another pair about the same image
    parsed: dict[str, int] = {}  # LLM replies parsed per type, malformed ones included
    for kind in options.types:
        images = [prepared[item.image_id] for item in drawn[kind] if item.image_id in prepared]
        if kind == "categorical":
            records += categorical_records(images, captions)
        elif options.dry_run:
            report = writer.estimate(kind, images, captions)
            if report is not None:
                estimates[kind] = report
        else:
            written = writer.write(kind, images, captions)
            if isinstance(writer, LlmWriter):
                parsed[kind] = writer.replies_parsed[kind]
            written, removed = remove_duplicates(written)
            duplicates += removed
            records += written
    if options.dry_run:
        return {"dry_run": True, "llm_backend": options.llm_backend, "images": len(prepared),
                "skipped": [vars(s) for s in skipped], "estimate": estimates}

    # A type some of whose images got no reply (the server stopped the build, --max_cost was reached, requests
    # failed) keeps the records earlier builds wrote of it: a type is replaced only once whole. What was answered
    # is in the LLM cache, so the rerun that completes the type pays only for the rest.
    earlier_types = Counter(r.type for r in earlier)
    not_replaced = {kind: f"{len(reasons)} image(s) got no reply from the server (first: {reasons[0]})"
                    for kind, reasons in writer.unanswered.items() if earlier_types[kind]}
    kept_note = ", ".join(f"{earlier_types[kind]} {kind} records" for kind in not_replaced)
    if not_replaced and earlier_summary.get("emoset_root") != str(root):
        raise BuildStopped(f"{writer.stop_reason or 'not every image got a reply'}. The {kept_note} in {output_dir} "
                           "come from another emoset_root and cannot be kept beside this build's records, so the "
                           "folder was left as it was; answers received are in the LLM cache: rerun the same command "
                           "once fixed.")
    if not_replaced:
        logger.warning("not every image of %s got a reply: the %s of earlier builds in %s are kept, not replaced; "
                       "rerun to complete them (answers received come from the cache)", list(not_replaced), kept_note,
                       output_dir)
        records = [r for r in records if r.type not in not_replaced]
        duplicates = [d for d in duplicates if d["type"] not in not_replaced]
        parsed = {kind: n for kind, n in parsed.items() if kind not in not_replaced}

    # Records and outputs: this build's types, plus the records of other types that earlier builds left in the folder
    kept = [r for r in earlier if r.type not in options.types or r.type in not_replaced]
    if kept:
        logger.info("keeping %d records from earlier builds (%s), types not asked for or not replaced this time",
                    len(kept), dict(Counter(r.type for r in kept)))
    records = kept + records
    summary = _summarise(options, root, records, kept, earlier_summary, skipped, writer, not_replaced)
    rejected = [r for r in getattr(writer, "rejected", []) if r["type"] not in not_replaced]
    summary.quality = carry_over(quality_report(records, duplicates, rejected, parsed),
                                 earlier_summary.get("quality", {}),
                                 [k for k in INSTRUCTION_TYPES if k not in options.types or k in not_replaced])
    if duplicates:
        logger.info("removed %d duplicate pair(s) (same image, %s); see quality.duplicates_removed in %s",
                    len(duplicates), dict(Counter(m["type"] for m in duplicates)), SUMMARY_FILE)
    write_outputs(output_dir, records, summary, options.seed)
    plot_quality(summary.quality, output_dir / QUALITY_PLOT_FILE)
    logger.info("wrote %d records to %s (%s); %d failed, %d skipped", len(records), output_dir,
                summary.records_per_type, len(writer.failed), len(skipped))
    if writer.stop_reason is not None:
        kept_words = (f"the {kept_note} of earlier builds were kept, not replaced (a type is replaced once every image "
                      "of it is answered), and " if not_replaced else "")
        raise BuildStopped(f"{writer.stop_reason}. In {output_dir}, {kept_words}the other types hold what was "
                           "answered; rerun the same command once fixed (answers received come from the cache).")
    return summary.to_dict()


def _summarise(options: BuildOptions, root: Path, records: list[Record], kept: list[Record], earlier: dict,
               skipped: list, writer: TemplateWriter | LlmWriter, not_replaced: dict[str, str]) -> BuildSummary:
    """The summary of a build whose folder holds `records`, `kept` of them from earlier builds (whose summary is
    `earlier`): their provenance is carried over, and the failures of the types not asked for; the rest describes
    this build (the failures of `not_replaced` types too: they are what a rerun asks for again)."""
    kept_per_type = dict(Counter(r.type for r in kept))
    types = [kind for kind in INSTRUCTION_TYPES if kind in options.types or kind in kept_per_type]
    kept_types = [kind for kind in types if kind in kept_per_type]
    built_types = [kind for kind in options.types if kind not in not_replaced]

    def carried(key: str) -> list[dict]:
        return [entry for entry in earlier.get(key, []) if entry.get("type") in kept_types
                and entry.get("type") not in options.types]

    def provenance(key: str, of_this_build) -> dict[str, str]:
        return {**{kind: earlier.get(key, {}).get(kind, "unknown") for kind in kept_types},
                **{kind: of_this_build(kind) for kind in built_types}}

    settings = options.llm
    return BuildSummary(
        emoset_root=str(root),
        records_per_type={kind: sum(r.type == kind for r in records) for kind in types},
        records=len(records),
        images_per_type={kind: len({r.image for r in records if r.type == kind}) for kind in types},
        kept_from_earlier_builds=kept_per_type,
        not_replaced=not_replaced,
        failed=carried("failed") + writer.failed,
        skipped=[vars(s) for s in skipped],
        not_run=carried("not_run") + writer.not_run,
        usage=writer.usage(),
        generator=provenance("generator", lambda kind: "none" if kind == "categorical" else writer.generator(kind)),
        prompt_hashes=provenance("prompt_hashes", lambda kind: prompt_hash(kind) if kind == "categorical"
                                 else writer.prompt_hash(kind)),
        captioner=options.captioner,
        args={
            "emoset_root": str(root), "output_dir": str(Path(options.output_dir)), "types": list(options.types),
            "per_class": {t: options.per_class[t] for t in options.types}, "llm_backend": options.llm_backend,
            "captioner": options.captioner, "split": options.split, "seed": options.seed,
            **({"llm_model": settings.model, "base_url": redact_url(settings.base_url), "concurrency": settings.concurrency,
                "requests_per_minute": settings.requests_per_minute, "tokens_per_minute": settings.tokens_per_minute,
                "max_retries": settings.max_retries, "timeout_s": settings.timeout_s, "temperature": settings.temperature,
                "top_p": settings.top_p, "stream": settings.stream, "price_per_mtok": list(settings.prices()),
                "max_cost": settings.max_cost, "max_retry_wait_s": settings.max_retry_wait_s,
                "fail_fast_after": settings.fail_fast_after, "response_format": settings.response_format,
                "pace_from_headers": settings.pace_from_headers} if settings is not None and options.llm_backend == "openai" else {}),
            **({"llm_mode": "batch", "batch_poll_seconds": options.batch.poll_seconds,
                "batch_completion_window": options.batch.completion_window,
                "batch_price_per_mtok": list(options.batch.prices(settings))}
               if options.batch is not None and settings is not None and options.llm_backend == "openai" else {}),
        },
    )
