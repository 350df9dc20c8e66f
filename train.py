"""Instruction-tune EmoVIT: only the Q-Former side (Q-Former, query tokens, language projection, ViT post-LayerNorm)
learns; the ViT and the language model stay frozen.

Offline default, no flags (tried on 2 CPU cores, no GPU): builds a synthetic EmoSet sample, its instruction data
(template backend), a tiny random EmoVIT, trains it, and evaluates it on the held-out split:

    accelerate launch train.py

The same miniature with an encoder-decoder language model (a tiny T5, as FlanT5) instead of the Llama:

    accelerate launch train.py --offline_language_model t5

EmoVIT-Vicuna-7B on EmoSet, the paper's setting (instruction data from `python -m dataset_builder build`):

    accelerate launch train.py --model_name_or_path Salesforce/instructblip-vicuna-7b \
        --dataset data/emovit-instructions --curriculum categorical,conversation,reasoning \
        --per_device_train_batch_size 8 --bf16 --cache_vision_features --output_dir runs/emovit-vicuna-7b

All flags from one JSON or YAML file (also configs/emovit_vicuna13b.yaml, configs/emovit_flant5xl.yaml):

    accelerate launch train.py configs/emovit_vicuna7b.yaml

A GPU with little memory: the frozen language model in 4 bits (NF4, as QLoRA), the Q-Former side in float32; the
saved folder is full precision all the same:

    accelerate launch train.py --model_name_or_path Salesforce/instructblip-vicuna-7b \
        --dataset data/emovit-instructions --quantization 4bit --bf16 --gradient_checkpointing \
        --output_dir runs/emovit-vicuna-7b-4bit

Several GPUs (or configs/fsdp.yaml, configs/deepspeed_zero2.yaml):

    accelerate launch --config_file configs/ddp.yaml train.py ...
"""

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import HfArgumentParser, set_seed

from emovit.evaluation.run import evaluate_held_out
from emovit.quantization import quantization_config, unquantized_copy
from emovit.training.arguments import (
    DataArguments,
    EmoVitTrainingArguments,
    ModelArguments,
    check_arguments,
    check_quantized_training,
    compute_dtype,
    is_offline,
    with_offline_defaults,
)
from emovit.training.card import plot_loss, push_training_folder, write_training_card
from emovit.training.collator import EmoVitCollator
from emovit.training.data import (
    InstructionDataset,
    categorical_eval_examples,
    check_emotions,
    count_types,
    load_eval_images,
    load_examples,
)
from emovit.training.distributed import check_world_size, use_cpu_without_accelerator
from emovit.training.offline import build_offline_default
from emovit.training.sampling import parse_curriculum
from emovit.training.trainer import EmoVitTrainer
from emovit.training.vision_cache import VisionCache
from emovit_utils.commands import is_argument_file, read_argument_file, run_command
from emovit_utils.files import atomic_write_text, check_output_path
from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor


def load_model(model_args: ModelArguments, training_args: EmoVitTrainingArguments):
    """The model as it trains: frozen towers in the mixed-precision dtype, or quantised with --quantization, the
    Q-Former side (and LoRA) in float32. Returns it with its parameter counts."""
    dtype = compute_dtype(training_args)
    quantization = quantization_config(model_args.quantization, dtype, for_training=True)
    # bitsandbytes quantises the weights as they reach their device, and the Trainer cannot move them after: a
    # quantised model loads straight onto this process's device.
    placement = {} if quantization is None else {"quantization_config": quantization,
                                                 "device_map": {"": training_args.device}}
    model = EmoVitForConditionalGeneration.from_pretrained(model_args.model_name_or_path, **placement)
    if dtype != torch.float32:
        model.cast_frozen_towers(dtype)  # quantised weights keep their own format
    # The last Q-Former layer's instruction feed-forward block gets a zero gradient by construction; freezing it
    # changes no loss and lets DDP run without find_unused_parameters.
    counts = model.freeze_for_instruction_tuning(freeze_unused=True)
    if quantization is not None:
        counts["total"] = model.num_parameters()  # counts each packed 4-bit tensor's values, not its bytes
    if model_args.lora_r > 0:
        counts["trainable"] = model.add_lora(model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout)
    return model, counts


def main(argv=None) -> dict:
    """Trains with the flags `argv` (default: the command line, or one JSON / YAML file); returns the results that
    go into the model card."""
    use_cpu_without_accelerator()  # before parsing: the arguments build the distributed state
    model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else list(argv))
    check_arguments(data_args, training_args)
    check_quantized_training(model_args, training_args)
    prepare_run(training_args)
    output_dir = Path(training_args.output_dir)
    offline = is_offline(model_args, data_args)
    if offline:
        with training_args.main_process_first(desc="offline default data"):
            data_args.dataset, model_args.model_name_or_path = build_offline_default(
                output_dir / "offline-inputs", data_args.offline_images_per_class,
                training_args.seed, data_args.offline_lm_steps, data_args.offline_language_model)

    # ---- model
    model, counts = load_model(model_args, training_args)
    processor = EmoVitProcessor.from_pretrained(model_args.model_name_or_path,
                                                emotion_labels=model.config.emotion_labels)
    model.check_processor(processor)
    print(f"trainable parameters: {counts['trainable']:,} of {counts['total']:,} "
          f"({100 * counts['trainable'] / counts['total']:.2f}%)")

    # ---- data
    data = load_data(model, processor, data_args, training_args)

    # ---- training
    push_to = (training_args.hub_model_id or output_dir.name) if training_args.push_to_hub else None
    training_args.push_to_hub = False  # the final folder is pushed below, not the checkpoints
    trainer = EmoVitTrainer(
        model=model,
        args=training_args,
        train_dataset=InstructionDataset(data.examples),
        eval_dataset=InstructionDataset(data.eval_examples) if data.eval_examples else None,
        data_collator=data.collator,
        curriculum=data.curriculum,
        eval_images=data.eval_images,
        emotion_processor=processor,
        augment=data_args.augment,
    )
    print(f"processes: {training_args.world_size} ({trainer.accelerator.distributed_type.value})")
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    # ---- save: a complete from_pretrained folder, its held-out metrics, card, upload
    results = {"train_loss": round(train_result.training_loss, 4),
               "train_runtime_s": round(train_result.metrics.get("train_runtime", 0.0), 1)}
    if data.eval_images:
        results.update({k: round(v, 4) for k, v in trainer.evaluate().items() if k.endswith("accuracy")})
    save_folder(trainer, model, processor, model_args, training_args)
    evaluations = evaluate_on_test_split(trainer, data_args, data.eval_root, results, model_args.quantization)
    if trainer.is_world_process_zero():
        write_training_card(output_dir, model, model_args, data_args, training_args, counts,
                            data.type_counts, results, evaluations, offline)
        print(f"model: {output_dir.resolve()}")
    # Every process closes the process group once all are done: a process that exits with the group open can abort
    # at exit ("terminate called without an active exception") while gloo's threads still hold its last work.
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    if push_to and trainer.is_world_process_zero():
        push_training_folder(training_args.output_dir, push_to)
        print(f"pushed to {push_to}")
    return results


def prepare_run(training_args: EmoVitTrainingArguments) -> None:
    """Settings that follow from the machine, the seed, and the check that the Trainer sees every launched process
    (or the work below that runs once would run in each)."""
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False  # nothing to pin for; torch warns on every loader
    if training_args.gradient_checkpointing and training_args.gradient_checkpointing_kwargs is None:
        training_args.gradient_checkpointing_kwargs = {"use_reentrant": False}
    set_seed(training_args.seed)
    check_world_size(training_args)


@dataclass
class TrainingData:
    examples: list
    type_counts: dict
    curriculum: list | None
    collator: EmoVitCollator
    eval_root: str | None  # the EmoSet-shaped folder held-out images come from
    eval_images: list
    eval_examples: list


def load_data(model, processor, data_args: DataArguments, training_args: EmoVitTrainingArguments) -> TrainingData:
    """The instruction examples, the curriculum, the collator (with the vision-feature cache when asked) and the
    evaluation images; the output folder is checked against the evaluation data before any training."""
    output_dir = Path(training_args.output_dir)
    examples, emoset_root = load_examples(data_args)
    check_emotions(examples, model.config.emotion_labels)
    type_counts = count_types(examples)
    print(f"training examples: {len(examples):,} ({type_counts})")
    curriculum = parse_curriculum(data_args.curriculum, type_counts)
    cache = None
    if data_args.cache_vision_features:
        output_dir.mkdir(parents=True, exist_ok=True)
        cache = VisionCache.build(model, processor, examples, output_dir / "vision_cache")  # each process its share
    collator = EmoVitCollator(processor, data_args.max_instruction_length, data_args.max_answer_length,
                              data_args.augment, cache, seed=training_args.seed)
    eval_root = data_args.eval_dataset or emoset_root
    if eval_root is not None:  # the held-out evaluation writes into output_dir: checked now, not after training
        check_output_path("--output_dir", output_dir, [eval_root], read_folders=[eval_root], folder=True)
    eval_images = []
    if training_args.eval_strategy != "no":
        if eval_root is None:
            training_args.eval_strategy = "no"
            print("no evaluation data (pass --eval_dataset): evaluation during training is off")
        else:
            eval_images = load_eval_images(eval_root, data_args.eval_split, data_args.eval_max_images)
    # The evaluation loss is the categorical answer's loss on the same images (their features are never cached).
    eval_examples = categorical_eval_examples(eval_images, processor.categorical_instruction)
    return TrainingData(examples, type_counts, curriculum, collator, eval_root, eval_images, eval_examples)


def save_folder(trainer, model, processor, model_args: ModelArguments,
                training_args: EmoVitTrainingArguments) -> None:
    """The main process writes a complete from_pretrained folder with its training log and loss curve."""
    output_dir = Path(training_args.output_dir)
    # Under FSDP each process holds a shard of every weight: all of them gather the full weights, and the main
    # process saves them through an unsharded copy of the model (the sharded one cannot be saved or merged).
    full_weights = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if not trainer.is_world_process_zero():
        return
    if full_weights is not None:
        model, _ = load_model(model_args, training_args)
        model.load_state_dict(full_weights)
    elif model_args.quantization is not None:
        model = unquantized_copy(model, model_args.model_name_or_path)  # a full-precision folder, not bitsandbytes'
    if model_args.lora_r > 0:
        model.merge_lora()  # the saved folder is a plain EmoVIT
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    atomic_write_text(output_dir / "training_log.json", json.dumps(trainer.state.log_history, indent=1))
    plot_loss(trainer.state.log_history, output_dir / "loss_curve.png")


def evaluate_on_test_split(trainer, data_args: DataArguments, eval_root: str | None, results: dict,
                           quantization: str | None = None) -> list[dict]:
    """Evaluates the saved folder on the held-out split (every process its share), loaded with `quantization` as it
    trained (so it fits where it trained), and adds the numbers to `results`; returns the evaluations' metrics.json
    contents for the card (on the main process)."""
    if data_args.test_split in (None, "", "none") or eval_root is None:
        return []
    output_dir = Path(trainer.args.output_dir)
    # Every process of the launch takes its share of the held-out images (the evaluation gathers them), once the
    # main process has saved the folder they all load.
    trainer.accelerator.wait_for_everyone()
    metrics = evaluate_held_out(output_dir, eval_root, data_args.test_split, data_args.test_reasoning,
                                data_args.dataset if Path(data_args.dataset, "summary.json").is_file() else None,
                                quantization)
    results.update({f"test_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
    if not trainer.is_world_process_zero():
        return []
    print("held-out " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if v is not None))
    if data_args.test_reasoning:
        print(f"reasoning metrics: {(output_dir / 'eval-reasoning' / 'metrics.json').resolve()}")
    print(f"test metrics: {(output_dir / 'eval' / 'metrics.json').resolve()}")
    return [json.loads((output_dir / folder / "metrics.json").read_text()) for folder in ("eval", "eval-generate")]


def parse_arguments(argv: list[str]):
    """The three argument dataclasses from flags, or from one JSON / YAML file."""
    parser = HfArgumentParser((ModelArguments, DataArguments, EmoVitTrainingArguments))
    if is_argument_file(argv):
        return read_argument_file(parser, argv[0], "train.py")
    # with neither --model_name_or_path nor --dataset, the offline default's flags go first
    return parser.parse_args_into_dataclasses(args=with_offline_defaults(argv))


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        handlers=[logging.StreamHandler(sys.stdout)])
    run_command("train.py", main)
