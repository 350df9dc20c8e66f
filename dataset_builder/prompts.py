"""Prompts stage: the chat messages that ask an LLM for conversation and reasoning data.

The design follows the EmoVIT paper: the model never sees the image, only its caption and attributes,
and is asked to write as if it were looking at the picture. The wording here is ours. Each prompt is
identified by a short hash of its full text (system prompt + few-shot examples + user template), stored
in every record, so that data written with different prompts can always be told apart.

Each prompt comes in two response formats: "text" asks for `Question:` / `Answer:` lines, "json_schema"
(structured outputs) for a JSON object under `parsing.pairs_schema`, sent as the request's `response_format`.
The task is worded the same in both; only the closing format instruction and the few-shot replies differ.
"""

from __future__ import annotations

import hashlib
import json

from modeling_emovit.processing_emovit import CATEGORICAL_INSTRUCTION

from .parsing import pairs_schema

_CONVERSATION_TASK = """\
You are a visual assistant looking at a single photograph. You cannot see it directly; instead you are \
given a short description of it and a list of its visual attributes. Write as though you see the photo \
yourself: never mention that you were given a description or attributes.

About the attributes: brightness runs from 0 (darkest) to 1 (brightest); colorfulness runs from 0 (black \
and white) to 1 (most colorful). The emotion is the feeling the photo evokes in people who look at it.

Write exactly three question/answer pairs between a curious person and you:
1. a question about something plainly visible (objects, people, setting, colours, light);
2. another question about different visible content;
3. a complex question that needs careful thought about the scene and why it feels the way it does.
Only ask about things that can be answered with confidence from the photo."""
CONVERSATION_SYSTEM = _CONVERSATION_TASK + """

Format every pair as two lines and nothing else:
Question: <question>
Answer: <answer>"""
CONVERSATION_SYSTEM_JSON = _CONVERSATION_TASK + """

Reply with a JSON object only: its "pairs" list holds the three pairs in the order above, each an object with \
a "question" and an "answer"."""

_REASONING_TASK = """\
You are an expert in how images make people feel. You are given a short description of a photograph and \
its visual attributes (brightness from 0, darkest, to 1, brightest; colorfulness from 0, black and white, \
to 1, most colorful) together with the emotion it evokes. Write as though you are looking at the photo \
itself; never mention a description, a caption or attributes.

Write one complex question whose answer needs two steps: first understanding what is in the scene, then \
reasoning about why those details evoke the emotion. Then answer it in detail, in one or two paragraphs, \
pointing to concrete visual evidence."""
REASONING_SYSTEM = _REASONING_TASK + """

Format:
Question: <question>
Answer: <answer>"""
REASONING_SYSTEM_JSON = _REASONING_TASK + """

Reply with a JSON object only: its "pairs" list holds one object with the "question" and its "answer"."""

# Few-shot examples for the reasoning prompt: (description + attributes, expected reply). Written for this
# project; they show the expected depth and the rule of never naming the description.
REASONING_EXAMPLES = (
    (
        "description: a small child laughing while a dog licks her face on a lawn\n"
        "emotion: amusement\nbrightness: 0.8\ncolorfulness: 0.6\nscene: lawn\nobject: Dog, Girl\n"
        "facial expression: happy",
        "Question: What makes this moment between the child and the dog feel so funny and light-hearted?\n"
        "Answer: The girl is caught mid-laugh with her eyes squeezed shut while the dog leans in to lick her "
        "face, an ordinary bit of clumsy affection that is easy to recognise and hard not to smile at. The "
        "bright daylight and the soft green of the lawn keep the mood relaxed, nothing in the frame signals "
        "danger or effort, and her open expression invites the viewer to share the joke, which is why the "
        "image reads as amusement rather than mere contentment.",
    ),
    (
        "description: an empty hospital corridor at night with one flickering light\n"
        "emotion: fear\nbrightness: 0.2\ncolorfulness: 0.2\nscene: corridor\nobject: Door, Lamp",
        "Question: Why does this corridor make a viewer uneasy even though nothing is happening in it?\n"
        "Answer: The corridor is long, dim and almost colourless, so most of it sinks into shadow and the eye "
        "cannot tell what lies at the far end. The single unsteady light picks out closed doors without "
        "revealing what is behind them, and the total absence of people in a place that should be busy makes "
        "the silence feel wrong. That mix of darkness, hidden spaces and unexplained emptiness is what our "
        "minds read as possible threat, so the picture evokes fear.",
    ),
)

USER_TEMPLATE = "description: {caption}\n{attributes}"
NO_CAPTION = "(none)"

# Rough completion sizes, for --dry_run cost estimates only.
EXPECTED_COMPLETION_TOKENS = {"conversation": 320, "reasoning": 220}
MAX_COMPLETION_TOKENS = {"conversation": 800, "reasoning": 600}

# The template backend's text changes rarely; bump this when it does so its records get a new hash.
TEMPLATE_BACKEND_VERSION = "template-v1"


def _hash(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _json_example(reply: str) -> str:
    """A few-shot reply of REASONING_EXAMPLES as the JSON a structured reply is."""
    question, answer = reply.removeprefix("Question: ").split("\nAnswer: ")
    return json.dumps({"pairs": [{"question": question, "answer": answer}]})


def response_format_field(kind: str) -> dict:
    """The OpenAI `response_format` of a structured request for `kind` (strict JSON schema)."""
    return {"type": "json_schema", "json_schema": {"name": f"emovit_{kind}_pairs", "strict": True,
                                                   "schema": pairs_schema(kind)}}


def prompt_hash(kind: str, response_format: str = "text") -> str:
    """Content hash of everything that shapes the reply for instruction type `kind` in `response_format`."""
    if kind == "categorical":
        return _hash({"categorical": CATEGORICAL_INSTRUCTION})
    if kind not in ("conversation", "reasoning"):
        raise ValueError(f"unknown instruction type {kind!r}; expected categorical, conversation or reasoning")
    if response_format == "json_schema":
        system = CONVERSATION_SYSTEM_JSON if kind == "conversation" else REASONING_SYSTEM_JSON
        examples = [] if kind == "conversation" else [[inp, _json_example(out)] for inp, out in REASONING_EXAMPLES]
        return _hash({"system": system, "examples": examples, "user": USER_TEMPLATE,
                      "response_format": response_format_field(kind)})
    if kind == "conversation":
        return _hash({"system": CONVERSATION_SYSTEM, "user": USER_TEMPLATE})
    return _hash({"system": REASONING_SYSTEM, "examples": REASONING_EXAMPLES, "user": USER_TEMPLATE})


def template_hash() -> str:
    return _hash({"template": TEMPLATE_BACKEND_VERSION})


def build_messages(kind: str, caption: str, attributes_text: str, response_format: str = "text") -> list[dict]:
    """OpenAI chat messages asking for `kind` ("conversation" or "reasoning") data about one image, with the
    reply in `response_format` ("text" or "json_schema")."""
    user = USER_TEMPLATE.format(caption=caption.strip() or NO_CAPTION, attributes=attributes_text)
    structured = response_format == "json_schema"
    if kind == "conversation":
        system = CONVERSATION_SYSTEM_JSON if structured else CONVERSATION_SYSTEM
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if kind == "reasoning":
        messages = [{"role": "system", "content": REASONING_SYSTEM_JSON if structured else REASONING_SYSTEM}]
        for example_input, example_reply in REASONING_EXAMPLES:
            messages.append({"role": "user", "content": example_input})
            messages.append({"role": "assistant", "content": _json_example(example_reply) if structured else example_reply})
        messages.append({"role": "user", "content": user})
        return messages
    raise ValueError(f"instruction type {kind!r} is not written by an LLM; expected conversation or reasoning")


def prompt_texts(response_format: str = "text") -> dict[str, str]:
    """The prompts as text in `response_format`, for the dataset card."""
    structured = response_format == "json_schema"
    examples = "\n\n".join(f"{inp}\n---\n{_json_example(out) if structured else out}" for inp, out in REASONING_EXAMPLES)
    schema = {kind: "\n\n[response_format]\n" + json.dumps(response_format_field(kind)) if structured else ""
              for kind in ("conversation", "reasoning")}
    return {
        "categorical": CATEGORICAL_INSTRUCTION,
        "conversation": (CONVERSATION_SYSTEM_JSON if structured else CONVERSATION_SYSTEM) + "\n\n[user]\n"
        + USER_TEMPLATE + schema["conversation"],
        "reasoning": (REASONING_SYSTEM_JSON if structured else REASONING_SYSTEM) + "\n\n[few-shot examples]\n"
        + examples + "\n\n[user]\n" + USER_TEMPLATE + schema["reasoning"],
    }
