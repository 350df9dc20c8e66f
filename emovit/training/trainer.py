"""The Trainer of EmoVIT's instruction tuning."""

import copy
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer
from transformers.trainer import SCHEDULER_NAME

from modeling_emovit.image_utils import open_image

from .sampling import AugmentationKeySampler, CurriculumSampler


# Checkpoints hold only the tensors that train, in this file, beside the Trainer's optimizer and scheduler state.
TRAINABLE_WEIGHTS = "trainable_weights.safetensors"


class EmoVitTrainer(Trainer):
    """Trainer that checkpoints only the trainable tensors (plus optimizer state), follows a curriculum order and
    reports emotion-classification accuracy when it evaluates."""

    def __init__(self, model=None, *args, curriculum=None, eval_images=None, emotion_processor=None, augment=False,
                 **kwargs):
        # transformers refuses to train a bitsandbytes-quantised model unless peft adapters carry the training; here
        # the Q-Former side does, kept out of quantisation (emovit.quantization), so the model passes that check as
        # an unquantised one and is marked quantised again at once.
        quantized = getattr(model, "is_quantized", False)
        if quantized:
            model.is_quantized = False
        try:
            super().__init__(model, *args, **kwargs)
        finally:
            if quantized:
                model.is_quantized = True
        self.curriculum = curriculum
        self.augment = augment
        self.eval_images = eval_images or []
        self.emotion_processor = emotion_processor

    def _get_train_sampler(self, train_dataset=None):
        if self.curriculum is None:
            sampler = super()._get_train_sampler(train_dataset)
        else:
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            sampler = CurriculumSampler([e["type"] for e in dataset.examples], self.curriculum, self.args.seed)
        return AugmentationKeySampler(sampler) if self.augment else sampler

    def _save(self, output_dir=None, state_dict=None):
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        state_dict = state_dict if state_dict is not None else model.state_dict()
        tensors = {n: t.detach().cpu().contiguous() for n, t in state_dict.items() if n in trainable}
        save_file(tensors, os.path.join(output_dir, TRAINABLE_WEIGHTS), metadata={"format": "pt"})
        config = model.config
        if getattr(config, "quantization_config", None) is not None:
            # The trainable tensors are full precision; the folder's config says nothing of how the frozen towers
            # were quantised in this run.
            config = copy.deepcopy(config)
            del config.quantization_config
        config.save_pretrained(output_dir)

    def _save_optimizer_and_scheduler(self, output_dir):
        if not self.is_fsdp_enabled:
            return super()._save_optimizer_and_scheduler(output_dir)
        # Under FSDP the Trainer would also write the whole model (the frozen towers too) beside the optimizer; the
        # trainable tensors are already in TRAINABLE_WEIGHTS. The optimizer is gathered by every process.
        from accelerate.utils import save_fsdp_optimizer

        save_fsdp_optimizer(self.accelerator.state.fsdp_plugin, self.accelerator, self.optimizer, self.model,
                            output_dir)
        if self.args.should_save:
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        path = os.path.join(resume_from_checkpoint, TRAINABLE_WEIGHTS)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{resume_from_checkpoint} has no {TRAINABLE_WEIGHTS}; was it written by "
                                    "this train.py?")
        tensors = load_file(path)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        if set(tensors) != trainable:
            raise ValueError(
                f"{path} holds {len(tensors)} tensors but this run trains {len(trainable)} "
                f"(differences: {sorted(set(tensors) ^ trainable)[:10]}); resume with the same flags (e.g. --lora_r)."
            )
        if self.is_fsdp_enabled:  # the model is already sharded: each process keeps its part of each full tensor
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True, strict=False))
        else:
            model.load_state_dict(tensors, strict=False)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix) if self.eval_dataset else {}
        if self.eval_images:
            model = self.accelerator.unwrap_model(self.model)
            was_training = model.training
            model.eval()
            correct = 0
            for start in range(0, len(self.eval_images), 32):
                chunk = self.eval_images[start : start + 32]
                result = model.classify([open_image(path) for path, _ in chunk], self.emotion_processor)
                correct += sum(pred == gold for pred, (_, gold) in zip(result.labels, chunk))
            model.train(was_training)
            accuracy = {f"{metric_key_prefix}_accuracy": correct / len(self.eval_images)}
            self.log(accuracy)
            metrics.update(accuracy)
        return metrics
