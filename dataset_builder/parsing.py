"""Reply parsing stage: Question/Answer pairs out of an LLM reply, and the checks a pair must pass.

Replies drift from the asked format: numbered labels ("Question 2:", "3. Question:"), "Complex
question:", markdown emphasis (`**Question:**`), "Q:"/"A:", blank lines, and chatter before or after
the pairs. The parser accepts all of these; anything it cannot read as pairs makes the reply invalid
with a reason, which the caller records. So does a tokenizer control symbol such as `<image>` or `</s>`
anywhere in the reply: as training text it would be read as a token, not as words.

Replies asked for as structured output (`pairs_schema`) are JSON instead; they are read strictly (a
reply that is not JSON, or not shaped like the schema, is invalid with a reason) and then pass the same
checks as text replies.
"""

from __future__ import annotations

import json
import re

EXPECTED_PAIRS = {"conversation": 3, "reasoning": 1}
QUESTION_CHARS = (8, 400)
ANSWER_CHARS = {"conversation": (2, 2000), "reasoning": (80, 3000)}

_INLINE_ANSWER = re.compile(r"\s+answer\s*:\s*", re.IGNORECASE)
_LINE_PREFIX = re.compile(r"^\s*(?:#+\s*|[-*•]\s+|>\s*)?(?:\(?\d+[.)]\s*)?")
_LABEL = re.compile(
    r"^(?P<label>(?:complex\s+|follow[- ]up\s+)?(?:question|q)|answer|a)\s*(?:\d+|\(\d+\))?\s*[:.\-–—)]\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
# Tokens that tokenizers treat as control symbols rather than text: `<image>` makes the processor expect image
# features that are not there, `</s>` ends a sequence early. A reply that contains one is refused.
_SPECIAL_TOKEN = re.compile(
    r"<image>|</?s>|<unk>|<pad>|<mask>|<\|[a-z_]+\|>|\[(?:PAD|CLS|SEP|MASK|UNK)\]",
    re.IGNORECASE,
)
# Talking about the input instead of the image gives away that the writer never saw it.
_LEAK = re.compile(
    r"\b(?:the|this|given|provided)\s+(?:caption|captions|attributes?|description(?:\s+provided)?|annotations?)\b",
    re.IGNORECASE,
)


def _strip_line(line: str) -> str:
    line = _LINE_PREFIX.sub("", line)
    line = line.replace("**", "").replace("__", "")
    return line.strip().strip("*_`").strip()


def parse_qa_pairs(text: str) -> list[tuple[str, str]]:
    """All (question, answer) pairs in `text`, in order. Text outside pairs is ignored."""
    pairs: list[tuple[str, str]] = []
    question: list[str] | None = None
    answer: list[str] | None = None

    def flush():
        if question is not None and answer is not None:
            pairs.append((" ".join(question).strip(), " ".join(answer).strip()))

    for raw in (text or "").splitlines():
        line = _strip_line(raw)
        if not line:
            continue
        match = _LABEL.match(line)
        if match:
            label = match.group("label").lower()
            rest = match.group("rest").strip().strip("*_").strip()
            if label.endswith("q") or "question" in label:
                flush()
                # "Question: ... Answer: ..." on one line.
                inline = _INLINE_ANSWER.split(rest, maxsplit=1)
                question = [inline[0]] if inline[0] else []
                answer = [inline[1]] if len(inline) == 2 else None
            else:
                if question is None:
                    continue  # an answer with no question before it is stray text
                answer = [rest] if rest else []
            continue
        if answer is not None:
            answer.append(line)
        elif question is not None:
            question.append(line)
    flush()
    return [(q, a) for q, a in pairs]


def validate_pairs(pairs: list[tuple[str, str]], kind: str) -> str | None:
    """None when the pairs are usable for `kind`, else the reason they are not."""
    expected = EXPECTED_PAIRS[kind]
    if len(pairs) != expected:
        return f"expected {expected} question/answer pair(s), found {len(pairs)}"
    q_min, q_max = QUESTION_CHARS
    a_min, a_max = ANSWER_CHARS[kind]
    for number, (question, answer) in enumerate(pairs, start=1):
        if not question or not answer:
            return f"pair {number} has an empty {'question' if not question else 'answer'}"
        if not q_min <= len(question) <= q_max:
            return f"pair {number}: question length {len(question)} outside [{q_min}, {q_max}]"
        if not a_min <= len(answer) <= a_max:
            return f"pair {number}: answer length {len(answer)} outside [{a_min}, {a_max}]"
        leak = _LEAK.search(question) or _LEAK.search(answer)
        if leak:
            return f"pair {number} talks about {leak.group(0)!r} instead of the image"
    return None


def pairs_schema(kind: str) -> dict:
    """The JSON schema of a structured reply for `kind`: `{"pairs": [{"question": ..., "answer": ...}, ...]}` with
    exactly EXPECTED_PAIRS[kind] pairs, written to what strict structured outputs accept (every property required,
    no additional properties)."""
    count = EXPECTED_PAIRS[kind]
    pair = {"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
            "required": ["question", "answer"], "additionalProperties": False}
    return {"type": "object", "properties": {"pairs": {"type": "array", "items": pair, "minItems": count,
                                                        "maxItems": count}},
            "required": ["pairs"], "additionalProperties": False}


def parse_json_pairs(text: str) -> tuple[list[tuple[str, str]], str | None]:
    """The (question, answer) pairs of a reply shaped like `pairs_schema`, or ([], reason) when it is not JSON or
    not of that shape. The number of pairs is left to `validate_pairs`."""
    try:
        data = json.loads(text or "")
    except ValueError as e:
        return [], f"reply is not valid JSON ({e})"
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list):
        return [], "reply does not follow the schema: expected an object with a 'pairs' list"
    pairs = []
    for number, item in enumerate(data["pairs"], start=1):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("question", "answer")):
            return [], f"reply does not follow the schema: pair {number} is not an object with string 'question' and 'answer'"
        pairs.append((item["question"].strip(), item["answer"].strip()))
    return pairs, None


def parse_reply(text: str, kind: str, response_format: str = "text") -> tuple[list[tuple[str, str]], str | None]:
    """(pairs, None) for a usable reply, ([], reason) otherwise. `response_format` is how the reply was asked
    for: "text" (labelled lines) or "json_schema" (JSON under `pairs_schema`)."""
    if response_format == "json_schema":
        pairs, reason = parse_json_pairs(text)
        if reason is not None:
            return [], reason
        # Looked for in the decoded strings: JSON may spell `<` as `\u003c`.
        special = _SPECIAL_TOKEN.search("\n".join(part for pair in pairs for part in pair))
    else:
        special = _SPECIAL_TOKEN.search(text or "")
        pairs = [] if special else parse_qa_pairs(text)
    if special:
        return [], f"reply contains the special token {special.group(0)!r}, which would be read as a control symbol"
    reason = validate_pairs(pairs, kind)
    return (pairs, None) if reason is None else ([], reason)
