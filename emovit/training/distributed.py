"""How train.py finds its processes: a launch without GPUs runs on CPU, and the Trainer must see every process that
was started, or work meant to run once (the offline default's inputs, the vision-feature cache) runs in all of them
at the same time."""

import os

import torch


def launched_world_size() -> int:
    """The number of processes the launcher started (torchrun's WORLD_SIZE; 1 for a plain `python train.py`)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def has_accelerator() -> bool:
    """True when torch sees a GPU or another accelerator (torch.accelerator exists from torch 2.6)."""
    accelerator = getattr(torch, "accelerator", None)
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def use_cpu_without_accelerator() -> None:
    """With several processes and no GPU, asks accelerate for CPU training (gloo).

    `accelerate launch` with an FSDP config (or --multi_gpu) starts the processes through torchrun but does not hand
    a config's `use_cpu: true` to them; without it and without a GPU, accelerate's state says "not distributed" (one
    process) although all of them are running. Every process then draws the offline default's sample and builds the
    vision cache at once, and each trains unsharded on all the data. Must run before the arguments are parsed (the
    Trainer's state is built then)."""
    if launched_world_size() > 1 and not has_accelerator():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def check_world_size(training_args) -> None:
    """Raises when the Trainer sees fewer processes than were launched (each would train alone on all the data)."""
    launched = launched_world_size()
    if training_args.world_size != launched:
        raise RuntimeError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but the Trainer sees "
            f"{training_args.world_size} ({getattr(training_args.distributed_state, 'distributed_type', None)}). Without GPUs pass "
            "--use_cpu to train.py (or set ACCELERATE_USE_CPU=true); on GPUs check that each process sees one.")
