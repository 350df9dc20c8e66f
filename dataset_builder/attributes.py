"""Attributes stage: EmoSet's per-image attributes, cleaned, completed from pixels, and written as prompt text.

Brightness and colorfulness are computed from the pixels when the annotation lacks them:

- brightness = mean of the Rec. 601 luma `0.299 R + 0.587 G + 0.114 B` over all pixels, divided by 255;
- colorfulness = Hasler & Süsstrunk's metric `sqrt(std(rg)² + std(yb)²) + 0.3 · sqrt(mean(rg)² + mean(yb)²)`,
  with `rg = R - G` and `yb = (R + G)/2 - B` on 0–255 values, divided by 150 (about the value of a very
  colourful photo) and clipped to 1.

Both are then rounded to the nearest 0.1, like EmoSet's 11 classes. Computed values are listed in the
record's `attributes_computed` so they can be told apart from human annotations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from modeling_emovit.image_utils import open_image

from .emoset import ImageItem, Skip, read_annotation


logger = logging.getLogger(__name__)

ATTRIBUTE_NAMES = ("brightness", "colorfulness", "scene", "object", "facial_expression", "human_action")
COLORFULNESS_SCALE = 150.0


def quantise(value: float) -> float:
    """Rounds to EmoSet's 0.1 grid inside [0, 1]."""
    return round(min(1.0, max(0.0, float(value))) * 10) / 10


def compute_brightness(pixels: np.ndarray) -> float:
    """`pixels`: uint8 array of shape (height, width, 3)."""
    rgb = pixels.astype(np.float64)
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    return quantise(luma.mean() / 255.0)


def compute_colorfulness(pixels: np.ndarray) -> float:
    """`pixels`: uint8 array of shape (height, width, 3)."""
    rgb = pixels.astype(np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = (rgb[..., 0] + rgb[..., 1]) / 2 - rgb[..., 2]
    metric = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    return quantise(metric / COLORFULNESS_SCALE)


def load_pixels(image_path: str) -> np.ndarray:
    """The image as a uint8 (height, width, 3) array, read by the same opener training and evaluation use (16-bit
    images scaled to 8 bits, the whole file decoded so a truncated JPEG fails here). Raises ValueError naming the
    file if it cannot be read."""
    return np.asarray(open_image(image_path))


def _clean_text(value) -> str:
    # EmoSet's human_action values sometimes carry trailing spaces; Places names use '/' and '_'.
    return " ".join(str(value).split())


def normalise_attributes(annotation: dict) -> dict:
    """The known attributes of an annotation with whitespace cleaned and types fixed; missing ones omitted.

    Raises ValueError naming the attribute and value when a value has the wrong type or range.
    """
    attributes: dict = {}
    for name in ("brightness", "colorfulness"):
        if annotation.get(name) is None:
            continue
        try:
            value = float(annotation[name])
        except (TypeError, ValueError) as e:
            raise ValueError(f"attribute {name!r} is {annotation[name]!r}; expected a number in [0, 1]") from e
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"attribute {name!r} is {value}; expected a number in [0, 1]")
        attributes[name] = quantise(value)
    for name in ("scene", "facial_expression", "human_action"):
        value = annotation.get(name)
        if value is None or _clean_text(value) == "":
            continue
        attributes[name] = _clean_text(value)
    objects = annotation.get("object")
    if objects is not None:
        if isinstance(objects, str):
            objects = [objects]
        if not isinstance(objects, list):
            raise ValueError(f"attribute 'object' is {objects!r}; expected a list of strings")
        cleaned = list(dict.fromkeys(_clean_text(o) for o in objects if _clean_text(o)))
        if cleaned:
            attributes["object"] = cleaned
    return attributes


def complete_attributes(attributes: dict, pixels: np.ndarray | None) -> tuple[dict, list[str]]:
    """Fills brightness/colorfulness from `pixels` where missing; returns (attributes, names computed)."""
    completed = dict(attributes)
    computed = []
    if pixels is not None:
        for name, compute in (("brightness", compute_brightness), ("colorfulness", compute_colorfulness)):
            if name not in completed:
                completed[name] = compute(pixels)
                computed.append(name)
    return completed, computed


def _readable(value: str) -> str:
    return value.replace("_", " ").replace("/", ", ")


def render_attributes(attributes: dict, emotion: str | None = None) -> str:
    """`name: value` lines, as the official recipe appends to the caption. Missing attributes are left out."""
    lines = []
    if emotion is not None:
        lines.append(f"emotion: {emotion}")
    for name in ATTRIBUTE_NAMES:
        if name not in attributes:
            continue
        value = attributes[name]
        if name == "object":
            value = ", ".join(value)
        elif isinstance(value, str):
            value = _readable(value)
        lines.append(f"{name.replace('_', ' ')}: {value}")
    return "\n".join(lines)


@dataclass
class PreparedImage:
    """An image of the build with its cleaned, completed attributes and the names of those computed from pixels."""

    item: ImageItem
    attributes: dict
    computed: list[str]


def prepare_images(items: list[ImageItem], show_progress: bool = True) -> tuple[dict[str, PreparedImage], list[Skip]]:
    """Annotation + pixel checks for each image; unusable ones become Skips with a reason."""
    prepared, skipped = {}, []
    for item in tqdm(items, desc="attributes", disable=not show_progress):
        annotation, skip = read_annotation(item)
        if skip is not None:
            skipped.append(skip)
            continue
        try:
            normalised = normalise_attributes(annotation)
        except ValueError as e:
            skipped.append(Skip(item.image_id, f"{item.annotation_path}: {e}"))
            continue
        try:
            pixels = load_pixels(item.image_path)
        except (OSError, ValueError, SyntaxError) as e:
            skipped.append(Skip(item.image_id, f"image {item.image_path} cannot be decoded ({e}); replace or remove it"))
            continue
        completed, computed = complete_attributes(normalised, pixels)
        prepared[item.image_id] = PreparedImage(item, completed, computed)
    for skip in skipped:
        logger.warning("skipped %s: %s", skip.item, skip.reason)
    return prepared, skipped
