"""emovit.training.distributed, and train.py launched on two CPU processes (gloo): sharded by FSDP-2 with
configs/fsdp_cpu.yaml's settings, and data parallel with --multi_gpu. Both train the same weights as one process with
the same global batch, and the offline default's shared inputs are built once, whatever the launch."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from emovit.training.distributed import check_world_size, launched_world_size, use_cpu_without_accelerator
from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor


REPO = Path(__file__).resolve().parents[1]

# float32 on CPU, plain SGD without clipping: an update is linear in the gradient, so the two-process runs differ from
# one process only by summing the same per-token losses in another order (two halves of the batch, then a reduction),
# a few float32 rounding steps (measured 1.2e-7 for both launches). A doubled or halved gradient, a lost shard or
# gradients left unsynchronised move a weight by a sizeable part of the run's whole movement (> 0.1).
TOLERANCE = 1e-5

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def accelerate(*launch_flags):
    return [sys.executable, "-m", "accelerate.commands.launch", *launch_flags, "--main_process_port",
            str(free_port()), "train.py"]


def fsdp_cpu():
    return accelerate("--config_file", "configs/fsdp_cpu.yaml")


def ddp_cpu():
    return accelerate("--multi_gpu", "--num_processes", "2")


# accelerate applies FSDP only over GPUs (and other accelerators): with configs/fsdp_cpu.yaml on CPU its processes
# train as data parallel (MULTI_CPU). To check the sharded training itself, this launcher makes accelerate's one
# decision for it (the distributed type, FSDP with the config's plugin, as it is on GPUs) and runs train.py as it is:
# accelerate's FSDP-2 preparation (fully_shard per layer the config names, then the root), the Trainer's FSDP paths
# and train.py's gathering save are the real ones. It reports how the trainable weights were split.
FSDP_ON_CPU = """
import json, runpy, sys
import accelerate.accelerator
import accelerate.state
from accelerate.utils import DistributedType

init, prepare, plugins = accelerate.state.AcceleratorState.__init__, accelerate.accelerator.fsdp2_prepare_model, []

def init_with_fsdp(self, *args, fsdp_plugin=None, **kwargs):
    init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    plugins.extend([fsdp_plugin] if fsdp_plugin is not None else [])
    if plugins and self.distributed_type == DistributedType.MULTI_CPU:  # also when the Trainer rebuilds the state
        self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, plugins[0]
        if self._mixed_precision != "no":  # as accelerate does on GPUs: --bf16 becomes FSDP's mixed-precision policy
            self.fsdp_plugin.set_mixed_precision(self._mixed_precision)

def reporting_prepare(accelerator, model):
    model = prepare(accelerator, model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    print("SHARDS " + json.dumps({"dtensors": sum(type(p).__name__ == "DTensor" for p in trainable),
                                  "trainable": len(trainable), "full": sum(p.numel() for p in trainable),
                                  "local": sum(p.to_local().numel() for p in trainable)}), flush=True)
    return model

accelerate.state.AcceleratorState.__init__ = init_with_fsdp
accelerate.accelerator.fsdp2_prepare_model = reporting_prepare
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def fsdp_sharded_cpu(tmp_path):
    (tmp_path / "fsdp_on_cpu.py").write_text(FSDP_ON_CPU)
    return [*fsdp_cpu()[:-1], str(tmp_path / "fsdp_on_cpu.py")]


# The same for configs/deepspeed_zero2.yaml: accelerate gives DeepSpeed no process group without GPUs, so this one
# gives it gloo on the CPU; DeepSpeed (its CPU accelerator), its ZeRO-2 optimizer and the Trainer's DeepSpeed paths
# are the real ones. ACCELERATE_USE_CPU=false keeps train.py from asking for plain CPU data parallel.
DEEPSPEED_ON_CPU = """
import os, runpy, sys
import torch
import accelerate.state
from accelerate.utils import DistributedType

prepare_backend = accelerate.state.PartialState._prepare_backend

def gloo_for_deepspeed(self, cpu=False, sagemaker_dp=False, backend=None):
    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        return "gloo", DistributedType.MULTI_GPU  # what accelerate returns on GPUs, with the CPU's backend
    return prepare_backend(self, cpu, sagemaker_dp, backend)

accelerate.state.PartialState._prepare_backend = gloo_for_deepspeed
accelerate.state.PartialState.set_device = lambda self: setattr(self, "device", torch.device("cpu"))
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""

needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="deepspeed is not installed (pip install -e .[deepspeed])")


def deepspeed_zero2_cpu(tmp_path):
    (tmp_path / "deepspeed_on_cpu.py").write_text(DEEPSPEED_ON_CPU)
    return [*accelerate("--config_file", "configs/deepspeed_zero2.yaml", "--num_processes", "2")[:-1],
            str(tmp_path / "deepspeed_on_cpu.py")]


LAUNCHES = {"FSDP": fsdp_sharded_cpu, "MULTI_CPU": lambda tmp_path: ddp_cpu(), "DEEPSPEED": deepspeed_zero2_cpu}
ENV = {"DEEPSPEED": {"ACCELERATE_USE_CPU": "false"}}


@pytest.fixture(scope="module")
def tiny_without_dropout(tiny_dir, tmp_path_factory):
    """The tiny EmoVIT with the Q-Former's dropout off: each process would draw its own dropout masks."""
    model = EmoVitForConditionalGeneration.from_pretrained(tiny_dir)
    model.config.qformer_config.hidden_dropout_prob = 0.0
    model.config.qformer_config.attention_probs_dropout_prob = 0.0
    folder = tmp_path_factory.mktemp("tiny-no-dropout")
    model.save_pretrained(folder)
    EmoVitProcessor.from_pretrained(tiny_dir).save_pretrained(folder)
    return folder


def train_flags(model, instructions_dir, output_dir, per_device_batch):
    # 24 categorical examples: a global batch of 24 is the whole data set at every step, whichever process holds
    # which half, so one process with batch 24 and two with 12 see the same examples at each step.
    return ["--model_name_or_path", str(model), "--dataset", str(instructions_dir), "--output_dir", str(output_dir),
            "--types", "categorical", "--per_device_train_batch_size", str(per_device_batch), "--max_steps", "3",
            "--optim", "sgd", "--max_grad_norm", "0", "--learning_rate", "1e-2", "--lr_scheduler_type", "constant",
            "--warmup_ratio", "0",
            "--weight_decay", "0.0", "--logging_steps", "1", "--eval_strategy", "no", "--test_split", "none",
            "--save_strategy", "no", "--seed", "0", "--dataloader_num_workers", "0", "--report_to", "none"]


def trainable_weights(folder):
    model = EmoVitForConditionalGeneration.from_pretrained(folder)
    model.freeze_for_instruction_tuning(freeze_unused=True)
    weights = load_file(Path(folder) / "model.safetensors")
    return {name: weights[name] for name, p in model.named_parameters() if p.requires_grad}


def max_difference(a, b):
    assert set(a) == set(b)
    return max((a[name] - b[name]).abs().max().item() for name in a)


@pytest.fixture(scope="module")
def single_process_run(tiny_without_dropout, instructions_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("single") / "run"
    done = run([sys.executable, "train.py", *train_flags(tiny_without_dropout, instructions_dir, output_dir, 24)])
    assert "processes: 1 (NO)" in done.stdout
    return output_dir


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["FSDP", "MULTI_CPU", pytest.param("DEEPSPEED", marks=needs_deepspeed)],
                         ids=["fsdp2-sharded", "ddp", "deepspeed-zero2"])
def test_two_cpu_processes_train_the_weights_of_one(kind, single_process_run, tiny_without_dropout, instructions_dir,
                                                    tmp_path):
    done = run([*LAUNCHES[kind](tmp_path), *train_flags(tiny_without_dropout, instructions_dir, tmp_path / "run", 12)],
               env=ENV.get(kind))
    assert done.stdout.count(f"processes: 2 ({kind})") == 2  # both processes, and the Trainer sees both
    if kind == "FSDP":  # every trainable tensor is split between the two processes, none held whole
        shards = [json.loads(line[len("SHARDS "):]) for line in done.stdout.splitlines() if line.startswith("SHARDS ")]
        assert len(shards) == 2 and all(s["dtensors"] == s["trainable"] > 0 for s in shards)
        assert sum(s["local"] for s in shards) == shards[0]["full"] and all(s["local"] < s["full"] for s in shards)
    single, trained = trainable_weights(single_process_run), trainable_weights(tmp_path / "run")
    base = trainable_weights(tiny_without_dropout)
    assert max_difference(single, base) > 0.1  # the runs trained: the comparison below could fail
    difference = max_difference(single, trained)
    print(f"{kind}: max |trainable weight difference| to one process after 3 steps = {difference:.3g}")
    assert difference < TOLERANCE
    log = json.loads((tmp_path / "run" / "training_log.json").read_text())
    assert [entry["step"] for entry in log if "loss" in entry] == [1, 2, 3]


@pytest.mark.integration
def test_sharded_lora_is_gathered_and_merged_into_the_weights_of_one_process(tiny_without_dropout, instructions_dir,
                                                                           tmp_path):
    """LoRA's adapters sit in the language model's FSDP units beside frozen weights; the saved folder merges them."""
    lora = ["--lora_r", "4", "--lora_dropout", "0"]
    run([sys.executable, "train.py", *train_flags(tiny_without_dropout, instructions_dir, tmp_path / "one", 24), *lora])
    done = run([*fsdp_sharded_cpu(tmp_path), *train_flags(tiny_without_dropout, instructions_dir, tmp_path / "two", 12),
                *lora])
    assert done.stdout.count("processes: 2 (FSDP)") == 2
    single, sharded = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    base = load_file(Path(tiny_without_dropout) / "model.safetensors")
    assert set(single) == set(sharded) == set(base)  # a plain EmoVIT: no adapter tensors left
    language_model = [name for name in base if name.startswith("language_model.")]
    assert max_difference({n: single[n] for n in language_model}, {n: base[n] for n in language_model}) > 1e-3
    difference = max_difference(single, sharded)
    print(f"FSDP with LoRA: max |weight difference| to one process after merging = {difference:.3g}")
    assert difference < TOLERANCE


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["FSDP", pytest.param("DEEPSPEED", marks=needs_deepspeed)],
                         ids=["fsdp2-sharded", "deepspeed-zero2"])
def test_sharded_checkpoints_resume_exactly(kind, tiny_without_dropout, instructions_dir, tmp_path):
    flags = train_flags(tiny_without_dropout, instructions_dir, tmp_path / "run", 6)
    for flag, value in (("--max_steps", "4"), ("--save_strategy", "steps"), ("--optim", "adamw_torch")):
        flags[flags.index(flag) + 1] = value  # Adam: its sharded state must come back too
    flags += ["--save_steps", "2"]
    run([*LAUNCHES[kind](tmp_path), *flags], env=ENV.get(kind))
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / "trainable_weights.safetensors").is_file()
    if kind == "FSDP":  # the trainable tensors and the gathered optimizer, no copy of the whole model
        assert (checkpoint / "optimizer.bin").is_file() and not list(checkpoint.glob("pytorch_model*"))
    uninterrupted = load_file(tmp_path / "run" / "model.safetensors")
    (tmp_path / "run" / "model.safetensors").unlink()
    shutil.rmtree(tmp_path / "run" / "checkpoint-4")
    run([*LAUNCHES[kind](tmp_path), *flags, "--resume_from_checkpoint", str(checkpoint)], env=ENV.get(kind))
    resumed = load_file(tmp_path / "run" / "model.safetensors")
    base = load_file(Path(tiny_without_dropout) / "model.safetensors")
    assert max_difference(uninterrupted, base) > 1e-3
    difference = max_difference(uninterrupted, resumed)
    print(f"{kind} resumed from step 2 of 4: max |weight difference| to the uninterrupted run = {difference:.3g}")
    assert difference < 1e-6


@pytest.mark.integration
def test_sharded_bf16_run_saves_frozen_towers_in_bf16_and_the_trained_side_in_float32(tiny_without_dropout,
                                                                                    instructions_dir, tmp_path):
    flags = train_flags(tiny_without_dropout, instructions_dir, tmp_path / "run", 12)
    run([*fsdp_sharded_cpu(tmp_path), *flags, "--bf16", "--use_cpu"])
    saved = load_file(tmp_path / "run" / "model.safetensors")
    trainable = trainable_weights(tiny_without_dropout)
    assert {str(t.dtype) for n, t in saved.items() if n in trainable} == {"torch.float32"}
    frozen_towers = [n for n in saved if n.startswith(("language_model.", "vision_model.encoder.",
                                                       "vision_model.embeddings."))]
    assert frozen_towers and {str(saved[n].dtype) for n in frozen_towers} == {"torch.bfloat16"}
    assert all(torch.isfinite(t.float()).all() for t in saved.values())
    assert max_difference({n: saved[n] for n in trainable}, trainable) > 0.1


@pytest.mark.integration
@pytest.mark.parametrize("launch", [fsdp_cpu, ddp_cpu], ids=["fsdp2", "ddp"])
def test_offline_default_builds_its_inputs_once_under_two_processes(launch, tmp_path):
    """No flags but a smaller sample and 1 step: the main process draws the sample, writes the instruction data,
    the tiny model and the vision cache while the other waits; both then train on them."""
    output_dir = tmp_path / "offline"
    done = run([*launch(), "--max_steps", "1", "--offline_images_per_class", "3", "--offline_lm_steps", "2",
                "--output_dir", str(output_dir),
                "--eval_strategy", "no", "--test_split", "none"])
    assert done.stdout.count("processes: 2 (") == 2
    log = done.stdout + done.stderr
    for step in ("drawing a synthetic EmoSet sample", "writing template instruction data", "building the tiny EmoVIT"):
        assert log.count(step) == 1, step
    assert sorted(p.name for p in (output_dir / "offline-inputs").iterdir()) == [
        "emoset-synthetic", "instructions", "tiny-base"]  # no temporary folder left behind
    assert len(list((output_dir / "vision_cache").iterdir())) == 1
    assert (output_dir / "model.safetensors").is_file()


def test_several_processes_without_a_gpu_ask_for_cpu_training(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert launched_world_size() == 2
    use_cpu_without_accelerator()
    assert os.environ["ACCELERATE_USE_CPU"] == "true"
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    monkeypatch.setenv("WORLD_SIZE", "1")
    use_cpu_without_accelerator()
    assert "ACCELERATE_USE_CPU" not in os.environ


def test_a_trainer_that_sees_fewer_processes_than_launched_is_an_error(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"2 processes were launched \(WORLD_SIZE=2\) but the Trainer sees 1.*--use_cpu"):
        check_world_size(SimpleNamespace(world_size=1, distributed_state=None))
    check_world_size(SimpleNamespace(world_size=2, distributed_state=None))


# ---- DeepSpeed: the ZeRO-2 config's settings checked against train.py's flags (it trains above, under DeepSpeed on CPU)

# What the Trainer fills from train.py's arguments when the DeepSpeed JSON says "auto" (and checks when it does not):
# a fixed value here could disagree with the flags and stop a run at start, or train with another precision.
TRAINER_FILLED = ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps",
                  "gradient_clipping", "fp16.enabled", "bf16.enabled")
# accelerate refuses these beside a DeepSpeed JSON (they would be ignored).
ACCELERATE_REFUSED = {"gradient_accumulation_steps", "gradient_clipping", "zero_stage", "offload_optimizer_device",
                      "offload_param_device", "offload_param_nvme_path", "offload_optimizer_nvme_path",
                      "zero3_save_16bit_model"}


def deepspeed_configs():
    import yaml

    launch = yaml.safe_load((REPO / "configs" / "deepspeed_zero2.yaml").read_text())
    return launch, json.loads((REPO / launch["deepspeed_config"]["deepspeed_config_file"]).read_text())


def test_deepspeed_zero2_config_cannot_disagree_with_train_flags():
    launch, config = deepspeed_configs()
    assert launch["distributed_type"] == "DEEPSPEED" and launch["deepspeed_config"]["zero3_init_flag"] is False
    assert "mixed_precision" not in launch  # precision follows --bf16/--fp16 through bf16/fp16.enabled "auto"
    assert not ACCELERATE_REFUSED & set(launch["deepspeed_config"])
    assert config["zero_optimization"]["stage"] == 2
    for key in TRAINER_FILLED:
        value = config
        for part in key.split("."):
            value = value[part]
        assert value == "auto", key
    # no optimizer or scheduler of DeepSpeed's own: train.py's AdamW and cosine schedule, with its flags, are used
    assert "optimizer" not in config and "scheduler" not in config


@needs_deepspeed
def test_deepspeed_zero2_config_takes_the_shipped_training_yaml():
    import yaml
    from transformers import HfArgumentParser
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from emovit.training.arguments import DataArguments, EmoVitTrainingArguments, ModelArguments

    _, config = deepspeed_configs()
    flags = yaml.safe_load((REPO / "configs" / "emovit_vicuna7b.yaml").read_text())
    flags["use_cpu"] = True  # the yaml's --bf16 is refused on a machine without GPUs otherwise
    *_, args = HfArgumentParser((ModelArguments, DataArguments, EmoVitTrainingArguments)).parse_dict(flags)
    filled = HfTrainerDeepSpeedConfig(config)
    filled.trainer_config_process(args)
    assert filled.config["train_micro_batch_size_per_gpu"] == args.per_device_train_batch_size
    assert filled.config["gradient_clipping"] == args.max_grad_norm
    assert filled.config["bf16"]["enabled"] is True and filled.config["fp16"]["enabled"] is False
