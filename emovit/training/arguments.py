"""The command-line arguments of train.py: three dataclasses for `HfArgumentParser`, the checks that span them, and
the flags of the offline default."""

import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments
from transformers.utils import strtobool

from emovit.quantization import QUANTIZATIONS, check_quantization
from modeling_emovit.tiny import TINY_LANGUAGE_MODELS


# What `accelerate launch train.py` with no flags runs: EmoVIT's progressive recipe over all three instruction types,
# with hyperparameters for the tiny model on CPU. The official ones (lr 1e-5, batch 1, 4 epochs, warmup) suit a
# pretrained 7B model, not a tiny one whose Q-Former starts from scratch.
OFFLINE_DEFAULT_ARGS = [
    "--output_dir", "runs/emovit-offline",
    "--types", "categorical,conversation,reasoning",
    "--curriculum", "categorical,conversation,reasoning",
    "--cache_vision_features",
    "--learning_rate", "1e-3",
    "--weight_decay", "0.0",
    "--per_device_train_batch_size", "32",
    "--max_steps", "1600",
    "--warmup_ratio", "0.05",
    "--logging_steps", "100",
    "--eval_strategy", "steps",
    "--eval_steps", "400",
    "--test_reasoning",
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
    quantization: str | None = field(
        default=None,
        metadata={"help": f"{list(QUANTIZATIONS)}: load the frozen language model quantised with bitsandbytes (4bit: "
                          "NF4, the ViT in the run's dtype; 8bit: LLM.int8(), the ViT too), as QLoRA does; the "
                          "Q-Former side trains in float32 and the saved folder is full precision."},
    )

    def __post_init__(self):
        check_quantization(self.quantization)


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
    test_reasoning: bool = field(
        default=False, metadata={"help": "Also score explanations on the test split (evaluate.py --task reasoning; "
                                         "needs an EmoSet root for the attributes)."}
    )
    offline_images_per_class: int = field(default=150, metadata={"help": "Synthetic sample size (offline default)."})
    offline_lm_steps: int = field(
        default=400, metadata={"help": "Pretraining steps of the tiny base's language model (offline default)."}
    )
    offline_language_model: str = field(
        default="llama", metadata={"help": "The tiny base's language model (offline default): 'llama' (decoder-only, "
                                           "as Vicuna) or 't5' (encoder-decoder, as FlanT5)."}
    )


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



def with_offline_defaults(argv: list[str]) -> list[str]:
    """`argv` behind the offline default's flags when it names neither --model_name_or_path nor --dataset (later
    flags win, so anything given overrides a default); `argv` unchanged otherwise."""
    named = {arg.split("=")[0] for arg in argv}
    if named & {"--model_name_or_path", "--dataset"}:
        return list(argv)
    return OFFLINE_DEFAULT_ARGS + list(argv)


def is_offline(model_args: ModelArguments, data_args: DataArguments) -> bool:
    """True when neither a model nor a dataset was given: train.py then builds both (see `build_offline_default`)."""
    return model_args.model_name_or_path is None and data_args.dataset is None


def check_arguments(data_args: DataArguments, training_args: EmoVitTrainingArguments) -> None:
    """Raises on flag combinations this training cannot honour."""
    if data_args.augment and data_args.cache_vision_features:
        raise ValueError("--augment and --cache_vision_features exclude each other: cached features are computed "
                         "once per image, so no random crop or flip could reach them. Drop one of the two flags.")
    if data_args.offline_language_model not in TINY_LANGUAGE_MODELS:
        raise ValueError(f"--offline_language_model {data_args.offline_language_model!r} is not a tiny base's language "
                         f"model; use one of {list(TINY_LANGUAGE_MODELS)} (llama: decoder-only, as Vicuna; t5: "
                         "encoder-decoder, as FlanT5).")
    if training_args.load_best_model_at_end:
        raise ValueError("--load_best_model_at_end is not supported: checkpoints hold only the trainable tensors.")


def check_quantized_training(model_args: ModelArguments, training_args: EmoVitTrainingArguments) -> None:
    """Raises when --quantization meets a launch that shards the model: FSDP and DeepSpeed split flat float tensors
    across processes, and bitsandbytes' packed weights are not that."""
    if model_args.quantization is None:
        return
    for sharding, flag, config in (("FSDP", training_args.fsdp, "configs/fsdp.yaml"),
                                   ("DeepSpeed", training_args.deepspeed, "configs/deepspeed_zero2.yaml")):
        # Set by train.py's own flag, or by `accelerate launch --config_file`, which tells its processes through the
        # environment.
        if flag or strtobool(os.environ.get(f"ACCELERATE_USE_{sharding.upper()}", "false")):
            raise ValueError(f"--quantization {model_args.quantization} cannot train under {sharding} (as "
                             f"{config} launches it): it does not shard bitsandbytes' quantised weights. Launch "
                             "with one process or with DDP (configs/ddp.yaml), where each GPU holds the whole "
                             "quantised model, or leave --quantization out.")


def compute_dtype(training_args: TrainingArguments) -> torch.dtype:
    """The dtype of the frozen towers: bfloat16 with --bf16, float16 with --fp16, else float32."""
    return torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else torch.float32
