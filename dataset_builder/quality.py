"""Quality report of a build: what the records look like and what was taken out on the way.

Two parts:
- `remove_duplicates(records)`: the pairs a writer wrote about one image that repeat each other. Two pairs of the same
  image and type are duplicates when their normalised texts (question and answer together; lower case, punctuation
  turned into spaces, whitespace collapsed) are equal ("exact"), or when the Jaccard similarity of their sets of
  word 2-grams is at least `NEAR_DUPLICATE_JACCARD` ("near"). The first pair is kept, the later one removed and
  reported. Pairs about different images are never removed: the same words about another picture are another
  example; they are counted (`cross_image_duplicate_pairs`) so a writer that repeats itself shows up.
- `quality_report(...)`: records per type and emotion, answer lengths in words (min, median, p90 by nearest rank,
  max, mean), the distinct-n diversity of questions (distinct n-grams / all n-grams, n = 1, 2, 3, over the
  normalised words of every question of the type), the duplicates removed, and per LLM-written type the replies
  received, those refused as malformed (`malformed_rate`) and, among them, those the leak filter refused for
  talking about the caption or attributes instead of the image (`leak_filter_hits`).

`plot_quality(report, path)` draws it as a PNG for the dataset card.
"""

from __future__ import annotations

import math
import os
import re
import statistics
from collections import Counter

from .records import INSTRUCTION_TYPES, Record


NEAR_DUPLICATE_JACCARD = 0.7
SHINGLE_WORDS = 2
DISTINCT_N = (1, 2, 3)
EXAMPLES_PER_TYPE = 5
# The leak filter's refusals end with these words (parsing.validate_pairs); the other malformed replies do not.
LEAK_REASON_MARK = "instead of the image"

_NOT_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """Lower case, every run of punctuation or whitespace one space."""
    return _NOT_WORD.sub(" ", text.lower()).strip()


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _pair_text(record: Record) -> str:
    return normalise(record.conversations[0]["value"] + " " + record.conversations[1]["value"])


def remove_duplicates(records: list[Record]) -> tuple[list[Record], list[dict]]:
    """(the records without the duplicate pairs, one `{"id", "type", "image", "duplicate_of", "match", "jaccard"}`
    per removed record), both in the order of `records`. See the module docstring for what a duplicate is."""
    kept, removed = [], []
    seen: dict[tuple[str, str], list[tuple[Record, str, set]]] = {}
    for record in records:
        text = _pair_text(record)
        shingles = set(ngrams(text.split(), SHINGLE_WORDS))
        earlier = seen.setdefault((record.type, record.image), [])
        match = None
        for other, other_text, other_shingles in earlier:
            similarity = 1.0 if text == other_text else jaccard(shingles, other_shingles)
            if text == other_text or similarity >= NEAR_DUPLICATE_JACCARD:
                match = {"id": record.id, "type": record.type, "image": record.image, "duplicate_of": other.id,
                         "match": "exact" if text == other_text else "near", "jaccard": round(similarity, 4)}
                break
        if match is None:
            earlier.append((record, text, shingles))
            kept.append(record)
        else:
            removed.append(match)
    return kept, removed


def distinct_n(texts: list[str], n: int) -> float | None:
    """Distinct n-grams over all n-grams of the normalised texts (n-grams do not cross texts); None without any."""
    grams = [gram for text in texts for gram in ngrams(normalise(text).split(), n)]
    return round(len(set(grams)) / len(grams), 4) if grams else None


def word_count_stats(counts: list[int]) -> dict:
    """min, median, p90 (nearest rank: the ceil(0.9 n)-th smallest), max and mean of `counts`."""
    if not counts:
        return {"min": 0, "median": 0, "p90": 0, "max": 0, "mean": 0.0}
    ordered = sorted(counts)
    return {"min": ordered[0], "median": statistics.median(ordered), "p90": ordered[math.ceil(0.9 * len(ordered)) - 1],
            "max": ordered[-1], "mean": round(sum(ordered) / len(ordered), 2)}


def _types_of(records: list[Record]) -> list[str]:
    present = {r.type for r in records}
    return [kind for kind in INSTRUCTION_TYPES if kind in present]


def quality_report(records: list[Record], removed: list[dict], rejected: list[dict],
                   parsed: dict[str, int]) -> dict:
    """The report of a folder holding `records` (after `remove_duplicates`, which removed `removed`).

    `rejected` holds one `{"type", "reason"}` per malformed reply the LLM writer refused (every sample, also those
    whose retry then gave a usable reply); `parsed` the replies per type the writer parsed, those included. Types
    in `parsed` get a `replies` entry; the others (categorical, template-written, kept from earlier builds) do not.
    """
    types = _types_of(records)
    per_type_emotion = {kind: dict(sorted(Counter(r.emotion for r in records if r.type == kind).items()))
                        for kind in types}
    questions = {kind: [r.conversations[0]["value"] for r in records if r.type == kind] for kind in types}
    answer_words = {kind: word_count_stats([len(r.conversations[1]["value"].split()) for r in records if r.type == kind])
                    for kind in types}

    duplicates = {}
    for kind in dict.fromkeys([m["type"] for m in removed] + [k for k in types if k != "categorical"]):
        of_kind = [m for m in removed if m["type"] == kind]
        duplicates[kind] = {"exact": sum(m["match"] == "exact" for m in of_kind),
                            "near": sum(m["match"] == "near" for m in of_kind),
                            "examples": of_kind[:EXAMPLES_PER_TYPE]}
    cross_image = {}
    for kind in types:
        if kind == "categorical":  # one fixed pair for every image, by design
            continue
        counts = Counter(_pair_text(r) for r in records if r.type == kind)
        cross_image[kind] = sum(n - 1 for n in counts.values())

    replies = {}
    for kind, total in parsed.items():
        refused = [r for r in rejected if r["type"] == kind]
        replies[kind] = {"replies": total, "malformed": len(refused),
                         "malformed_rate": round(len(refused) / total, 4) if total else 0.0,
                         "leak_filter_hits": sum(LEAK_REASON_MARK in r["reason"] for r in refused)}
    return {
        "records_per_type_and_emotion": per_type_emotion,
        "answer_words": answer_words,
        "question_distinct_n": {kind: {f"distinct_{n}": distinct_n(questions[kind], n) for n in DISTINCT_N}
                                for kind in types},
        "duplicates_removed": duplicates,
        "cross_image_duplicate_pairs": cross_image,
        "replies": replies,
        "dedup_rule": (f"pairs of one image and type: equal after normalising case, punctuation and whitespace "
                       f"(exact), or Jaccard >= {NEAR_DUPLICATE_JACCARD} of their word {SHINGLE_WORDS}-gram sets "
                       "(near); the first is kept"),
    }


def plot_quality(report: dict, path: str | os.PathLike) -> None:
    """Writes the report as a PNG of four panels: records per emotion and type, answer words per type (median bar,
    min-max line, p90 mark), question distinct-1/2/3 per type, and what was removed or refused per type."""
    from matplotlib.figure import Figure

    from emovit_utils.files import atomic_write

    types = list(report["records_per_type_and_emotion"])
    figure = Figure(figsize=(12, 8), layout="constrained")
    (counts, lengths), (diversity, removed) = figure.subplots(2, 2)
    width = 0.8 / max(len(types), 1)

    emotions = sorted({e for per in report["records_per_type_and_emotion"].values() for e in per})
    for offset, kind in enumerate(types):
        per = report["records_per_type_and_emotion"][kind]
        counts.bar([i + offset * width for i in range(len(emotions))], [per.get(e, 0) for e in emotions], width,
                   label=kind)
    counts.set_xticks([i + width * (len(types) - 1) / 2 for i in range(len(emotions))], emotions, rotation=30)
    counts.set_title("records per emotion")
    if types:  # a build whose every record failed has nothing to name
        counts.legend()

    stats = [report["answer_words"][kind] for kind in types]
    lengths.bar(types, [s["median"] for s in stats], color="tab:blue", label="median")
    lengths.vlines(types, [s["min"] for s in stats], [s["max"] for s in stats], color="black", label="min-max")
    lengths.scatter(types, [s["p90"] for s in stats], color="tab:red", zorder=3, label="p90")
    lengths.set_title("answer length (words)")
    lengths.legend()

    for offset, n in enumerate(DISTINCT_N):
        values = [report["question_distinct_n"][kind][f"distinct_{n}"] or 0.0 for kind in types]
        diversity.bar([i + offset * 0.25 for i in range(len(types))], values, 0.25, label=f"distinct-{n}")
    diversity.set_xticks([i + 0.25 for i in range(len(types))], types)
    diversity.set_ylim(0, 1)
    diversity.set_title("question diversity (distinct n-grams / n-grams)")
    diversity.legend()

    written = list(dict.fromkeys(list(report["duplicates_removed"]) + list(report["replies"])))
    series = [("exact duplicates", [report["duplicates_removed"].get(k, {}).get("exact", 0) for k in written]),
              ("near duplicates", [report["duplicates_removed"].get(k, {}).get("near", 0) for k in written]),
              ("malformed replies", [report["replies"].get(k, {}).get("malformed", 0) for k in written]),
              ("leak filter hits", [report["replies"].get(k, {}).get("leak_filter_hits", 0) for k in written])]
    for offset, (name, values) in enumerate(series):
        removed.bar([i + offset * 0.2 for i in range(len(written))], values, 0.2, label=name)
    removed.set_xticks([i + 0.3 for i in range(len(written))], written)
    removed.set_ylim(0, 1.15 * max([1] + [value for _, values in series for value in values]))
    removed.set_title("removed or refused (counts)")
    removed.legend()

    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))


def carry_over(report: dict, earlier: dict, kinds: list[str]) -> dict:
    """`report` with the duplicate and reply counts of `kinds` taken from an earlier build's report: their records
    were kept from that build, so what was removed or refused on the way is that build's."""
    for section in ("duplicates_removed", "replies"):
        for kind in kinds:
            if kind in earlier.get(section, {}):
                report[section][kind] = earlier[section][kind]
    return report
