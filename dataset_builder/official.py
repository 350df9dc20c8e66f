"""Importing the official EmoVIT (LLaVA-style) instruction JSON into records and into a build folder."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from modeling_emovit.configuration_emovit import EMOSET_EMOTIONS
from modeling_emovit.processing_emovit import parse_emotion_answer

from .build_folder import SUMMARY_FILE, BuildSummary, read_summary, read_written_records, write_outputs
from .emoset import Skip, resolve_inside_root
from .records import INSTRUCTION_TYPES, Record, training_record_problem


def _emotion_from_entry(entry: dict, labels) -> str | None:
    stem = Path(str(entry.get("image", ""))).stem
    for part in (stem.split("_")[0], Path(str(entry.get("image", ""))).parent.name):
        if part in labels:
            return part
    answer = next((t.get("value", "") for t in entry.get("conversations", []) if t.get("from") == "gpt"), "")
    return parse_emotion_answer(answer, labels)


def import_official_json(json_path: str | os.PathLike, kind: str = "auto", labels=EMOSET_EMOTIONS,
                         root: str | os.PathLike | None = None) -> tuple[list[dict], list[Skip]]:
    """Records (as JSON objects, like `load_records` gives) from an official EmoVIT (LLaVA-style) instruction file.

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
        record = Record(
            id=f"official-{entry_kind}/{entry.get('id', position)}/{position}",
            image=str(entry.get("image", "")),
            emotion=emotion,
            type=entry_kind,
            conversations=[{"from": t["from"], "value": str(t.get("value", "")).replace("<image>", "").strip()}
                           for t in turns],
            generator="official-emovit",
            prompt_hash="official",
        ).to_dict()
        problem = training_record_problem(record, labels)
        if problem is not None:
            skipped.append(Skip(where, problem))
            continue
        records.append(record)
    return records, skipped


def _refuse_replacing_records(output_dir: Path, json_path: Path) -> None:
    earlier = read_written_records(output_dir)
    if not earlier:
        return
    source = read_summary(output_dir).get("args", {}).get("json") if (output_dir / SUMMARY_FILE).is_file() else None
    if source is not None and Path(source).resolve() == json_path.resolve():
        return  # an earlier import of this file: importing it again gives the same records
    counts = ", ".join(f"{n} {kind} records" for kind, n in Counter(r["type"] for r in earlier).items())
    raise ValueError(f"--output_dir {output_dir} already holds {counts} (from {source or 'a build'}); an import writes "
                     "the folder's records whole and would replace them. Import into another --output_dir.")


def import_official(json_path: str | os.PathLike, kind: str, emoset_root: str | os.PathLike,
                    output_dir: str | os.PathLike, seed: int) -> BuildSummary:
    """Writes the records of an official instruction file (see `import_official_json`) as a build folder whose
    image paths are relative to `emoset_root`; returns its summary. The folder's records are written whole, so a
    folder holding records of anything but an earlier import of the same file is refused (ValueError)."""
    _refuse_replacing_records(Path(output_dir), Path(json_path))
    found, skipped = import_official_json(json_path, kind, root=emoset_root)
    records = [Record.from_dict(record) for record in found]
    root = Path(emoset_root).resolve()
    for record in records:
        # The official files name images by file name; EmoSet keeps them under image/<emotion>/.
        name = Path(record.image).name
        if not (root / record.image).is_file() and (root / "image" / record.emotion / name).is_file():
            record.image = f"image/{record.emotion}/{name}"
    per_type = {kind_: sum(r.type == kind_ for r in records) for kind_ in INSTRUCTION_TYPES}
    present = [kind_ for kind_ in INSTRUCTION_TYPES if per_type[kind_]]
    summary = BuildSummary(
        emoset_root=str(root),
        records_per_type=per_type,
        records=len(records),
        images_per_type={kind_: len({r.image for r in records if r.type == kind_}) for kind_ in INSTRUCTION_TYPES},
        skipped=[vars(s) for s in skipped],
        generator={kind_: "official-emovit" for kind_ in present},
        prompt_hashes={kind_: "official" for kind_ in present},
        captioner="official",
        args={"json": str(json_path), "type": kind, "emoset_root": str(root)},
    )
    write_outputs(output_dir, records, summary, seed)
    return summary
