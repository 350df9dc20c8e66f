"""Offline writer: conversation and reasoning pairs from caption + attributes, with no LLM.

This is not a substitute for LLM-written data: it produces grammatical, fact-grounded but formulaic text so that
the pipeline, the demo and the tests run without a network, and the offline miniature has answers worth learning.
Every record it makes carries `generator: "template"`. The phrasing is picked per image from a few variants by a
hash of the image id, so reruns give identical text.

The sentences describe only what the attributes say is there: the scene, the objects, a person's face and action,
the light and the colours. Faces are described by what shows (a smile, a scowl, wide eyes), never by an emotion
word, so that an explanation names no emotion but the one it argues for; light and colour words follow the
thresholds the reasoning metrics use (`emovit.evaluation.explanations`), so that no sentence contradicts the image.
"""

from __future__ import annotations

import zlib

from modeling_emovit.processing_emovit import EXPLANATION_PRESETS, REASONING_QUESTION

# Brightness / colourfulness (EmoSet's 0-1 scale) -> words. The cut-offs are the reasoning metrics' thresholds:
# "bright" from 0.6, "dark" up to 0.3, "colourful" from 0.5, "colourless" up to 0.2; between them, neutral words.
_BRIGHTNESS_WORDS = ((0.35, "dark"), (0.6, "softly lit"), (1.01, "bright"))
_COLOR_WORDS = ((0.25, "almost colourless"), (0.5, "gently coloured"), (1.01, "colourful"))

# How a scene, an object, a facial expression and a human action are said (EmoSet's names; others are said by their
# own name). No phrase holds an emotion word: "amusement park" would name amusement, so it is a fairground.
_SCENES = {
    "amusement_park": "at a fairground with a big wheel",
    "beach": "on a sandy beach by the sea",
    "garden": "in a garden",
    "stadium/football": "in a football stadium",
    "mountain": "below snowy mountain peaks",
    "forest_path": "on a path into a forest",
    "street": "in a city street",
    "garbage_dump": "at a garbage dump",
    "cemetery": "in a cemetery with rows of headstones",
    "bedroom": "in a bedroom with a window",
}
_OBJECTS = {
    "Balloon": "a red balloon", "Toy": "a teddy bear toy", "Ball": "a ball", "Dog": "a dog", "Cat": "a cat",
    "Flower": "a flower", "Bench": "a bench", "Tree": "a tree", "Bird": "a bird", "Car": "a red car",
    "Fire": "a fire", "Waste container": "a waste bin", "Insect": "a big black insect", "Umbrella": "an umbrella",
    "Person": "a person",
}
_FACES = {
    "happy": "a smiling face", "sad": "a frowning face", "angry": "a scowling face",
    "fear": "a wide eyed, trembling face", "surprise": "an open mouth", "disgust": "a grimacing face",
}
_ACTIONS = {"juggling balls": "juggling", "reading book": "reading a book"}

_SUBJECT_QUESTIONS = ("What can be seen in this image?", "What is the main subject of this picture?",
                      "Describe what this photo shows.")
_LIGHT_QUESTIONS = ("How would you describe the light and colours in this image?",
                    "Is this picture bright or dark, and how colourful is it?")
_COMPLEX_QUESTIONS = (
    "How do the setting and the visual style of this image shape the feeling it gives?",
    "Why might someone looking at this picture feel {emotion}?",
)
# Half the reasoning questions name the emotion (as EmoVIT's do), half leave the model to name it. The questions
# `explain()` asks by default (its `label` and `free` presets: the demo's "why this emotion", predict.py --explain)
# are among them, so a model trained on this data has met the questions it is asked.
_REASONING_QUESTIONS = (
    "What in this image makes it evoke {emotion}, and how do the details work together to create that feeling?",
    EXPLANATION_PRESETS["label"],
    REASONING_QUESTION,
    "Which emotion does this picture stir, and which details in it create that feeling?",
)
_EMOTION_GLOSS = {
    "amusement": "playful and funny",
    "awe": "grand and vast",
    "contentment": "calm and pleasant",
    "excitement": "lively and thrilling",
    "anger": "tense and hostile",
    "disgust": "foul and repellent",
    "fear": "threatening and uncertain",
    "sadness": "heavy and lonely",
}


def _word(value: float, table) -> str:
    return next(word for limit, word in table if value < limit)


def _pick(options: tuple[str, ...], image_id: str, salt: str) -> str:
    return options[zlib.crc32(f"{salt}:{image_id}".encode()) % len(options)]


def _capital(text: str) -> str:
    return text[0].upper() + text[1:] if text else text


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _scene(attributes: dict) -> str:
    scene = attributes.get("scene")
    if scene is None:
        return ""
    return _SCENES.get(scene, "in a " + scene.replace("_", " ").replace("/", ", "))


def _objects(attributes: dict) -> list[str]:
    objects = [o for o in attributes.get("object", []) if not (o == "Person" and "facial_expression" in attributes)]
    return [_OBJECTS.get(o, "a " + o.lower()) for o in objects]


def _person(attributes: dict) -> str:
    """'a person with a smiling face who is dancing', or '' when no face or action is annotated."""
    face, action = attributes.get("facial_expression"), attributes.get("human_action")
    if face is None and action is None:
        return ""
    text = "a person"
    if face is not None:
        text += " with " + _FACES.get(face, f"a {face} expression")
    if action is not None:
        action = " ".join(action.split())
        text += (" who is " if face is not None else " ") + _ACTIONS.get(action, action)
    return text


def describe(caption: str, attributes: dict) -> str:
    """One sentence of what is there: the caption if there is one, else the scene, the objects and the person."""
    if caption.strip():
        return _capital(caption.strip().rstrip(".")) + "."
    scene, things = _scene(attributes), _objects(attributes) + [p for p in [_person(attributes)] if p]
    if scene and things:
        return f"{_capital(_join(things))} {scene}."
    if things:
        return f"{_capital(_join(things))}."
    if scene:
        return f"A view {scene}."
    return "A picture whose content is hard to name."


def _style(attributes: dict) -> str:
    """'the picture is bright and colourful', or '' when neither brightness nor colourfulness is known."""
    words = [_word(attributes[name], table) for name, table in (("brightness", _BRIGHTNESS_WORDS),
                                                                 ("colorfulness", _COLOR_WORDS)) if name in attributes]
    return "the picture is " + " and ".join(words) if words else ""


def describe_style(attributes: dict) -> str:
    """One sentence of how the picture is lit and coloured ('The picture is dark and almost colourless.'), or ''."""
    style = _style(attributes)
    return _capital(style) + "." if style else ""


def write_conversation(image_id: str, emotion: str, caption: str, attributes: dict) -> list[tuple[str, str]]:
    what = describe(caption, attributes)
    style = _style(attributes) or "the light and the colours are ordinary"
    gloss = _EMOTION_GLOSS.get(emotion, emotion)
    third = f"{what} Because {style}, the scene feels {gloss}, and the overall impression is one of {emotion}."
    return [
        (_pick(_SUBJECT_QUESTIONS, image_id, "q1"), what),
        (_pick(_LIGHT_QUESTIONS, image_id, "q2"), _capital(style) + "."),
        (_pick(_COMPLEX_QUESTIONS, image_id, "q3").format(emotion=emotion), third),
    ]


def write_reasoning(image_id: str, emotion: str, caption: str, attributes: dict) -> list[tuple[str, str]]:
    what = describe(caption, attributes)
    style = _style(attributes) or "the light and the colours are ordinary"
    gloss = _EMOTION_GLOSS.get(emotion, emotion)
    answer = (f"This picture evokes {emotion}. {what} Because {style}, the scene feels {gloss}, which is why a viewer "
              f"is most likely to feel {emotion}.")
    return [(_pick(_REASONING_QUESTIONS, image_id, "r").format(emotion=emotion), answer)]
