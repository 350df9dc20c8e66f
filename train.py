"""Instruction-tune EmoVIT: only the Q-Former side (Q-Former, query tokens, language projection, ViT post-LayerNorm)
learns; the ViT and the language model stay frozen.

Offline default, no flags (tried on 2 CPU cores, no GPU): builds a synthetic EmoSet sample, its instruction data
(template backend), a tiny random EmoVIT, trains it, and evaluates it on the held-out split:

    accelerate launch train.py

EmoVIT-Vicuna-7B on EmoSet (the paper's setting; instruction data from `python -m dataset_builder build`; not yet
run at this scale: no GPU has been available to this project so far, see bench/gpu_check.sh):

    accelerate launch train.py --model_name_or_path Salesforce/instructblip-vicuna-7b \
        --dataset data/emovit-instructions --curriculum categorical,conversation,reasoning \
        --per_device_train_batch_size 8 --bf16 --cache_vision_features --output_dir runs/emovit-vicuna-7b

Several GPUs: `accelerate launch --config_file configs/ddp.yaml train.py ...` (or fsdp.yaml, deepspeed_zero2.yaml).
All flags can also come from one JSON or YAML file: `accelerate launch train.py configs/emovit_vicuna7b.yaml`.
"""

import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset, Sampler
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor, format_answer
from modeling_emovit.io_utils import atomic_write, atomic_write_text, open_image


logger = logging.getLogger("train")

INSTRUCTION_TYPES = ("categorical", "conversation", "reasoning")
TRAINABLE_WEIGHTS = "trainable_weights.safetensors"
# What `accelerate launch train.py` with no flags runs: hyperparameters for the tiny model on CPU. The official
# recipe (lr 1e-5, batch 1, 4 epochs, warmup) suits a pretrained 7B model, not a random tiny one.
OFFLINE_DEFAULT_ARGS = [
    "--output_dir", "runs/emovit-offline",
    "--types", "categorical",
    "--cache_vision_features",
    "--learning_rate", "1e-3",
    "--weight_decay", "0.0",
    "--per_device_train_batch_size", "32",
    "--max_steps", "1500",
    "--warmup_ratio", "0.05",
    "--logging_steps", "50",
    "--eval_strategy", "steps",
    "--eval_steps", "500",
    "--save_strategy", "no",
    "--dataloader_num_workers", "0",
    "--report_to", "none",
]


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "EmoVIT or Salesforce InstructBLIP folder/Hub id. None: the offline tiny base."}
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the language model's attention (0 = no LoRA)."})
    lora_alpha: int = field(default=16)
    lora_dropout: float = field(default=0.05)


@dataclass
class DataArguments:
    dataset: str | None = field(
        default=None,
        metadata={"help": "A `dataset_builder` output folder, a LLaVA-style JSON (with --image_root) or a Hub dataset "
                          "id. None: the offline synthetic default."},
    )
    image_root: str | None = field(default=None, metadata={"help": "Folder the LLaVA JSON's image paths start from."})
    official_type: str = field(
        default="auto", metadata={"help": "Instruction type of a LLaVA-style JSON's entries (categorical, conversation "
                                          "or reasoning; 'auto' accepts categorical answers only)."}
    )
    dataset_config: str = field(default="all", metadata={"help": "Hub dataset configuration to train on."})
    types: str = field(default="categorical,conversation,reasoning",
                       metadata={"help": "Instruction types to train on, comma-separated."})
    curriculum: str = field(
        default="mixed",
        metadata={"help": "'mixed' shuffles all types together; a comma-separated type order (e.g. "
                          "categorical,conversation,reasoning) visits the types in that order in every epoch."},
    )
    augment: bool = field(default=False,
                          metadata={"help": "Random resized crop (scale 0.5-1) and horizontal flip, as LAVIS trains."})
    cache_vision_features: bool = field(
        default=False, metadata={"help": "Run the frozen ViT once per image and reuse its output every epoch."}
    )
    max_instruction_length: int = field(default=128)
    max_answer_length: int = field(default=256)
    eval_dataset: str | None = field(
        default=None, metadata={"help": "EmoSet root or ImageFolder for accuracy during training (default: the "
                                        "EmoSet root the instruction data was built from)."}
    )
    eval_split: str = field(default="val")
    eval_max_images: int = field(default=2000, metadata={"help": "Cap on images classified per evaluation."})
    test_split: str | None = field(
        default="test", metadata={"help": "After training, run evaluate.py on this split of the eval dataset "
                                          "('none' to skip)."}
    )
    offline_images_per_class: int = field(default=100, metadata={"help": "Synthetic sample size (offline default)."})


@dataclass
class EmoVitTrainingArguments(TrainingArguments):
    # Defaults of the official EmoVIT recipe (FT.yaml); warmup as a ratio instead of 30,000 steps.
    output_dir: str = field(default="runs/emovit")
    learning_rate: float = field(default=1e-5)
    lr_scheduler_type: str = field(default="cosine")
    weight_decay: float = field(default=0.005)
    num_train_epochs: float = field(default=4.0)
    warmup_ratio: float = field(default=0.03)
    per_device_train_batch_size: int = field(default=1)
    seed: int = field(default=42)
    remove_unused_columns: bool = field(default=False)
    ddp_find_unused_parameters: bool = field(default=False)
    save_only_model: bool = field(default=False)


# ---------------------------------------------------------------------------------------------------- data


def load_examples(data_args) -> tuple[list[dict], str | None]:
    """Training examples `{image, image_key, instruction, answer, type, emotion}` and, when known, the EmoSet root
    the data came from."""
    types = tuple(t.strip() for t in data_args.types.split(",") if t.strip())
    unknown = [t for t in types if t not in INSTRUCTION_TYPES]
    if unknown:
        raise ValueError(f"--types {data_args.types!r} names {unknown}; choose from {list(INSTRUCTION_TYPES)}.")
    source = data_args.dataset
    path = Path(source)
    emoset_root = None
    if path.is_dir() and (path / "instructions.jsonl").is_file():
        from dataset_builder.records import load_records, read_summary

        records = load_records(path, types=types)
        emoset_root = read_summary(path).get("emoset_root")
    elif path.suffix == ".json" and path.is_file():
        from dataset_builder.emoset import resolve_inside_root
        from dataset_builder.records import import_official_json

        if data_args.image_root is None:
            raise ValueError(f"--dataset {source} is a LLaVA-style JSON: pass --image_root, the folder its image "
                             "paths start from.")
        records, skipped = import_official_json(path, kind=data_args.official_type, root=data_args.image_root)
        for skip in skipped:
            logger.warning(f"skipped {skip.item}: {skip.reason}")
        if skipped:
            print(f"skipped {len(skipped)} entries of {source} (reasons above)")
        for record in records:
            record["image"] = str(resolve_inside_root(data_args.image_root, record["image"]))
        records = [r for r in records if r["type"] in types]
    elif path.exists():
        raise ValueError(f"--dataset {source} is neither a dataset_builder output folder (with instructions.jsonl) "
                         "nor a LLaVA-style .json file.")
    else:
        from datasets import load_dataset

        from dataset_builder.records import training_record_problem

        hub = load_dataset(source, data_args.dataset_config, split="train")
        emotion_names = getattr(hub.features.get("emotion"), "names", None)
        records = []
        for number, row in enumerate(hub):
            emotion = row.get("emotion")
            if emotion_names and emotion is not None:
                emotion = emotion_names[emotion]
            record = {**row, "emotion": emotion}
            problem = training_record_problem(record)
            if problem is not None:
                raise ValueError(f"--dataset {source} ({data_args.dataset_config}), train row {number} "
                                 f"(id {row.get('id')!r}): {problem}. Fix the dataset.")
            if record["type"] in types:
                records.append(record)
    examples = []
    for record in records:
        turns = record["conversations"]
        if isinstance(record["image"], str):
            image_key = record["image"]
        else:  # a decoded Hub image: record ids are "<type>/<image id>/<pair>"
            image_key = record.get("image_id") or record["id"].split("/")[1]
        examples.append({
            "image": record["image"],
            "image_key": image_key,
            "instruction": turns[0]["value"],
            "answer": turns[1]["value"],
            "type": record["type"],
            "emotion": record["emotion"],
        })
    if not examples:
        raise ValueError(f"--dataset {source} holds no records of the types {list(types)}.")
    # A missing image would otherwise stop training at whatever step first draws it.
    missing = sorted({e["image"] for e in examples if isinstance(e["image"], str) and not os.path.isfile(e["image"])})
    if missing:
        raise FileNotFoundError(
            f"--dataset {source}: {len(missing)} training image(s) do not exist, e.g. {missing[:3]}. Restore them, or "
            "rebuild the instruction data without them."
        )
    return examples, emoset_root


class InstructionDataset(Dataset):
    """The examples; an `(epoch, index)` key (from `AugmentationKeySampler`) also tags the example with it."""

    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            epoch, index = key
            return {**self.examples[index], "augment_key": (epoch, index)}
        return self.examples[key]


class AugmentationKeySampler(Sampler):
    """Yields `(epoch, index)` for each index of `sampler`, so that the collator can draw each example's random crop
    and flip from (seed, epoch, index) alone. The augmentation then depends on nothing a checkpoint does not already
    restore (the epoch and the sample order), so a resumed run augments exactly as an uninterrupted one; it also
    holds with several loader workers and with the batches the loader prepares ahead of the step being saved, which
    a generator carried from batch to batch would not."""

    def __init__(self, sampler):
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch):
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        for index in self.sampler:
            yield (self.epoch, index)


class CurriculumSampler(Sampler):
    """Each epoch: every example of the first type (shuffled), then of the second, and so on (EmoVIT's progressive
    order: categorical before conversation before reasoning). The shuffle is seeded by seed + epoch."""

    def __init__(self, types: list[str], order: list[str], seed: int):
        self.groups = [[i for i, t in enumerate(types) if t == stage] for stage in order]
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return sum(len(group) for group in self.groups)

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        for group in self.groups:
            yield from rng.sample(group, len(group))


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


class VisionCache:
    """The frozen ViT's output before its (trained) post-LayerNorm, one row per image, in a .npy file that is
    memory-mapped (EVA ViT-g gives 257 x 1408 values per image: the cache can exceed RAM).

    The features depend on more than the image list, so an entry is stored under a fingerprint of everything they
    depend on (`cache_key`): the vision tower's weights and configuration, their dtype, the image processor's
    settings (size, normalisation) and each image's identity (file size and modification time, or the pixels of an
    already decoded image). An entry is `<folder>/<fingerprint>/` with `features.npy` and `key.json`; it is written
    into a temporary folder and renamed into place in one step, so a reader finds a whole entry or none, and a run
    with another base model, dtype, image size or changed image files builds a new one instead of reusing stale
    features. Entries with other fingerprints are removed once a new one is built (each can be very large).
    """

    def __init__(self, entry: Path, keys: list[str]):
        self.index = {key: row for row, key in enumerate(keys)}
        self.array = np.load(entry / "features.npy", mmap_mode="r")

    def __getitem__(self, key) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[self.index[key]]))

    @staticmethod
    def cache_key(model, processor, images: dict) -> dict:
        """Everything the cached features depend on; `images` maps image keys to paths or decoded PIL images."""
        weights = hashlib.sha256()
        tower = {**{f"embeddings.{n}": t for n, t in model.vision_model.embeddings.state_dict().items()},
                 **{f"encoder.{n}": t for n, t in model.vision_model.encoder.state_dict().items()}}
        for name in sorted(tower):
            tensor = tower[name].detach().cpu().contiguous()
            weights.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            weights.update(tensor.reshape(-1).view(torch.uint8).numpy())
        identities = []
        for key, image in images.items():
            if isinstance(image, (str, os.PathLike)):
                stat = os.stat(image)
                identities.append([key, f"size={stat.st_size} mtime_ns={stat.st_mtime_ns}"])
            else:
                pixels = hashlib.sha256(image.tobytes()).hexdigest()
                identities.append([key, f"{image.mode} {image.size} sha256={pixels}"])
        return {
            "vision_weights_sha256": weights.hexdigest(),
            "vision_config": json.loads(model.config.vision_config.to_json_string()),
            "dtype": str(model.vision_model.embeddings.patch_embedding.weight.dtype),
            "image_processor": json.loads(processor.image_processor.to_json_string()),
            "images": identities,
        }

    @classmethod
    def build(cls, model, processor, examples, folder: Path, batch_size: int = 64):
        images = {}
        for example in examples:
            images.setdefault(example["image_key"], example["image"])
        keys = list(images)
        key = json.loads(json.dumps(cls.cache_key(model, processor, images)))  # as it reads back from key.json
        fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        folder = Path(folder)
        entry = folder / fingerprint
        try:
            if json.loads((entry / "key.json").read_text()) == key:
                cache = cls(entry, keys)  # computed by an earlier run or by the main process
                if cache.array.shape[0] == len(keys):
                    return cache
        except (OSError, ValueError):
            pass  # no entry yet, or a damaged one: build it
        model.eval()
        dtype = model.vision_model.embeddings.patch_embedding.weight.dtype
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".building-"))
        try:
            store = None
            from tqdm.auto import tqdm

            with torch.inference_mode():
                for start in tqdm(range(0, len(keys), batch_size), desc="caching vision features"):
                    batch = [open_image(images[k], source=k) for k in keys[start : start + batch_size]]
                    pixels = processor.preprocess_images(batch).to(model.device, dtype)
                    hidden = model.encode_vision(pixels).float().cpu().numpy()
                    if store is None:
                        store = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=np.float32,
                                                          shape=(len(keys), *hidden.shape[1:]))
                    store[start : start + len(batch)] = hidden
            store.flush()
            del store
            (tmp / "key.json").write_text(json.dumps(key))
            if entry.exists():
                shutil.rmtree(entry)  # an entry without a matching key.json: left by an interrupted removal
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for stale in folder.iterdir():
            if stale != entry and stale.is_dir() and not stale.name.startswith(".building-"):
                shutil.rmtree(stale, ignore_errors=True)
        return cls(entry, keys)


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


# ---------------------------------------------------------------------------------------------------- trainer


class EmoVitTrainer(Trainer):
    """Trainer that checkpoints only the trainable tensors (plus optimizer state), follows a curriculum order and
    reports emotion-classification accuracy when it evaluates."""

    def __init__(self, *args, curriculum=None, eval_images=None, emotion_processor=None, augment=False, **kwargs):
        super().__init__(*args, **kwargs)
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
        model.config.save_pretrained(output_dir)

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


# ---------------------------------------------------------------------------------------------------- helpers


def build_offline_default(work_dir: Path, images_per_class: int, seed: int) -> tuple[str, str]:
    """Synthetic EmoSet sample -> template instruction data -> tiny EmoVIT; returns (dataset, model) paths.
    Each step is skipped when its output exists, so a rerun starts training at once."""
    from dataset_builder.build import BuildOptions, run_build
    from dataset_builder.synthetic import write_synthetic_emoset

    from modeling_emovit.tiny import save_tiny_emovit

    emoset, instructions, base = work_dir / "emoset-synthetic", work_dir / "instructions", work_dir / "tiny-base"
    if not (emoset / "info.json").is_file():
        print(f"[offline default] drawing a synthetic EmoSet sample into {emoset}")
        write_synthetic_emoset(emoset, images_per_class=images_per_class, seed=seed)
    if not (instructions / "summary.json").is_file():
        print(f"[offline default] writing template instruction data into {instructions}")
        run_build(BuildOptions(emoset_root=str(emoset), output_dir=str(instructions), llm_backend="template",
                               captioner="none", seed=seed, show_progress=False))
    if not (base / "config.json").is_file():
        print(f"[offline default] building the tiny EmoVIT base model in {base}")
        save_tiny_emovit(base, seed=seed)
    return str(instructions), str(base)


def plot_loss(log_history, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    if not points:
        return False
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(*zip(*points))
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)
    return True


def write_model_card(output_dir: Path, model, model_args, data_args, training_args, counts, data_summary, results):
    rows = "\n".join(f"| {k} | {v} |" for k, v in results.items())
    types = ", ".join(f"{t}: {n}" for t, n in data_summary.items())
    card = f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [emovit, instructblip, emotion-recognition]
---

# EmoVIT: {output_dir.name}

Visual emotion instruction tuning (EmoVIT, CVPR 2024) of `{model_args.model_name_or_path}` with this project's
`train.py`. Labels: {", ".join(model.config.emotion_labels)}.

## Use

```python
import modeling_emovit  # or trust_remote_code=True below
from transformers import AutoModelForImageTextToText, AutoProcessor
model = AutoModelForImageTextToText.from_pretrained("{output_dir.name}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{output_dir.name}", trust_remote_code=True)
print(model.classify([image], processor, method="score").labels)
```

## Data

`{data_args.dataset}`; training examples per type: {types}; curriculum: `{data_args.curriculum}`;
augmentation: {data_args.augment}; cached vision features: {data_args.cache_vision_features}.

## Training

Trainable (Q-Former side{" + LoRA" if model_args.lora_r else ""}): {counts["trainable"]:,} of {counts["total"]:,} parameters.

| hyperparameter | value |
|---|---|
| learning rate | {training_args.learning_rate} ({getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)}, warmup ratio {training_args.warmup_ratio}) |
| weight decay | {training_args.weight_decay} |
| batch | {training_args.per_device_train_batch_size} per device x {training_args.world_size} device(s) x {training_args.gradient_accumulation_steps} accumulation |
| length | {"max steps " + str(training_args.max_steps) if training_args.max_steps > 0 else f"{training_args.num_train_epochs} epochs"} |
| seed | {training_args.seed} |
| precision | {"bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"} |

![training loss](loss_curve.png)

## Results

| metric | value |
|---|---|
{rows}
"""
    atomic_write_text(output_dir / "README.md", card)


# ---------------------------------------------------------------------------------------------------- main


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    offline = not any(a.split("=")[0] in ("--model_name_or_path", "--dataset") for a in argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, EmoVitTrainingArguments))
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        load = parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file
        model_args, data_args, training_args = load(os.path.abspath(argv[0]))
        offline = model_args.model_name_or_path is None and data_args.dataset is None
    else:
        # Later flags win, so anything given on the command line overrides the offline defaults.
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(
            args=(OFFLINE_DEFAULT_ARGS + argv) if offline else argv
        )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        handlers=[logging.StreamHandler(sys.stdout)])
    if data_args.augment and data_args.cache_vision_features:
        raise ValueError("--augment and --cache_vision_features exclude each other: cached features are computed "
                         "once per image, so no random crop or flip could reach them. Drop one of the two flags.")
    if training_args.load_best_model_at_end:
        raise ValueError("--load_best_model_at_end is not supported: checkpoints hold only the trainable tensors.")
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False  # nothing to pin for; torch warns on every loader
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir)

    # ---- offline default: make the data and the base model
    if offline:
        with training_args.main_process_first(desc="offline default data"):
            data_args.dataset, model_args.model_name_or_path = build_offline_default(
                output_dir / "offline-inputs", data_args.offline_images_per_class, training_args.seed)

    # ---- model
    dtype = torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else torch.float32
    model = EmoVitForConditionalGeneration.from_pretrained(model_args.model_name_or_path)
    processor = EmoVitProcessor.from_pretrained(model_args.model_name_or_path,
                                                emotion_labels=model.config.emotion_labels)
    model.check_processor(processor)
    if dtype != torch.float32:
        model.cast_frozen_towers(dtype)
    # The last Q-Former layer's instruction feed-forward block gets a zero gradient by construction; freezing it
    # changes no loss and lets DDP run without find_unused_parameters.
    counts = model.freeze_for_instruction_tuning(freeze_unused=True)
    if model_args.lora_r > 0:
        counts["trainable"] = model.add_lora(model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout)
    print(f"trainable parameters: {counts['trainable']:,} of {counts['total']:,} "
          f"({100 * counts['trainable'] / counts['total']:.2f}%)")
    if training_args.gradient_checkpointing and training_args.gradient_checkpointing_kwargs is None:
        training_args.gradient_checkpointing_kwargs = {"use_reentrant": False}

    # ---- data
    examples, emoset_root = load_examples(data_args)
    unknown = sorted({e["emotion"] for e in examples} - set(model.config.emotion_labels))
    if unknown:
        raise ValueError(f"The data has emotions {unknown} that the model's labels {model.config.emotion_labels} "
                         "lack; train a model whose config.emotion_labels include them.")
    per_type = {t: sum(e["type"] == t for e in examples) for t in INSTRUCTION_TYPES if any(e["type"] == t for e in examples)}
    print(f"training examples: {len(examples):,} ({per_type})")
    curriculum = None
    if data_args.curriculum != "mixed":
        curriculum = [t.strip() for t in data_args.curriculum.split(",") if t.strip()]
        bad = [t for t in curriculum if t not in INSTRUCTION_TYPES]
        if bad or len(set(curriculum)) != len(curriculum):
            raise ValueError(f"--curriculum {data_args.curriculum!r}: use 'mixed' or an order of distinct types "
                             f"from {list(INSTRUCTION_TYPES)}.")
        left_out = sorted(set(per_type) - set(curriculum))
        if left_out:
            raise ValueError(f"--curriculum {data_args.curriculum!r} leaves out the types {left_out} that the data "
                             "holds; list them or narrow --types.")
    cache = None
    if data_args.cache_vision_features:
        output_dir.mkdir(parents=True, exist_ok=True)
        with training_args.main_process_first(desc="vision feature cache"):
            cache = VisionCache.build(model, processor, examples, output_dir / "vision_cache")
    collator = EmoVitCollator(processor, data_args.max_instruction_length, data_args.max_answer_length,
                              data_args.augment, cache, seed=training_args.seed)

    eval_root = data_args.eval_dataset or emoset_root
    eval_images = []
    if eval_root is not None and training_args.eval_strategy != "no":
        from dataset_builder.emoset import read_split

        listing = read_split(eval_root, data_args.eval_split)
        unreadable = []
        for item in listing.items[: data_args.eval_max_images]:
            try:  # decoded once here, so that a corrupt file is left out now rather than stopping the first evaluation
                open_image(item.image_path)
            except ValueError as e:
                unreadable.append(str(e))
                continue
            eval_images.append((item.image_path, item.emotion))
        print(f"evaluating accuracy on {len(eval_images)} images of {eval_root} ({data_args.eval_split})")
        if unreadable:
            print(f"left out {len(unreadable)} unreadable evaluation image(s): " + "; ".join(unreadable[:3]))
        if not eval_images:
            raise ValueError(f"None of the images of {eval_root} ({data_args.eval_split}) could be read; pass "
                             "another --eval_dataset/--eval_split, or --eval_strategy no.")
    elif training_args.eval_strategy != "no":
        training_args.eval_strategy = "no"
        print("no evaluation data (pass --eval_dataset): evaluation during training is off")
    # The evaluation loss is the categorical answer's loss on the same images (their features are never cached).
    eval_examples = [{"image": path, "image_key": f"eval:{path}", "instruction": processor.categorical_instruction,
                      "answer": format_answer(emotion), "type": "categorical", "emotion": emotion}
                     for path, emotion in eval_images]

    # ---- training
    push_to = (training_args.hub_model_id or output_dir.name) if training_args.push_to_hub else None
    training_args.push_to_hub = False  # we push the final folder ourselves, not the checkpoints
    trainer = EmoVitTrainer(
        model=model,
        args=training_args,
        train_dataset=InstructionDataset(examples),
        eval_dataset=InstructionDataset(eval_examples) if eval_examples else None,
        data_collator=collator,
        curriculum=curriculum,
        eval_images=eval_images,
        emotion_processor=processor,
        augment=data_args.augment,
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    # ---- save: a complete from_pretrained folder
    results = {"train_loss": round(train_result.training_loss, 4),
               "train_runtime_s": round(train_result.metrics.get("train_runtime", 0.0), 1)}
    if eval_images:
        results.update({k: round(v, 4) for k, v in trainer.evaluate().items() if k.endswith("accuracy")})
    if trainer.is_world_process_zero():
        if model_args.lora_r > 0:
            model.merge_lora()  # the saved folder is a plain EmoVIT
        model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        atomic_write_text(output_dir / "training_log.json", json.dumps(trainer.state.log_history, indent=1))
        plot_loss(trainer.state.log_history, output_dir / "loss_curve.png")
    metrics = None
    if data_args.test_split not in (None, "", "none") and eval_root is not None and trainer.is_world_process_zero():
        metrics = run_evaluation(output_dir, eval_root, data_args.test_split)
        results.update({f"test_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
    if trainer.is_world_process_zero():
        write_model_card(output_dir, model, model_args, data_args, training_args, counts, per_type, results)
        print(f"model: {output_dir.resolve()}")
        if metrics is not None:
            print(f"test metrics: {(output_dir / 'eval' / 'metrics.json').resolve()}")
        if push_to:
            from huggingface_hub import HfApi

            api = HfApi()
            api.create_repo(push_to, exist_ok=True)
            api.upload_folder(folder_path=str(output_dir), repo_id=push_to,
                              ignore_patterns=["checkpoint-*", "vision_cache*", "offline-inputs/*", "eval/*"])
            print(f"pushed to {push_to}")
    return results


def run_evaluation(model_dir: Path, dataset, split) -> dict:
    """Runs evaluate.py (loaded by path: a top-level `evaluate` module would shadow the library) on the saved
    model for both classification methods; returns the score metrics plus generate's accuracy/invalid rate."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("emovit_evaluate_script", Path(__file__).with_name("evaluate.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    score = script.main(["--model", str(model_dir), "--dataset", str(dataset), "--split", split, "--method", "score",
                         "--output_dir", str(model_dir / "eval")])
    generate = script.main(["--model", str(model_dir), "--dataset", str(dataset), "--split", split,
                            "--method", "generate", "--output_dir", str(model_dir / "eval-generate")])
    summary = {"accuracy_score": score["accuracy"], "macro_f1_score": score["macro_f1"],
               "accuracy_generate": generate["accuracy"], "invalid_rate_generate": generate["invalid_rate"]}
    print("held-out " + ", ".join(f"{k}={v:.4f}" for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    main()
