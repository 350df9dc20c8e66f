"""Batches for training: the collator, and the random crop and flip it applies when augmenting."""

import math
import random
from dataclasses import dataclass

import torch
from PIL import Image

from modeling_emovit import EmoVitProcessor
from modeling_emovit.image_utils import open_image

from .vision_cache import VisionCache


def augment_image(image: Image.Image, rng: random.Random) -> Image.Image:
    """LAVIS's training transform before resizing: a random crop of 50-100% of the area at aspect 3/4-4/3, then a
    horizontal flip half of the time (the processor resizes afterwards)."""
    width, height = image.size
    for _ in range(10):
        area = width * height * rng.uniform(0.5, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            image = image.crop((left, top, left + w, top + h))
            break
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


@dataclass
class EmoVitCollator:
    """Turns examples into a training batch with `EmoVitProcessor.training_features`: answer-only labels, the
    instruction to the Q-Former, and either `pixel_values` or cached `vision_hidden_states`."""

    processor: EmoVitProcessor
    max_instruction_length: int = 128
    max_answer_length: int = 256
    augment: bool = False
    cache: VisionCache | None = None
    seed: int = 0

    def __call__(self, examples):
        kwargs = dict(max_instruction_length=self.max_instruction_length, max_answer_length=self.max_answer_length)
        instructions = [e["instruction"] for e in examples]
        answers = [e["answer"] for e in examples]
        if self.cache is not None and all(e["image_key"] in self.cache.index for e in examples):
            batch = self.processor.training_features(instructions, answers, **kwargs)
            batch["vision_hidden_states"] = torch.stack([self.cache[e["image_key"]] for e in examples])
            return batch
        images = [open_image(e["image"], source=e["image_key"]) for e in examples]
        if self.augment:
            # Training examples carry an (epoch, index) key; evaluation examples have none and are not augmented.
            images = [augment_image(image, random.Random(f"{self.seed}/{e['augment_key'][0]}/{e['augment_key'][1]}"))
                      if "augment_key" in e else image for image, e in zip(images, examples)]
        return self.processor.training_features(instructions, answers, images=images, **kwargs)
