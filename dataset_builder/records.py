"""Records stage: one dict per question/answer sample, the files they are written to, and importing the
official EmoVIT JSON into the same shape.

Record fields: `id` (unique), `image` (path relative to the EmoSet root, whose absolute path is in
summary.json as `emoset_root`), `emotion`, `type` (categorical | conversation | reasoning),
`conversations` (`[{"from": "human", "value": q}, {"from": "gpt", "value": a}]`), `attributes`,
`attributes_computed`, `caption`, `generator`, `prompt_hash`.

Every file is written to a temporary name and moved into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from modeling_emovit.configuration_emovit import EMOSET_EMOTIONS
from modeling_emovit.io_utils import atomic_write_text
from modeling_emovit.processing_emovit import format_answer, format_categorical_instruction, parse_emotion_answer

from .emoset import Skip, resolve_inside_root

INSTRUCTION_TYPES = ("categorical", "conversation", "reasoning")
RECORDS_FILE = "instructions.jsonl"
LLAVA_FILE = "instructions_llava.json"
SUMMARY_FILE = "summary.json"


def make_record(kind: str, image_id: str, image: str, emotion: str, pair_index: int, question: str, answer: str,
                attributes: dict, attributes_computed: list[str], caption: str, generator: str, prompt_hash: str) -> dict:
    return {
        "id": f"{kind}/{image_id}/{pair_index}",
        "image": image,
        "emotion": emotion,
        "type": kind,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
        "attributes": attributes,
        "attributes_computed": attributes_computed,
        "caption": caption,
        "generator": generator,
        "prompt_hash": prompt_hash,
    }


def categorical_pair(emotion: str, labels=EMOSET_EMOTIONS) -> tuple[str, str]:
    """The categorical instruction and answer, both defined once in modeling_emovit's processor."""
    return format_categorical_instruction(labels), format_answer(emotion)


def to_llava(records: list[dict], seed: int) -> list[dict]:
    """The official pipeline's format: `{"id", "image", "conversations"}` per Q/A pair, shuffled."""
    entries = [{"id": r["id"], "image": r["image"], "conversations": r["conversations"]} for r in records]
    random.Random(seed).shuffle(entries)
    return entries


def write_outputs(output_dir: str | os.PathLike, records: list[dict], summary: dict, seed: int) -> None:
    ids = [r["id"] for r in records]
    if len(ids) != len(set(ids)):
        raise AssertionError("record ids are not unique")
    output_dir = Path(output_dir)
    atomic_write_text(output_dir / RECORDS_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_text(output_dir / LLAVA_FILE, json.dumps(to_llava(records, seed), ensure_ascii=False, indent=1))
    atomic_write_text(output_dir / SUMMARY_FILE, json.dumps(summary, ensure_ascii=False, indent=2))


def read_summary(output_dir: str | os.PathLike) -> dict:
    path = Path(output_dir) / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `python -m dataset_builder build --output_dir {output_dir}` first.")
    return json.loads(path.read_text())


def training_record_problem(record, labels=EMOSET_EMOTIONS) -> str | None:
    """Why `record` cannot be trained on, or None: it needs a known `type`, a conversation of at least one
    human question followed by a gpt answer, and, when categorical, an answer `Predict emotion: <label>` that names
    the record's own `emotion` (an answer naming another emotion, or none, would teach the wrong label)."""
    if not isinstance(record, dict):
        return f"the record is a {type(record).__name__}, not an object"
    if record.get("type") not in INSTRUCTION_TYPES:
        return f"field 'type' is {record.get('type')!r}; expected one of {list(INSTRUCTION_TYPES)}"
    turns = record.get("conversations")
    if (not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(t, dict) for t in turns)
            or turns[0].get("from") != "human" or turns[1].get("from") != "gpt"
            or not all(isinstance(t.get("value"), str) for t in turns[:2])):
        shown = turns if not isinstance(turns, list) else turns[:2]
        return (f"field 'conversations' is {str(shown)[:120]!r}; expected a human question followed by a gpt answer "
                "([{\"from\": \"human\", \"value\": ...}, {\"from\": \"gpt\", \"value\": ...}])")
    if record["type"] == "categorical":
        emotion = record.get("emotion")
        answer = turns[1]["value"]
        named = parse_emotion_answer(answer, tuple(labels) + (emotion,))
        if named != emotion:
            return (f"the categorical answer {answer[:80]!r} names {named!r}, but field 'emotion' is {emotion!r}; "
                    f"the answer must be {format_answer(str(emotion))!r}")
    return None


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


def _emotion_from_entry(entry: dict, labels) -> str | None:
    stem = Path(str(entry.get("image", ""))).stem
    for part in (stem.split("_")[0], Path(str(entry.get("image", ""))).parent.name):
        if part in labels:
            return part
    answer = next((t.get("value", "") for t in entry.get("conversations", []) if t.get("from") == "gpt"), "")
    return parse_emotion_answer(answer, labels)


def import_official_json(json_path: str | os.PathLike, kind: str = "auto", labels=EMOSET_EMOTIONS,
                         root: str | os.PathLike | None = None) -> tuple[list[dict], list[Skip]]:
    """Records from an official EmoVIT (LLaVA-style) instruction file.

    `kind` is the instruction type of the file's entries; "auto" marks an entry categorical when its
    answer is `Predict emotion: <label>` and refuses the others (the official files do not say which of
    conversation/reasoning they hold, so pass it). The emotion comes from the image file name
    (`<emotion>_NNNNN.jpg`) or folder, else from a categorical answer; entries without one are skipped.

    Also skipped, with the reason: an image path that leaves `root` (the folder the paths start from; without it,
    any absolute path or one that climbs out with `..`), and a categorical entry whose answer names no emotion or
    another one than the image's.
    """
    json_path = Path(json_path)
    try:
        entries = json.loads(json_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{json_path}: cannot read the official instruction JSON ({e}).") from e
    if not isinstance(entries, list):
        raise ValueError(f"{json_path}: expected a JSON list of {{id, image, conversations}}, got {type(entries).__name__}.")
    if kind not in ("auto",) + INSTRUCTION_TYPES:
        raise ValueError(f"kind is {kind!r}; expected auto, categorical, conversation or reasoning")
    records, skipped = [], []
    for position, entry in enumerate(entries):
        where = f"{json_path.name}[{position}]"
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not turns or not all(isinstance(t, dict) and t.get("from") in ("human", "gpt") for t in turns):
            skipped.append(Skip(where, "no conversations list of {from: human|gpt, value} turns"))
            continue
        try:
            resolve_inside_root(root, str(entry.get("image", "")))
        except ValueError as e:
            skipped.append(Skip(where, f"image: {e}"))
            continue
        emotion = _emotion_from_entry(entry, labels)
        if emotion is None:
            skipped.append(Skip(where, f"cannot tell the emotion of image {entry.get('image')!r}"))
            continue
        entry_kind = kind
        if kind == "auto":
            answer = next((t.get("value", "") for t in turns if t.get("from") == "gpt"), "")
            if parse_emotion_answer(answer, labels) is None:
                raise ValueError(
                    f"{where}: the answer {answer[:60]!r} is not categorical; pass --type conversation or --type "
                    "reasoning for this file."
                )
            entry_kind = "categorical"
        record = {
            "id": f"official-{entry_kind}/{entry.get('id', position)}/{position}",
            "image": str(entry.get("image", "")),
            "emotion": emotion,
            "type": entry_kind,
            "conversations": [{"from": t["from"], "value": str(t.get("value", "")).replace("<image>", "").strip()} for t in turns],
            "attributes": {},
            "attributes_computed": [],
            "caption": "",
            "generator": "official-emovit",
            "prompt_hash": "official",
        }
        problem = training_record_problem(record, labels)
        if problem is not None:
            skipped.append(Skip(where, problem))
            continue
        records.append(record)
    return records, skipped
