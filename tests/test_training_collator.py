"""emovit.training.collator: batches from pixels or cached features, augmentation, image errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from emovit.training.arguments import DataArguments
from emovit.training.collator import EmoVitCollator, augment_image
from emovit.training.data import InstructionDataset, load_examples
from emovit.training.sampling import AugmentationKeySampler, CurriculumSampler
from emovit.training.vision_cache import VisionCache

from testing_utils import categorical_images, private_copy, random_images


def test_collator_masks_and_cache_agree(tiny_model, tiny_processor, instructions_dir, tmp_path):
    processor, model = tiny_processor, tiny_model
    examples, root = load_examples(DataArguments(dataset=str(instructions_dir), types="categorical,reasoning"))
    assert root is not None and {e["type"] for e in examples} == {"categorical", "reasoning"}
    batch_examples = examples[:2] + [e for e in examples if e["type"] == "reasoning"][:2]
    plain = EmoVitCollator(processor)(batch_examples)
    cache = VisionCache.build(model, processor, batch_examples, tmp_path / "vision_cache")
    cached = EmoVitCollator(processor, cache=cache)(batch_examples)
    assert torch.equal(plain["labels"], cached["labels"]) and "pixel_values" not in cached
    for row, example in enumerate(batch_examples):
        supervised = plain["labels"][row][plain["labels"][row] != -100]
        assert supervised[-1] == processor.tokenizer.eos_token_id
        text = processor.tokenizer.decode(supervised, skip_special_tokens=True).strip()
        assert text == example["answer"].strip()
    with torch.no_grad():
        assert torch.allclose(model.encode_vision(plain["pixel_values"]), cached["vision_hidden_states"], atol=1e-6)


def test_augmentation_differs_per_epoch_and_skips_evaluation_examples(tiny_processor):
    processor = tiny_processor
    collator = EmoVitCollator(processor, augment=True, seed=0)
    dataset = InstructionDataset([{"image": img, "image_key": str(i), "instruction": "Q?", "answer": "A.",
                                   "type": "conversation", "emotion": "awe"}
                                  for i, img in enumerate(random_images(2, size=(60, 40)))])
    batch = lambda keys: collator([dataset[k] for k in keys])["pixel_values"]  # noqa: E731
    assert torch.equal(batch([(0, 0), (0, 1)]), batch([(0, 0), (0, 1)]))
    assert not torch.equal(batch([(0, 0)]), batch([(1, 0)]))
    plain = EmoVitCollator(processor)([dataset[0]])["pixel_values"]
    assert torch.equal(batch([0]), plain)
    sampler = AugmentationKeySampler(CurriculumSampler(["categorical"] * 3, ["categorical"], seed=0))
    sampler.set_epoch(2)
    assert sorted(sampler) == [(2, 0), (2, 1), (2, 2)]


def test_augment_image_crops_half_to_all_of_the_area():
    import random

    image = random_images(1, size=(60, 40))[0]
    for seed in range(20):
        out = augment_image(image, random.Random(seed))
        assert out.mode == image.mode and 0.45 * 60 * 40 <= out.size[0] * out.size[1] <= 60 * 40


def test_16_bit_training_images_are_scaled_like_everywhere_else(tiny_processor, synthetic_root, instructions_dir,
                                                                tmp_path):
    root, data = private_copy(synthetic_root, instructions_dir, tmp_path)
    for image in categorical_images(data)[:3]:
        Image.fromarray(np.full((30, 30), 40000, dtype=np.uint16)).save(root / image, format="PNG")
    examples, _ = load_examples(DataArguments(dataset=str(data), types="categorical"))
    wide = [e for e in examples if e["image"].endswith(tuple(categorical_images(data)[:3]))]
    pixels = EmoVitCollator(tiny_processor)(wide)["pixel_values"]
    assert len(wide) == 3 and torch.isfinite(pixels).all()
    # 40000 of 65535 is the 8-bit grey 155; the processor normalises it the same either way
    grey = EmoVitCollator(tiny_processor)([{**wide[0], "image": Image.new("RGB", (30, 30), (155, 155, 155))}])
    assert torch.allclose(pixels[0], grey["pixel_values"][0], atol=0.02)


def test_a_decompression_bomb_in_training_names_the_file(tiny_processor, synthetic_root, instructions_dir, tmp_path,
                                                          monkeypatch):
    root, data = private_copy(synthetic_root, instructions_dir, tmp_path)
    bomb = categorical_images(data)[0]
    Image.new("RGB", (3000, 3000)).save(root / bomb, format="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    examples, _ = load_examples(DataArguments(dataset=str(data), types="categorical"))
    with pytest.raises(ValueError, match=f"{bomb}.*could not be read.*DecompressionBomb"):
        EmoVitCollator(tiny_processor)(examples)


def test_collator_lays_out_encoder_decoder_batches(tiny_t5_processor):
    """With a T5 processor the collator's batch keeps the answer out of the encoder: it is the decoder's target."""
    examples = [{"image": image, "image_key": str(i), "instruction": "Which emotion?", "answer": "Predict emotion: awe",
                 "type": "categorical", "emotion": "awe"} for i, image in enumerate(random_images(2))]
    batch = EmoVitCollator(tiny_t5_processor)(examples)
    tokenizer = tiny_t5_processor.tokenizer
    assert tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100], skip_special_tokens=True).strip() == (
        "Predict emotion: awe")
    assert "emotion: awe" not in tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert batch["decoder_attention_mask"].shape == batch["labels"].shape
