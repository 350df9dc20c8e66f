"""Synthetic sample: a small EmoSet-shaped folder of drawn images, for tests and the offline demo.

Each emotion has its own background hue and brightness and its own large shape, so a tiny frozen ViT
with a trained Q-Former can tell the classes apart; position, size, hue and pixel noise are jittered per
image so that a model has to use the visual signal rather than memorise pixels. Annotations use every
EmoSet attribute kind, some left out on purpose (brightness, colorfulness) so the pixel fallback runs,
and some `human_action` values carry EmoSet's trailing space. Train split entries have 4 fields and the
val/test entries 3, as both forms exist in the wild.
"""

from __future__ import annotations

import colorsys
import json
import math
import logging
import random
from pathlib import Path

from PIL import Image, ImageDraw

from modeling_emovit.configuration_emovit import EMOSET_EMOTIONS

logger = logging.getLogger(__name__)

IMAGE_SIZE = 64
SPLIT_FRACTIONS = (("train", 0.7), ("val", 0.1), ("test", 0.2))

# emotion -> (background hue in [0, 1), background value, shape, shape colour, scene, objects,
# facial expression, human action). Hues are spread around the colour wheel and the shapes differ in
# silhouette so that each class is separable both by colour and by form.
STYLES = {
    "amusement": (0.13, 0.95, "circle", (230, 40, 150), "amusement_park", ["Balloon", "Toy"], "happy", "juggling balls "),
    "awe": (0.58, 0.85, "triangle", (255, 255, 255), "mountain", ["Mountain", "Sky"], None, "hiking"),
    "contentment": (0.30, 0.75, "ellipse", (250, 240, 120), "garden", ["Flower", "Bench"], "happy", "reading book "),
    "excitement": (0.02, 0.95, "star", (255, 230, 0), "stadium/football", ["Person", "Ball"], "surprise", "cheering"),
    "anger": (0.98, 0.45, "zigzag", (20, 20, 20), "street", ["Car", "Person"], "angry", "shouting"),
    "disgust": (0.22, 0.35, "blobs", (120, 70, 30), "garbage_dump", ["Waste container"], "disgust", None),
    "fear": (0.75, 0.18, "bars", (200, 200, 210), "forest_path", ["Tree"], "fear", "running "),
    "sadness": (0.62, 0.30, "drop", (150, 160, 180), "cemetery", ["Umbrella", "Bench"], "sad", "crying"),
}


def _jitter_rgb(hue: float, value: float, rng: random.Random) -> tuple[int, int, int]:
    h = (hue + rng.uniform(-0.02, 0.02)) % 1.0
    v = min(1.0, max(0.05, value + rng.uniform(-0.05, 0.05)))
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, colour, rng: random.Random) -> None:
    size = rng.uniform(0.5, 0.7) * IMAGE_SIZE
    cx = IMAGE_SIZE / 2 + rng.uniform(-6, 6)
    cy = IMAGE_SIZE / 2 + rng.uniform(-6, 6)
    half = size / 2
    box = (cx - half, cy - half, cx + half, cy + half)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "ellipse":
        draw.ellipse((cx - half, cy - half / 2.2, cx + half, cy + half / 2.2), fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=colour)
    elif shape == "star":
        points = []
        for k in range(10):
            radius = half if k % 2 == 0 else half * 0.4
            angle = math.pi / 5 * k - math.pi / 2
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=colour)
    elif shape == "zigzag":
        xs = [cx - half + k * size / 6 for k in range(7)]
        points = [(x, cy - half / 2 if k % 2 else cy + half / 2) for k, x in enumerate(xs)]
        draw.line(points, fill=colour, width=6)
    elif shape == "blobs":
        for _ in range(5):
            bx, by = cx + rng.uniform(-half, half) * 0.7, cy + rng.uniform(-half, half) * 0.7
            r = rng.uniform(5, 9)
            draw.ellipse((bx - r, by - r, bx + r, by + r), fill=colour)
    elif shape == "bars":
        for k in range(4):
            x = cx - half + k * size / 3.5
            draw.rectangle((x, cy - half, x + 4, cy + half), fill=colour)
    elif shape == "drop":
        draw.ellipse((cx - half / 1.6, cy - half / 3, cx + half / 1.6, cy + half), fill=colour)
        draw.polygon([(cx, cy - half), (cx - half / 1.7, cy + half / 6), (cx + half / 1.7, cy + half / 6)], fill=colour)
    else:  # pragma: no cover - STYLES only names the shapes above
        raise AssertionError(shape)


def draw_image(emotion: str, rng: random.Random) -> Image.Image:
    hue, value, shape, colour, *_ = STYLES[emotion]
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), _jitter_rgb(hue, value, rng))
    draw = ImageDraw.Draw(image)
    shade = rng.uniform(0.85, 1.0)
    _draw_shape(draw, shape, tuple(int(c * shade) for c in colour), rng)
    # Sparse speckle noise so that no two images share pixels.
    pixels = image.load()
    for _ in range(IMAGE_SIZE * 4):
        x, y = rng.randrange(IMAGE_SIZE), rng.randrange(IMAGE_SIZE)
        r, g, b = pixels[x, y]
        d = rng.randint(-40, 40)
        pixels[x, y] = (max(0, min(255, r + d)), max(0, min(255, g + d)), max(0, min(255, b + d)))
    return image


def _annotation(emotion: str, index: int, rng: random.Random) -> dict:
    _, value, _, _, scene, objects, face, action = STYLES[emotion]
    annotation = {"emotion": emotion}
    # Every third image lacks brightness/colorfulness, every fifth lacks the scene: the builder must cope.
    if index % 3 != 0:
        annotation["brightness"] = round(min(1.0, value + rng.choice([-0.1, 0.0, 0.1])), 1)
        annotation["colorfulness"] = round(rng.choice([0.5, 0.6, 0.7]), 1)
    if index % 5 != 0:
        annotation["scene"] = scene
    if index % 7 != 3:
        annotation["object"] = list(objects[: 1 + index % len(objects)])
    if face is not None and index % 2 == 0:
        annotation["facial_expression"] = face
    if action is not None and index % 4 != 1:
        annotation["human_action"] = action
    return annotation


# What the marker of a folder written by `python -m dataset_builder synth` says wrote it (see `atomic_write_folder`).
SYNTHETIC_KIND = "dataset_builder synthetic EmoSet"


def write_synthetic_emoset(output_dir: str | Path, images_per_class: int = 60, seed: int = 0) -> dict[str, int]:
    """Writes the sample into `output_dir` (files of the same names there are overwritten: give it a new folder, as
    the `synth` command does); returns the number of entries per split."""
    if images_per_class < 3:
        raise ValueError(f"images_per_class is {images_per_class}; use at least 3 so every split gets an image.")
    root = Path(output_dir)
    rng = random.Random(seed)
    splits: dict[str, list] = {name: [] for name, _ in SPLIT_FRACTIONS}
    for emotion in EMOSET_EMOTIONS:
        (root / "image" / emotion).mkdir(parents=True, exist_ok=True)
        (root / "annotation" / emotion).mkdir(parents=True, exist_ok=True)
        n_val = max(1, round(images_per_class * SPLIT_FRACTIONS[1][1]))
        n_test = max(1, round(images_per_class * SPLIT_FRACTIONS[2][1]))
        n_train = images_per_class - n_val - n_test
        for index in range(images_per_class):
            image_id = f"{emotion}_{index:05d}"
            image_rel = f"image/{emotion}/{image_id}.jpg"
            annotation_rel = f"annotation/{emotion}/{image_id}.json"
            draw_image(emotion, rng).save(root / image_rel, quality=92)
            (root / annotation_rel).write_text(json.dumps(_annotation(emotion, index, rng)))
            if index < n_train:
                splits["train"].append([emotion, image_id, image_rel, annotation_rel])
            elif index < n_train + n_val:
                splits["val"].append([emotion, image_rel, annotation_rel])
            else:
                splits["test"].append([emotion, image_rel, annotation_rel])
    for name, entries in splits.items():
        rng.shuffle(entries)
        (root / f"{name}.json").write_text(json.dumps(entries))
    info = {"emotion": {"label2idx": {e: i for i, e in enumerate(EMOSET_EMOTIONS)},
                        "idx2label": {str(i): e for i, e in enumerate(EMOSET_EMOTIONS)}}}
    for name in ("brightness", "colorfulness"):
        steps = [round(k / 10, 1) for k in range(11)]
        info[name] = {"label2idx": {str(s): i for i, s in enumerate(steps)}, "idx2label": {str(i): s for i, s in enumerate(steps)}}
    for name, position in (("scene", 4), ("object", 5), ("facial_expression", 6), ("human_action", 7)):
        values = set()
        for style in STYLES.values():
            value = style[position]
            for v in (value if isinstance(value, list) else [value]):
                if v is not None:
                    values.add(v)
        ordered = sorted(values)
        info[name] = {"label2idx": {v: i for i, v in enumerate(ordered)}, "idx2label": {str(i): v for i, v in enumerate(ordered)}}
    (root / "info.json").write_text(json.dumps(info, indent=1))
    counts = {name: len(entries) for name, entries in splits.items()}
    logger.info("wrote a synthetic EmoSet sample to %s: %s", root, counts)
    return counts
