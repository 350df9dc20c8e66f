"""Record schema: one question/answer sample of instruction data, the checks a record must pass to be trained on,
and the one definition of the instruction types with the parser for comma lists of them.

Record fields (one JSON object per line of instructions.jsonl): `id` (unique, `<type>/<image id>/<pair index>`),
`image` (path relative to the EmoSet root, whose absolute path is in summary.json as `emoset_root`), `emotion`,
`type` (categorical | conversation | reasoning), `conversations`
(`[{"from": "human", "value": q}, {"from": "gpt", "value": a}]`), `attributes`, `attributes_computed`, `caption`,
`generator`, `prompt_hash`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from modeling_emovit.configuration_emovit import EMOSET_EMOTIONS
from modeling_emovit.processing_emovit import format_answer, format_categorical_instruction, parse_emotion_answer

INSTRUCTION_TYPES = ("categorical", "conversation", "reasoning")


@dataclass
class Record:
    """One line of instructions.jsonl; `to_dict` gives the line's JSON object, fields in file order."""

    id: str
    image: str
    emotion: str
    type: str
    conversations: list[dict]
    attributes: dict = field(default_factory=dict)
    attributes_computed: list[str] = field(default_factory=list)
    caption: str = ""
    generator: str = ""
    prompt_hash: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> Record:
        """The record of a JSON object; raises ValueError naming the fields a record does not have or lacks."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"record {data.get('id')!r} has fields {unknown} that a record does not have; "
                             f"expected {names}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ValueError(f"record {data.get('id')!r} lacks a required field ({e})") from e

    def to_dict(self) -> dict:
        return asdict(self)


def question_and_answer(question: str, answer: str) -> list[dict]:
    """The `conversations` field of a record holding one question and its answer."""
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def categorical_pair(emotion: str, labels=EMOSET_EMOTIONS) -> tuple[str, str]:
    """The categorical instruction and answer, both defined once in modeling_emovit's processor."""
    return format_categorical_instruction(labels), format_answer(emotion)


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


def parse_types(text: str, flag: str = "--types", distinct: bool = False) -> tuple[str, ...]:
    """The instruction types of a comma list such as "categorical,reasoning", in the order given (spaces and empty
    parts are ignored). Raises ValueError naming `flag` and the value when the list is empty, names something that
    is not an instruction type, or (with `distinct`) names a type twice."""
    types = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [t for t in types if t not in INSTRUCTION_TYPES]
    if unknown or not types:
        raise ValueError(f"{flag} {text!r} names {unknown or 'no type'}; use a comma list of "
                         f"{list(INSTRUCTION_TYPES)}, e.g. {','.join(INSTRUCTION_TYPES)}")
    if distinct and len(set(types)) != len(types):
        raise ValueError(f"{flag} {text!r} names a type twice; name each of {list(INSTRUCTION_TYPES)} at most once")
    return types


def parse_per_class(text: str, defaults: dict[str, int], flag: str = "--per_class") -> dict[str, int]:
    """`defaults` updated by a comma list of TYPE=COUNT parts such as "categorical=4600,reasoning=100". Raises
    ValueError naming `flag` and the part that is not TYPE=COUNT with a known type and a whole COUNT >= 0."""
    counts = dict(defaults)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in INSTRUCTION_TYPES or not value.strip().isdigit():
            raise ValueError(
                f"{flag} part {part!r} is not TYPE=COUNT with TYPE in {list(INSTRUCTION_TYPES)} and COUNT >= 0, "
                "e.g. categorical=4600,conversation=1000,reasoning=100"
            )
        counts[name.strip()] = int(value)
    return counts
