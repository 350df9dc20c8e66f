"""Synthetic sample: a small EmoSet-shaped folder of drawn scenes, for tests and the offline demo.

Each image is a drawn scene (a beach, a street, a cemetery...) with one or two objects in front of it and, in some
images, a person whose face and pose show an expression and an action; then the whole picture is lit and coloured
(brightness and saturation). Every emotion draws these from its own mix, and the mixes overlap as EmoSet's classes
do: amusement and excitement share fairgrounds, balloons and happy faces, contentment and awe share open landscapes
in soft light, anger and disgust share streets and dim rooms, fear and sadness share dark, colourless pictures. So
no single cue gives the class away.

The annotation matches the pixels: scene, objects, facial expression and human action are what was drawn;
brightness and colorfulness are measured on the finished image by the attributes stage's own functions. Some
attributes are left out on purpose (so the pixel fallback runs) and some `human_action` values carry EmoSet's
trailing space.

Two kinds of hard images, so that no model can reach 100 %:
- ambiguous ones: with probability `AMBIGUOUS_RATE` an image is drawn from its class's sibling's mix (the label is
  still the class's);
- label noise: with probability `label_noise` (default 0.03) the `emotion` of an image is replaced by another emotion
  drawn at random, the pixels and the other attributes staying those of the drawn class. Every split has it, as
  EmoSet's human labels do, so it sets an error floor of about `label_noise` on the held-out accuracy.

Train split entries have 4 fields and the val/test entries 3, as both forms exist in the wild.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from modeling_emovit.configuration_emovit import EMOSET_EMOTIONS

from .attributes import compute_brightness, compute_colorfulness

logger = logging.getLogger(__name__)

IMAGE_SIZE = 64
SPLIT_FRACTIONS = (("train", 0.7), ("val", 0.1), ("test", 0.2))
DEFAULT_LABEL_NOISE = 0.03
AMBIGUOUS_RATE = 0.03


@dataclass(frozen=True)
class EmotionMix:
    """What the images of one emotion are drawn from: weighted scenes and objects, the chance of a person, the
    person's expressions and actions, and the ranges of light (a factor on the pixels) and saturation."""

    scenes: dict
    objects: dict
    person: float
    faces: dict
    actions: dict
    light: tuple[float, float]
    saturation: tuple[float, float]
    sibling: str


MIXES = {
    "amusement": EmotionMix(
        scenes={"amusement_park": 5, "beach": 1}, objects={"Balloon": 3, "Toy": 3, "Dog": 1},
        person=0.6, faces={"happy": 5, "surprise": 1}, actions={"juggling balls ": 3, "playing": 2, "dancing": 1},
        light=(0.95, 1.2), saturation=(0.8, 1.0), sibling="excitement"),
    "excitement": EmotionMix(
        scenes={"stadium/football": 5, "amusement_park": 1}, objects={"Ball": 4, "Car": 2, "Balloon": 1},
        person=0.7, faces={"surprise": 4, "happy": 1}, actions={"cheering": 3, "running ": 2, "dancing": 1},
        light=(0.85, 1.15), saturation=(0.75, 1.0), sibling="amusement"),
    "contentment": EmotionMix(
        scenes={"garden": 5, "beach": 1}, objects={"Flower": 3, "Cat": 3, "Bench": 1},
        person=0.4, faces={"happy": 3}, actions={"reading book ": 3, "sitting": 1},
        light=(0.85, 1.1), saturation=(0.45, 0.75), sibling="awe"),
    "awe": EmotionMix(
        scenes={"mountain": 5, "beach": 1}, objects={"Bird": 3, "Tree": 2, "Flower": 1},
        person=0.25, faces={"surprise": 3}, actions={"hiking": 3},
        light=(0.9, 1.2), saturation=(0.35, 0.7), sibling="contentment"),
    "anger": EmotionMix(
        scenes={"street": 5, "garbage_dump": 1}, objects={"Fire": 3, "Car": 2, "Waste container": 1},
        person=0.7, faces={"angry": 5, "disgust": 1}, actions={"shouting": 3},
        light=(0.55, 0.8), saturation=(0.6, 0.9), sibling="disgust"),
    "disgust": EmotionMix(
        scenes={"garbage_dump": 5, "street": 1}, objects={"Waste container": 3, "Insect": 3, "Fire": 1},
        person=0.5, faces={"disgust": 5, "angry": 1}, actions={"standing": 2},
        light=(0.5, 0.75), saturation=(0.3, 0.6), sibling="anger"),
    "fear": EmotionMix(
        scenes={"forest_path": 5, "bedroom": 1}, objects={"Insect": 2, "Tree": 2, "Umbrella": 1},
        person=0.5, faces={"fear": 5}, actions={"running ": 3, "hiding": 2},
        light=(0.35, 0.6), saturation=(0.15, 0.45), sibling="sadness"),
    "sadness": EmotionMix(
        scenes={"cemetery": 5, "bedroom": 1}, objects={"Umbrella": 3, "Bench": 2, "Tree": 1},
        person=0.6, faces={"sad": 5}, actions={"crying": 3, "sitting": 2},
        light=(0.45, 0.7), saturation=(0.05, 0.35), sibling="fear"),
}


# ---------------------------------------------------------------------------------------------------- scenes

def _rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return int(r * 255), int(g * 255), int(b * 255)


def _sky_and_ground(draw, horizon, sky, ground):
    draw.rectangle((0, 0, IMAGE_SIZE, horizon), fill=sky)
    draw.rectangle((0, horizon, IMAGE_SIZE, IMAGE_SIZE), fill=ground)


def _draw_scene(draw: ImageDraw.ImageDraw, scene: str, rng: random.Random) -> None:
    s = IMAGE_SIZE
    horizon = int(s * rng.uniform(0.45, 0.6))
    sky = _rgb(0.58 + rng.uniform(-0.03, 0.03), 0.45, 0.95)
    if scene == "amusement_park":  # a Ferris wheel on a fairground
        _sky_and_ground(draw, horizon, sky, _rgb(0.08, 0.5, 0.75))
        cx, cy, r = rng.uniform(0.2, 0.8) * s, horizon - s * 0.18, s * 0.2
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(230, 60, 60), width=2)
        for k in range(6):
            a = math.pi / 3 * k
            draw.line((cx, cy, cx + r * math.cos(a), cy + r * math.sin(a)), fill=(240, 200, 40), width=1)
        draw.line((cx, cy, cx - r * 0.6, horizon), fill=(90, 90, 90), width=2)
        draw.line((cx, cy, cx + r * 0.6, horizon), fill=(90, 90, 90), width=2)
    elif scene == "beach":  # sky, a band of sea, sand
        _sky_and_ground(draw, horizon, sky, _rgb(0.13, 0.45, 0.95))
        draw.rectangle((0, horizon - s * 0.12, s, horizon), fill=_rgb(0.56, 0.8, 0.8))
    elif scene == "garden":  # lawn dotted with small flowers
        _sky_and_ground(draw, horizon, sky, _rgb(0.3, 0.65, 0.7))
        for _ in range(10):
            x, y = rng.uniform(0, s), rng.uniform(horizon + 2, s)
            draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=_rgb(rng.choice([0.0, 0.15, 0.85]), 0.6, 1.0))
    elif scene == "stadium/football":  # stands in stripes over a marked pitch
        _sky_and_ground(draw, horizon, _rgb(0.0, 0.0, 0.55), _rgb(0.33, 0.7, 0.65))
        for y in range(0, horizon, 4):
            draw.line((0, y, s, y), fill=_rgb(rng.choice([0.0, 0.6, 0.15]), 0.7, 0.85), width=2)
        draw.line((s / 2, horizon, s / 2, s), fill=(245, 245, 245), width=1)
        draw.ellipse((s / 2 - 7, (horizon + s) / 2 - 5, s / 2 + 7, (horizon + s) / 2 + 5), outline=(245, 245, 245))
    elif scene == "mountain":  # peaks with snow caps
        _sky_and_ground(draw, horizon, sky, _rgb(0.3, 0.35, 0.5))
        for _ in range(2):
            px, h = rng.uniform(0.15, 0.85) * s, rng.uniform(0.35, 0.5) * s
            top = horizon - h
            draw.polygon([(px, top), (px - h, horizon), (px + h, horizon)], fill=_rgb(0.6, 0.15, 0.55))
            draw.polygon([(px, top), (px - h * 0.25, top + h * 0.25), (px + h * 0.25, top + h * 0.25)],
                         fill=(250, 250, 250))
    elif scene == "forest_path":  # tall trunks and a path running into them
        _sky_and_ground(draw, horizon, _rgb(0.35, 0.5, 0.45), _rgb(0.3, 0.6, 0.35))
        for _ in range(6):
            x = rng.uniform(0, s)
            draw.rectangle((x, 0, x + 3, horizon + 4), fill=_rgb(0.08, 0.6, 0.3))
        draw.polygon([(s * 0.45, horizon), (s * 0.55, horizon), (s * 0.8, s), (s * 0.2, s)], fill=_rgb(0.1, 0.4, 0.6))
    elif scene == "street":  # buildings, asphalt, a dashed line
        _sky_and_ground(draw, horizon, sky, (95, 95, 100))
        x = 0.0
        while x < s:
            w, h = rng.uniform(8, 14), rng.uniform(0.2, 0.45) * s
            draw.rectangle((x, horizon - h, x + w, horizon), fill=_rgb(rng.uniform(0, 1), 0.2, rng.uniform(0.45, 0.7)))
            x += w + 1
        for x in range(2, s, 10):
            draw.line((x, (horizon + s) / 2, x + 5, (horizon + s) / 2), fill=(240, 240, 240), width=1)
    elif scene == "garbage_dump":  # heaps of refuse on bare ground
        _sky_and_ground(draw, horizon, _rgb(0.15, 0.2, 0.7), _rgb(0.1, 0.5, 0.4))
        for _ in range(4):
            x, w = rng.uniform(0, s), rng.uniform(10, 18)
            draw.pieslice((x - w, horizon - w * 0.6, x + w, horizon + w * 0.6), 180, 360,
                          fill=_rgb(rng.choice([0.08, 0.2, 0.3]), 0.5, 0.45))
    elif scene == "cemetery":  # grey headstones in rows on grass
        _sky_and_ground(draw, horizon, _rgb(0.6, 0.1, 0.75), _rgb(0.28, 0.35, 0.5))
        for row, y in enumerate((horizon + 3, horizon + 14)):
            for x in range(4 + 6 * row, s, 16):
                draw.rounded_rectangle((x, y, x + 6, y + 9), radius=3, fill=(150, 150, 155))
    elif scene == "bedroom":  # a wall with a window, a floor, a bed
        draw.rectangle((0, 0, s, horizon), fill=_rgb(0.1, 0.25, 0.85))
        draw.rectangle((0, horizon, s, s), fill=_rgb(0.07, 0.55, 0.55))
        wx = rng.uniform(0.1, 0.6) * s
        draw.rectangle((wx, s * 0.1, wx + 16, s * 0.1 + 14), fill=sky, outline=(255, 255, 255))
        draw.rectangle((s * 0.55, horizon - 6, s * 0.95, horizon + 8), fill=_rgb(0.95, 0.3, 0.9))
    else:  # pragma: no cover - MIXES only names the scenes above
        raise AssertionError(scene)


# ---------------------------------------------------------------------------------------------------- objects

def _draw_object(draw: ImageDraw.ImageDraw, name: str, x: float, y: float, size: float) -> None:
    """Draws `name` standing on the point (x, y), about `size` pixels tall."""
    h = size
    if name == "Balloon":
        draw.line((x, y, x, y - h * 0.45), fill=(60, 60, 60), width=1)
        draw.ellipse((x - h * 0.25, y - h, x + h * 0.25, y - h * 0.4), fill=(235, 40, 60))
    elif name == "Toy":  # a teddy bear: body, head, ears
        draw.ellipse((x - h * 0.3, y - h * 0.55, x + h * 0.3, y), fill=(180, 110, 50))
        draw.ellipse((x - h * 0.22, y - h * 0.95, x + h * 0.22, y - h * 0.5), fill=(180, 110, 50))
        for ex in (-0.2, 0.2):
            draw.ellipse((x + h * ex - 3, y - h - 1, x + h * ex + 3, y - h + 5), fill=(150, 90, 40))
    elif name == "Ball":
        draw.ellipse((x - h * 0.3, y - h * 0.6, x + h * 0.3, y), fill=(250, 250, 250), outline=(20, 20, 20))
        draw.line((x - h * 0.3, y - h * 0.3, x + h * 0.3, y - h * 0.3), fill=(20, 20, 20))
    elif name == "Dog":
        draw.rectangle((x - h * 0.4, y - h * 0.5, x + h * 0.3, y - h * 0.25), fill=(200, 150, 90))
        draw.ellipse((x + h * 0.2, y - h * 0.75, x + h * 0.5, y - h * 0.4), fill=(200, 150, 90))
        for lx in (-0.35, -0.15, 0.1, 0.25):
            draw.line((x + h * lx, y - h * 0.25, x + h * lx, y), fill=(150, 100, 60), width=2)
    elif name == "Cat":
        draw.ellipse((x - h * 0.3, y - h * 0.45, x + h * 0.3, y), fill=(240, 150, 40))
        draw.ellipse((x - h * 0.18, y - h * 0.8, x + h * 0.18, y - h * 0.4), fill=(240, 150, 40))
        draw.polygon([(x - h * 0.18, y - h * 0.7), (x - h * 0.12, y - h * 0.95), (x - h * 0.02, y - h * 0.75)],
                     fill=(240, 150, 40))
        draw.polygon([(x + h * 0.18, y - h * 0.7), (x + h * 0.12, y - h * 0.95), (x + h * 0.02, y - h * 0.75)],
                     fill=(240, 150, 40))
    elif name == "Flower":
        draw.line((x, y, x, y - h * 0.6), fill=(40, 140, 40), width=2)
        for k in range(5):
            a = 2 * math.pi * k / 5
            px, py = x + h * 0.16 * math.cos(a), y - h * 0.75 + h * 0.16 * math.sin(a)
            draw.ellipse((px - h * 0.12, py - h * 0.12, px + h * 0.12, py + h * 0.12), fill=(240, 90, 170))
        draw.ellipse((x - h * 0.08, y - h * 0.83, x + h * 0.08, y - h * 0.67), fill=(250, 220, 40))
    elif name == "Bench":
        draw.rectangle((x - h * 0.5, y - h * 0.45, x + h * 0.5, y - h * 0.35), fill=(130, 80, 40))
        draw.rectangle((x - h * 0.5, y - h * 0.75, x + h * 0.5, y - h * 0.62), fill=(130, 80, 40))
        for lx in (-0.45, 0.4):
            draw.line((x + h * lx, y - h * 0.4, x + h * lx, y), fill=(60, 60, 60), width=2)
    elif name == "Tree":
        draw.rectangle((x - h * 0.07, y - h * 0.45, x + h * 0.07, y), fill=(110, 70, 30))
        draw.ellipse((x - h * 0.35, y - h, x + h * 0.35, y - h * 0.35), fill=(30, 130, 40))
    elif name == "Bird":  # a bird in flight, high above the point
        by = y - h * 1.4
        draw.line((x - h * 0.35, by - h * 0.1, x, by + h * 0.05, x + h * 0.35, by - h * 0.1), fill=(30, 30, 30), width=2)
    elif name == "Car":
        draw.rectangle((x - h * 0.6, y - h * 0.45, x + h * 0.6, y - h * 0.15), fill=(200, 30, 30))
        draw.rectangle((x - h * 0.3, y - h * 0.7, x + h * 0.3, y - h * 0.45), fill=(170, 25, 25))
        for wx in (-0.35, 0.35):
            draw.ellipse((x + h * wx - h * 0.14, y - h * 0.28, x + h * wx + h * 0.14, y), fill=(20, 20, 20))
    elif name == "Fire":
        draw.polygon([(x - h * 0.35, y), (x + h * 0.35, y), (x + h * 0.1, y - h * 0.5), (x, y - h),
                      (x - h * 0.1, y - h * 0.5)], fill=(250, 110, 10))
        draw.polygon([(x - h * 0.15, y), (x + h * 0.15, y), (x, y - h * 0.55)], fill=(255, 220, 40))
    elif name == "Waste container":
        draw.polygon([(x - h * 0.35, y - h * 0.7), (x + h * 0.35, y - h * 0.7), (x + h * 0.27, y), (x - h * 0.27, y)],
                     fill=(50, 110, 60))
        draw.rectangle((x - h * 0.4, y - h * 0.8, x + h * 0.4, y - h * 0.7), fill=(35, 80, 45))
    elif name == "Insect":  # a big spider-like bug
        draw.ellipse((x - h * 0.2, y - h * 0.5, x + h * 0.2, y - h * 0.15), fill=(25, 20, 20))
        for k in range(4):
            ly = y - h * 0.45 + k * h * 0.09
            draw.line((x - h * 0.45, ly + h * 0.1, x, ly), fill=(25, 20, 20), width=1)
            draw.line((x + h * 0.45, ly + h * 0.1, x, ly), fill=(25, 20, 20), width=1)
    elif name == "Umbrella":
        draw.pieslice((x - h * 0.45, y - h, x + h * 0.45, y - h * 0.3), 180, 360, fill=(40, 40, 120))
        draw.line((x, y - h * 0.65, x, y), fill=(30, 30, 30), width=2)
    else:  # pragma: no cover - MIXES only names the objects above
        raise AssertionError(name)


# Skin tints per expression (an angry face flushes, a frightened one pales, a disgusted one turns greenish) and the
# mouth drawn: a smile, a frown, an open "O", a straight or wavy line.
_FACES = {
    "happy": ((250, 210, 170), "smile"),
    "sad": ((220, 200, 185), "frown"),
    "angry": ((235, 110, 90), "frown"),
    "fear": ((235, 235, 225), "open"),
    "surprise": ((250, 210, 170), "open"),
    "disgust": ((170, 200, 130), "wavy"),
}


def _draw_person(draw: ImageDraw.ImageDraw, face: str, action: str, x: float, y: float, h: float) -> None:
    """A figure standing on (x, y), `h` pixels tall, with a big head that shows `face` and a pose for `action`."""
    skin, mouth = _FACES[face]
    head = h * 0.22
    neck_y = y - h * 0.6
    body = (30, 60, 140)
    hip_y = y - h * 0.25
    sitting = action in ("sitting", "reading book")
    draw.line((x, neck_y, x, hip_y), fill=body, width=3)
    # legs
    if action == "running":
        draw.line((x, hip_y, x - h * 0.25, y), fill=body, width=2)
        draw.line((x, hip_y, x + h * 0.3, y - h * 0.1), fill=body, width=2)
    elif sitting:
        draw.line((x, hip_y, x + h * 0.25, hip_y), fill=body, width=2)
        draw.line((x + h * 0.25, hip_y, x + h * 0.25, y), fill=body, width=2)
    else:
        draw.line((x, hip_y, x - h * 0.12, y), fill=body, width=2)
        draw.line((x, hip_y, x + h * 0.12, y), fill=body, width=2)
    # arms
    shoulder = neck_y + h * 0.08
    if action in ("cheering", "dancing", "shouting"):
        draw.line((x, shoulder, x - h * 0.25, shoulder - h * 0.25), fill=body, width=2)
        draw.line((x, shoulder, x + h * 0.25, shoulder - h * 0.25), fill=body, width=2)
    elif action in ("juggling balls", "playing"):
        draw.line((x, shoulder, x - h * 0.25, shoulder - h * 0.1), fill=body, width=2)
        draw.line((x, shoulder, x + h * 0.25, shoulder - h * 0.1), fill=body, width=2)
        for bx in (-0.2, 0.0, 0.2):
            draw.ellipse((x + h * bx - 2, shoulder - h * 0.42 - 2, x + h * bx + 2, shoulder - h * 0.42 + 2),
                         fill=(250, 60, 60))
    elif action == "reading book":
        draw.line((x, shoulder, x + h * 0.2, shoulder + h * 0.1), fill=body, width=2)
        draw.rectangle((x + h * 0.15, shoulder, x + h * 0.3, shoulder + h * 0.15), fill=(240, 240, 230))
    elif action == "hiking":
        draw.line((x, shoulder, x + h * 0.2, shoulder + h * 0.2), fill=body, width=2)
        draw.line((x + h * 0.25, shoulder - h * 0.05, x + h * 0.25, y), fill=(110, 70, 30), width=1)
    else:
        draw.line((x, shoulder, x - h * 0.18, shoulder + h * 0.25), fill=body, width=2)
        draw.line((x, shoulder, x + h * 0.18, shoulder + h * 0.25), fill=body, width=2)
    # head and face
    cy = neck_y - head
    draw.ellipse((x - head, cy - head, x + head, cy + head), fill=skin)
    for ex in (-0.4, 0.4):
        draw.ellipse((x + head * ex - 1, cy - head * 0.3 - 1, x + head * ex + 1, cy - head * 0.3 + 1), fill=(20, 20, 20))
    my = cy + head * 0.4
    if mouth == "smile":
        draw.arc((x - head * 0.5, my - head * 0.5, x + head * 0.5, my + head * 0.2), 20, 160, fill=(150, 30, 30), width=2)
    elif mouth == "frown":
        draw.arc((x - head * 0.5, my - head * 0.05, x + head * 0.5, my + head * 0.6), 200, 340, fill=(100, 20, 20), width=2)
    elif mouth == "open":
        draw.ellipse((x - head * 0.2, my - head * 0.25, x + head * 0.2, my + head * 0.25), fill=(60, 10, 10))
    else:  # wavy
        draw.line((x - head * 0.45, my, x - head * 0.15, my - 2, x + head * 0.15, my + 1, x + head * 0.45, my - 2),
                  fill=(80, 60, 20), width=2)
    if face == "angry":
        draw.line((x - head * 0.7, cy - head * 0.7, x - head * 0.1, cy - head * 0.4), fill=(20, 20, 20), width=2)
        draw.line((x + head * 0.7, cy - head * 0.7, x + head * 0.1, cy - head * 0.4), fill=(20, 20, 20), width=2)
    if action == "crying":
        draw.line((x - head * 0.4, cy, x - head * 0.4, cy + head * 0.6), fill=(80, 160, 255), width=2)
        draw.line((x + head * 0.4, cy, x + head * 0.4, cy + head * 0.6), fill=(80, 160, 255), width=2)


# ---------------------------------------------------------------------------------------------------- images

def _pick(weights: dict, rng: random.Random):
    names = list(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def draw_scene(emotion: str, rng: random.Random, ambiguous_rate: float = AMBIGUOUS_RATE) -> tuple[Image.Image, dict]:
    """Draws one picture of `emotion`'s mix (or, with probability `ambiguous_rate`, of its sibling's); returns it with
    what was drawn: scene, objects, facial expression and human action (EmoSet's spelling, trailing spaces kept)."""
    mix = MIXES[emotion]
    if rng.random() < ambiguous_rate:
        mix = MIXES[mix.sibling]
    scene = _pick(mix.scenes, rng)
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE))
    draw = ImageDraw.Draw(image)
    _draw_scene(draw, scene, rng)
    drawn = {"scene": scene}
    # Foreground: one or two objects and maybe a person, spread over the lower half so they do not hide each other.
    objects = []
    for _ in range(rng.choice((1, 1, 2))):
        name = _pick(mix.objects, rng)
        if name not in objects:
            objects.append(name)
    slots = [0.2, 0.5, 0.8]
    rng.shuffle(slots)
    for name, slot in zip(objects, slots):
        _draw_object(draw, name, slot * IMAGE_SIZE, IMAGE_SIZE * rng.uniform(0.85, 0.97), IMAGE_SIZE * rng.uniform(0.3, 0.42))
    drawn["object"] = objects
    if rng.random() < mix.person:
        face, action = _pick(mix.faces, rng), _pick(mix.actions, rng)
        _draw_person(draw, face, action.strip(), slots[2] * IMAGE_SIZE, IMAGE_SIZE * 0.97, IMAGE_SIZE * rng.uniform(0.55, 0.7))
        drawn["facial_expression"], drawn["human_action"] = face, action
        drawn["object"] = objects + ["Person"]  # the mixes' objects never include a person
    # Light and colour for the whole picture: a factor on every pixel, and a blend towards grey.
    pixels = np.asarray(image, dtype=np.float64)
    grey = pixels @ np.array([0.299, 0.587, 0.114])
    saturation = rng.uniform(*mix.saturation)
    pixels = grey[..., None] + saturation * (pixels - grey[..., None])
    pixels = pixels * rng.uniform(*mix.light)
    pixels += np.random.default_rng(rng.getrandbits(32)).normal(0, 6, pixels.shape)  # sensor noise
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)), drawn


def draw_image(emotion: str, rng: random.Random) -> Image.Image:
    """A picture of `emotion`'s mix (see `draw_scene`), without what was drawn."""
    return draw_scene(emotion, rng)[0]


def _annotation(label: str, image: Image.Image, drawn: dict, index: int) -> dict:
    pixels = np.asarray(image)
    annotation = {"emotion": label}
    # Every third image lacks brightness/colorfulness, every fifth lacks the scene: the builder must cope.
    if index % 3 != 0:
        annotation["brightness"] = compute_brightness(pixels)
        annotation["colorfulness"] = compute_colorfulness(pixels)
    if index % 5 != 0:
        annotation["scene"] = drawn["scene"]
    if index % 7 != 3:
        annotation["object"] = drawn["object"]
    for name in ("facial_expression", "human_action"):
        if name in drawn:
            annotation[name] = drawn[name]
    return annotation


# What the marker of a folder written by `python -m dataset_builder synth` says wrote it (see `atomic_write_folder`).
SYNTHETIC_KIND = "dataset_builder synthetic EmoSet"


def write_synthetic_emoset(output_dir: str | Path, images_per_class: int = 60, seed: int = 0,
                           label_noise: float = DEFAULT_LABEL_NOISE) -> dict[str, int]:
    """Writes the sample into `output_dir` (files of the same names there are overwritten: give it a new folder, as
    the `synth` command does); returns the number of entries per split. `label_noise` is the share of images whose
    emotion label is replaced by another emotion drawn at random (see the module docstring)."""
    if images_per_class < 3:
        raise ValueError(f"images_per_class is {images_per_class}; use at least 3 so every split gets an image.")
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise is {label_noise}; use a share in [0, 1), e.g. 0.03.")
    root = Path(output_dir)
    rng = random.Random(seed)
    # Labels are flipped by their own generator, so that the same seed draws the same pictures at any noise rate.
    noise_rng = random.Random(seed + 1)
    splits: dict[str, list] = {name: [] for name, _ in SPLIT_FRACTIONS}
    flipped = []
    numbers = {emotion: 0 for emotion in EMOSET_EMOTIONS}  # ids count per label, as EmoSet's do
    # Every emotion's folders first: a flipped label files its image under another emotion's folder.
    for emotion in EMOSET_EMOTIONS:
        (root / "image" / emotion).mkdir(parents=True, exist_ok=True)
        (root / "annotation" / emotion).mkdir(parents=True, exist_ok=True)
    for emotion in EMOSET_EMOTIONS:
        n_val = max(1, round(images_per_class * SPLIT_FRACTIONS[1][1]))
        n_test = max(1, round(images_per_class * SPLIT_FRACTIONS[2][1]))
        n_train = images_per_class - n_val - n_test
        for index in range(images_per_class):
            image, drawn = draw_scene(emotion, rng)
            label = emotion
            if noise_rng.random() < label_noise:
                label = noise_rng.choice([e for e in EMOSET_EMOTIONS if e != emotion])
            # Files live under the label's folder, as EmoSet files an image under its (human) label.
            image_id = f"{label}_{numbers[label]:05d}"
            numbers[label] += 1
            image_rel = f"image/{label}/{image_id}.jpg"
            annotation_rel = f"annotation/{label}/{image_id}.json"
            image.save(root / image_rel, quality=92)
            # Brightness and colourfulness are measured on the file as saved, as a reader of the sample sees it.
            with Image.open(root / image_rel) as saved:
                saved_image = saved.convert("RGB")
            (root / annotation_rel).write_text(json.dumps(_annotation(label, saved_image, drawn, index)))
            if label != emotion:
                flipped.append({"image": image_rel, "label": label, "drawn_as": emotion})
            if index < n_train:
                splits["train"].append([label, image_id, image_rel, annotation_rel])
            elif index < n_train + n_val:
                splits["val"].append([label, image_rel, annotation_rel])
            else:
                splits["test"].append([label, image_rel, annotation_rel])
    for name, entries in splits.items():
        rng.shuffle(entries)
        (root / f"{name}.json").write_text(json.dumps(entries))
    info = {"emotion": {"label2idx": {e: i for i, e in enumerate(EMOSET_EMOTIONS)},
                        "idx2label": {str(i): e for i, e in enumerate(EMOSET_EMOTIONS)}}}
    for name in ("brightness", "colorfulness"):
        steps = [round(k / 10, 1) for k in range(11)]
        info[name] = {"label2idx": {str(s): i for i, s in enumerate(steps)}, "idx2label": {str(i): s for i, s in enumerate(steps)}}
    values = {"scene": set(), "object": {"Person"}, "facial_expression": set(), "human_action": set()}
    for mix in MIXES.values():
        values["scene"] |= set(mix.scenes)
        values["object"] |= set(mix.objects)
        values["facial_expression"] |= set(mix.faces)
        values["human_action"] |= set(mix.actions)
    for name, found in values.items():
        ordered = sorted(found)
        info[name] = {"label2idx": {v: i for i, v in enumerate(ordered)}, "idx2label": {str(i): v for i, v in enumerate(ordered)}}
    (root / "info.json").write_text(json.dumps(info, indent=1))
    # How the sample was made, beside EmoSet's own files: the noise rates and which labels were flipped.
    (root / "synthetic.json").write_text(json.dumps({
        "images_per_class": images_per_class, "seed": seed, "label_noise": label_noise,
        "ambiguous_rate": AMBIGUOUS_RATE, "flipped_labels": flipped}, indent=1))
    counts = {name: len(entries) for name, entries in splits.items()}
    logger.info("wrote a synthetic EmoSet sample to %s: %s", root, counts)
    return counts
