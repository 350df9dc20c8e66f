"""Offline writer: conversation and reasoning pairs from caption + attributes, with no LLM.

This is not a substitute for LLM-written data: it produces grammatical, fact-grounded but formulaic
text so the pipeline, the demo and the tests run without a network. Every record it makes carries
`generator: "template"`. The phrasing is picked per image from a few variants by a hash of the image
id, so reruns give identical text.
"""

from __future__ import annotations

import zlib

_BRIGHTNESS_WORDS = ((0.25, "very dark"), (0.45, "rather dark"), (0.65, "moderately lit"), (0.85, "bright"), (1.01, "very bright"))
_COLOR_WORDS = ((0.25, "almost colourless"), (0.45, "muted"), (0.65, "moderately colourful"), (0.85, "colourful"), (1.01, "vividly colourful"))

_SUBJECT_QUESTIONS = ("What can be seen in this image?", "What is the main subject of this picture?", "Describe what this photo shows.")
_LIGHT_QUESTIONS = ("How would you describe the light and colours in this image?", "Is this picture bright or dark, and how colourful is it?")
_COMPLEX_QUESTIONS = (
    "How do the setting and the visual style of this image shape the feeling it gives?",
    "Why might someone looking at this picture feel {emotion}?",
)
_REASONING_QUESTIONS = (
    "What in this image makes it evoke {emotion}, and how do the details work together to create that feeling?",
    "Looking at the scene as a whole, why does this picture leave the viewer with a sense of {emotion}?",
)
_EMOTION_GLOSS = {
    "amusement": "playful and funny",
    "awe": "grand and overwhelming",
    "contentment": "calm and pleasant",
    "excitement": "energetic and thrilling",
    "anger": "tense and provoking",
    "disgust": "repellent and unpleasant",
    "fear": "threatening and uncertain",
    "sadness": "heavy and melancholic",
}


def _word(value: float, table) -> str:
    return next(word for limit, word in table if value < limit)


def _pick(options: tuple[str, ...], image_id: str, salt: str) -> str:
    return options[zlib.crc32(f"{salt}:{image_id}".encode()) % len(options)]


def _subject(caption: str, attributes: dict) -> str:
    if caption.strip():
        text = caption.strip().rstrip(".")
        return text[0].upper() + text[1:]
    parts = []
    if "object" in attributes:
        parts.append("a picture featuring " + ", ".join(o.lower() for o in attributes["object"]))
    if "scene" in attributes:
        scene = attributes["scene"].replace("_", " ").replace("/", ", ")
        parts.append(f"set in a {scene}" if parts else f"a picture set in a {scene}")
    text = " ".join(parts) or "a picture whose content is hard to name"
    return text[0].upper() + text[1:]


def _style(attributes: dict) -> str:
    bits = []
    if "brightness" in attributes:
        bits.append(f"the image is {_word(attributes['brightness'], _BRIGHTNESS_WORDS)}")
    if "colorfulness" in attributes:
        bits.append(f"its palette is {_word(attributes['colorfulness'], _COLOR_WORDS)}")
    return " and ".join(bits)


def _people(attributes: dict) -> str:
    bits = []
    if "facial_expression" in attributes:
        bits.append(f"a face that looks {attributes['facial_expression']}")
    if "human_action" in attributes:
        bits.append(f"someone {attributes['human_action']}")
    return ", ".join(bits)


def write_conversation(image_id: str, emotion: str, caption: str, attributes: dict) -> list[tuple[str, str]]:
    subject = _subject(caption, attributes)
    style = _style(attributes) or "the lighting and colours are ordinary"
    people = _people(attributes)
    first = f"{subject}." + (f" There is {people}." if people else "")
    second = style[0].upper() + style[1:] + "."
    gloss = _EMOTION_GLOSS.get(emotion, emotion)
    third = (
        f"The scene comes across as {gloss}. {subject} sets the tone, and because {style}, "
        f"the overall impression is one of {emotion}."
    )
    return [
        (_pick(_SUBJECT_QUESTIONS, image_id, "q1"), first),
        (_pick(_LIGHT_QUESTIONS, image_id, "q2"), second),
        (_pick(_COMPLEX_QUESTIONS, image_id, "q3").format(emotion=emotion), third),
    ]


def write_reasoning(image_id: str, emotion: str, caption: str, attributes: dict) -> list[tuple[str, str]]:
    subject = _subject(caption, attributes)
    style = _style(attributes) or "the lighting and colours are unremarkable"
    people = _people(attributes)
    gloss = _EMOTION_GLOSS.get(emotion, emotion)
    answer = (
        f"First, what is there: {subject[0].lower() + subject[1:]}"
        + (f", with {people}" if people else "")
        + f". Second, how it is shown: {style}. "
        f"Together these make the scene feel {gloss}, which is why a viewer is most likely to feel {emotion}."
    )
    return [(_pick(_REASONING_QUESTIONS, image_id, "r").format(emotion=emotion), answer)]
