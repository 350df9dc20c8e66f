"""emovit.training.trainer: checkpoints of trainable tensors only, exact resumes (also with augmentation),
training from cached vision features, evaluation loss and accuracy. A few steps each, on CPU."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import set_seed

from emovit.training.arguments import DataArguments, EmoVitTrainingArguments
from emovit.training.collator import EmoVitCollator
from emovit.training.data import InstructionDataset, categorical_eval_examples, load_eval_images, load_examples
from emovit.training.trainer import TRAINABLE_WEIGHTS, EmoVitTrainer
from emovit.training.vision_cache import VisionCache
from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor


TRAINABLE = ("qformer.", "query_tokens", "language_projection.", "vision_model.post_layernorm.")


def train(base, data, output_dir, *, cache=False, augment=False, evaluate=False, resume=None, **overrides):
    """The Trainer set up as train.py sets it up (categorical examples, batch 8, lr 1e-3), trained; returned."""
    args = dict(output_dir=str(output_dir), learning_rate=1e-3, per_device_train_batch_size=8, logging_steps=1,
                eval_strategy="steps" if evaluate else "no", report_to="none", save_strategy="no", seed=0,
                dataloader_num_workers=0, dataloader_pin_memory=False, weight_decay=0.0)
    args = EmoVitTrainingArguments(**{**args, **overrides})
    set_seed(args.seed)
    model = EmoVitForConditionalGeneration.from_pretrained(base)
    processor = EmoVitProcessor.from_pretrained(base)
    model.freeze_for_instruction_tuning(freeze_unused=True)
    examples, emoset_root = load_examples(DataArguments(dataset=str(data), types="categorical"))
    vision_cache = VisionCache.build(model, processor, examples, output_dir / "vision_cache") if cache else None
    eval_images = load_eval_images(emoset_root, "val", 2000) if evaluate else []
    eval_examples = categorical_eval_examples(eval_images, processor.categorical_instruction)
    trainer = EmoVitTrainer(model=model, args=args, train_dataset=InstructionDataset(examples),
                            eval_dataset=InstructionDataset(eval_examples) if eval_examples else None,
                            data_collator=EmoVitCollator(processor, augment=augment, cache=vision_cache, seed=0),
                            eval_images=eval_images, emotion_processor=processor, augment=augment)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def tensors(trainer):
    return {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}


def losses(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_checkpoint_resume_continues_exactly(tiny_dir, instructions_dir, tmp_path):
    common = dict(max_steps=4, save_strategy="steps", save_steps=2)
    straight = train(tiny_dir, instructions_dir, tmp_path / "straight", **common)
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    saved = load_file(checkpoint / TRAINABLE_WEIGHTS)
    assert saved and all(name.startswith(TRAINABLE) for name in saved)
    assert (checkpoint / "optimizer.pt").exists() and not (checkpoint / "model.safetensors").exists()

    # a fresh run that resumes the same 4-step schedule from the straight run's step-2 checkpoint
    resumed = train(tiny_dir, instructions_dir, tmp_path / "resumed", resume=str(checkpoint), **common)
    straight_tensors, resumed_tensors = tensors(straight), tensors(resumed)
    for name in straight_tensors:
        assert torch.allclose(straight_tensors[name], resumed_tensors[name], atol=1e-6), name
    assert losses(resumed)[-2:] == pytest.approx(losses(straight)[-2:], abs=1e-5)


def test_a_checkpoint_of_other_trainable_tensors_is_refused(tiny_dir, instructions_dir, tmp_path):
    train(tiny_dir, instructions_dir, tmp_path / "run", max_steps=1, save_strategy="steps", save_steps=1)
    checkpoint = tmp_path / "run" / "checkpoint-1"
    tensors_saved = load_file(checkpoint / TRAINABLE_WEIGHTS)
    from safetensors.torch import save_file

    save_file(dict(list(tensors_saved.items())[1:]), checkpoint / TRAINABLE_WEIGHTS)
    with pytest.raises(ValueError, match="resume with the same flags"):
        train(tiny_dir, instructions_dir, tmp_path / "again", max_steps=2, resume=str(checkpoint))
    (checkpoint / TRAINABLE_WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=f"has no {TRAINABLE_WEIGHTS}"):
        train(tiny_dir, instructions_dir, tmp_path / "again", max_steps=2, resume=str(checkpoint))


def test_augment_resume_is_exact(tiny_dir, instructions_dir, tmp_path):
    # 24 examples, batch 8: 3 steps per epoch, so the resumed half crosses into the second epoch.
    common = dict(max_steps=4, save_strategy="steps", save_steps=2, augment=True)
    straight = train(tiny_dir, instructions_dir, tmp_path / "straight", **common)
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    resumed = train(tiny_dir, instructions_dir, tmp_path / "resumed", resume=str(checkpoint), **common)
    straight_tensors, resumed_tensors = tensors(straight), tensors(resumed)
    for name in straight_tensors:
        assert torch.equal(straight_tensors[name], resumed_tensors[name]), \
            (name, (straight_tensors[name] - resumed_tensors[name]).abs().max())
    assert losses(resumed)[-2:] == losses(straight)[-2:]


def test_cached_vision_features_train_like_pixels(tiny_dir, instructions_dir, tmp_path):
    pixels = train(tiny_dir, instructions_dir, tmp_path / "pixels", max_steps=3)
    cached = train(tiny_dir, instructions_dir, tmp_path / "cached", max_steps=3, cache=True)
    assert len(list((tmp_path / "cached" / "vision_cache").glob("*/features.npy"))) == 1
    assert losses(pixels) == pytest.approx(losses(cached), abs=1e-5)
    pixel_tensors, cached_tensors = tensors(pixels), tensors(cached)
    for name in pixel_tensors:
        assert torch.allclose(pixel_tensors[name], cached_tensors[name], atol=1e-5), name


def test_vision_cache_is_rebuilt_for_another_base_model(tiny_dir, instructions_dir, tmp_path):
    from modeling_emovit.tiny import save_tiny_emovit

    other_base = tmp_path / "other-base"
    save_tiny_emovit(other_base, seed=1)
    train(tiny_dir, instructions_dir, tmp_path / "reused", max_steps=2, cache=True)
    reused = train(other_base, instructions_dir, tmp_path / "reused", max_steps=2, cache=True)  # same run folder
    fresh = train(other_base, instructions_dir, tmp_path / "fresh", max_steps=2, cache=True)
    assert losses(reused) == pytest.approx(losses(fresh), abs=1e-6)
    reused_tensors, fresh_tensors = tensors(reused), tensors(fresh)
    for name in fresh_tensors:
        assert torch.allclose(reused_tensors[name], fresh_tensors[name], atol=1e-6), name
    assert len(list((tmp_path / "reused" / "vision_cache").iterdir())) == 1  # the stale entry is gone


def test_evaluation_loss_comes_from_the_trainer(tiny_dir, instructions_dir, tmp_path):
    """With evaluation on, the Trainer's own prediction step reports the loss of the categorical answers of the
    evaluation images (it finds `labels` in the model's forward signature), beside emotion accuracy."""
    trainer = train(tiny_dir, instructions_dir, tmp_path / "run", max_steps=2, evaluate=True, eval_steps=2)
    history = trainer.state.log_history
    evaluations = [entry for entry in history if "eval_loss" in entry]
    assert evaluations and all(0 < entry["eval_loss"] < 50 for entry in evaluations)
    assert any("eval_accuracy" in entry for entry in history)
    assert 0.0 <= trainer.evaluate()["eval_accuracy"] <= 1.0
