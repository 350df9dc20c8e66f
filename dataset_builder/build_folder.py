"""A build folder: the files `build` and `import_official` write (records, their LLaVA-format copy, the summary),
the summary's schema, and reading the records back for training.

Every file is written to a temporary name and moved into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from emovit_utils.files import atomic_write_text

from .emoset import resolve_inside_root
from .records import Record, training_record_problem


RECORDS_FILE = "instructions.jsonl"
LLAVA_FILE = "instructions_llava.json"
SUMMARY_FILE = "summary.json"


@dataclass
class LlmUsage:
    """What the LLM server was asked and what it cost; all zero when no LLM wrote the records."""

    stopped_by_max_cost: bool = False
    # Why the build stopped early because the server kept refusing requests, or None.
    stopped_by_server_error: str | None = None
    api_calls: int = 0
    retries: int = 0
    capped_retry_waits: int = 0
    cache_hits: int = 0
    cache_lines_ignored: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    # Everything the LLM cache records as spent, this run and earlier ones, plus `cost_usd_reserved`: what --max_cost
    # limits.
    cost_usd_total: float = 0.0
    # The estimated cost of batches submitted and not yet collected (they may still be paid for).
    cost_usd_reserved: float = 0.0
    # Requests held back because the server's x-ratelimit-* headers said its quota was spent.
    held_by_rate_limit_headers: int = 0
    # The --response_format asked for, the one used in the end ("text" after the server refused structured
    # outputs), and the server's refusal.
    response_format: str | None = None
    response_format_used: str | None = None
    response_format_fallback_reason: str | None = None
    # Batch mode only: uploads, batches created and resumed, polls, downloads and lines of this run; else None.
    batch_api: dict | None = None


@dataclass
class BuildSummary:
    """summary.json of a build folder. `to_dict` gives the file's JSON object: these fields in this order, with
    the `usage` fields in place of `usage`."""

    emoset_root: str
    records_per_type: dict[str, int] = field(default_factory=dict)
    records: int = 0
    images_per_type: dict[str, int] = field(default_factory=dict)
    # Records of these types were not rebuilt this time; they come from earlier builds into this folder.
    kept_from_earlier_builds: dict[str, int] = field(default_factory=dict)
    # Types this build was asked for but kept from earlier builds, with why: not every image of them was answered.
    not_replaced: dict[str, str] = field(default_factory=dict)
    failed: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    # Images never asked about because --max_cost was reached or the server kept refusing; a rerun picks them up.
    not_run: list[dict] = field(default_factory=list)
    usage: LlmUsage = field(default_factory=LlmUsage)
    generator: dict[str, str] = field(default_factory=dict)
    prompt_hashes: dict[str, str] = field(default_factory=dict)
    captioner: str = "none"
    args: dict = field(default_factory=dict)
    # The quality report (dataset_builder.quality.quality_report); empty for folders made without one.
    quality: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        summary = {}
        for f in fields(self):
            value = getattr(self, f.name)
            summary.update(asdict(value) if f.name == "usage" else {f.name: value})
        return summary


def to_llava(records: list[Record], seed: int) -> list[dict]:
    """The official pipeline's format: `{"id", "image", "conversations"}` per Q/A pair, shuffled."""
    entries = [{"id": r.id, "image": r.image, "conversations": r.conversations} for r in records]
    random.Random(seed).shuffle(entries)
    return entries


def write_outputs(output_dir: str | os.PathLike, records: list[Record], summary: BuildSummary, seed: int) -> None:
    """Writes instructions.jsonl, instructions_llava.json and summary.json into `output_dir`."""
    ids = [r.id for r in records]
    if len(ids) != len(set(ids)):
        raise AssertionError("record ids are not unique")
    output_dir = Path(output_dir)
    lines = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(output_dir / RECORDS_FILE, lines)
    atomic_write_text(output_dir / LLAVA_FILE, json.dumps(to_llava(records, seed), ensure_ascii=False, indent=1))
    atomic_write_text(output_dir / SUMMARY_FILE, json.dumps(summary.to_dict(), ensure_ascii=False, indent=2))


def read_summary(output_dir: str | os.PathLike) -> dict:
    """The summary of a build folder; ValueError naming the file (and the field) when it is damaged."""
    path = Path(output_dir) / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `python -m dataset_builder build --output_dir {output_dir}` first.")
    advice = "The builder never writes one like it: restore the file or rebuild the folder."
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}). {advice}") from e
    if not isinstance(summary, dict):
        raise ValueError(f"{path} holds a {type(summary).__name__}, not a JSON object. {advice}")
    if not isinstance(summary.get("emoset_root"), str):
        raise ValueError(f"{path}: field 'emoset_root' is {summary.get('emoset_root')!r}, not a folder path. {advice}")
    counts = summary.get("records_per_type")
    if not (isinstance(counts, dict) and all(isinstance(n, int) for n in counts.values())):
        raise ValueError(f"{path}: field 'records_per_type' is {counts!r}, not a count per type. {advice}")
    return summary


def _checked_record_lines(path: Path):
    """(line number, record) for each record of a records file; a line that is not a trainable record (see
    `training_record_problem`) raises ValueError naming the file and line: the builder never writes one, so the
    folder was edited by hand or damaged."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{number} is not valid JSON ({e}); rebuild the folder.") from e
            problem = training_record_problem(record)
            if problem is not None:
                raise ValueError(f"{path}:{number}: {problem}. Fix or remove the line, or rebuild the folder.")
            yield number, record


def read_written_records(output_dir: str | os.PathLike) -> list[dict]:
    """The checked records of a build folder exactly as written (image paths relative to the EmoSet root), or []
    when it has none yet."""
    path = Path(output_dir) / RECORDS_FILE
    return [record for _, record in _checked_record_lines(path)] if path.is_file() else []


def load_records(output_dir: str | os.PathLike, types: tuple[str, ...] | None = None) -> list[dict]:
    """The checked records of a build output folder with `image` turned into an absolute path inside the EmoSet root
    (a path that leaves the root raises, naming the file and line). `types` keeps only those instruction types (all
    when None)."""
    output_dir = Path(output_dir)
    root = Path(read_summary(output_dir)["emoset_root"])
    path = output_dir / RECORDS_FILE
    records = []
    for number, record in _checked_record_lines(path):
        try:
            record["image"] = str(resolve_inside_root(root, record.get("image", "")))
        except ValueError as e:
            raise ValueError(f"{path}:{number}: field 'image': {e}. Fix or remove the line, or rebuild the "
                             "folder.") from e
        if types is None or record["type"] in types:
            records.append(record)
    return records
