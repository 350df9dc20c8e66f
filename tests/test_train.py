"""train.py's main(argv) on the tiny preset, in this process (a few steps each, on CPU), and once under torchrun. The
library it launches is tested module by module in tests/test_training_*.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor

from testing_utils import categorical_images, copy_with_layout, private_copy, random_images, run_script


REPO = Path(__file__).resolve().parents[1]


def flags(tiny_dir, instructions_dir, output_dir, *extra):
    return ["--model_name_or_path", str(tiny_dir), "--dataset", str(instructions_dir), "--output_dir", str(output_dir),
            "--types", "categorical", "--learning_rate", "1e-3", "--per_device_train_batch_size", "8",
            "--logging_steps", "1", "--eval_strategy", "no", "--test_split", "none", "--report_to", "none",
            "--save_strategy", "no", "--seed", "0", "--dataloader_num_workers", "0", "--weight_decay", "0.0",
            *map(str, extra)]


def train_script(*args, check=True):
    """Runs train.py's main with ARGS in this process; with `check`, fails the test on a non-zero exit."""
    done = run_script("train", args)
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def trainable_tensors(folder):
    model = EmoVitForConditionalGeneration.from_pretrained(folder)
    return model.state_dict()


def history(output_dir):
    return json.loads((Path(output_dir) / "training_log.json").read_text())


def losses(output_dir):
    return [entry["loss"] for entry in history(output_dir) if "loss" in entry]


def assert_four_falling_steps_on_the_qformer_side_only(base, run):
    """The run in `run` logged 4 finite losses, the last below the first, and changed tensors of the Q-Former side of
    `base` and nothing else."""
    steps = losses(run)
    assert len(steps) == 4 and all(torch.isfinite(torch.tensor(steps)))
    assert steps[-1] < steps[0]

    before, after = trainable_tensors(base), trainable_tensors(run)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed, "nothing trained"
    allowed = ("qformer.", "query_tokens", "language_projection.", "vision_model.post_layernorm.")
    assert all(name.startswith(allowed) for name in changed), sorted(changed)[:5]


def test_training_run_end_to_end(tiny_dir, synthetic_root, instructions_dir, tmp_path):
    """One run that checks what a user sees: the loss falls, only the Q-Former side changes, the folder is complete;
    16-bit training images train; an unreadable evaluation image is left out (not fatal); evaluation reports the
    Trainer's loss on the evaluation images and emotion accuracy."""
    root, data = private_copy(synthetic_root, instructions_dir, tmp_path)
    for image in categorical_images(data)[:3]:
        Image.fromarray(np.full((30, 30), 40000, dtype=np.uint16)).save(root / image, format="PNG")
    from dataset_builder.emoset import read_split

    broken = read_split(root, "val").items[0]
    Path(broken.image_path).write_bytes(b"not an image")
    # 24 categorical examples, batch 24: every step sees the same batch.
    done = train_script(*flags(tiny_dir, data, tmp_path / "run", "--per_device_train_batch_size", 24,
                               "--max_steps", 4, "--lr_scheduler_type", "constant", "--warmup_ratio", 0,
                               "--curriculum", "categorical", "--eval_strategy", "steps", "--eval_steps", 2))
    assert_four_falling_steps_on_the_qformer_side_only(tiny_dir, tmp_path / "run")
    # the output folder is complete: weights, processor, card with the loss curve, remote code
    for name in ("model.safetensors", "processor_config.json", "README.md", "loss_curve.png", "modeling_emovit.py",
                 "pipeline_emovit.py"):
        assert (tmp_path / "run" / name).exists(), name
    card = (tmp_path / "run" / "README.md").read_text()
    assert "Trainable (Q-Former side)" in card

    assert "evaluating accuracy on 7 images" in done.stdout and f"{broken.image_path} could not be read" in done.stdout
    evaluations = [entry for entry in history(tmp_path / "run") if "eval_loss" in entry]
    assert evaluations and all(0 < entry["eval_loss"] < 50 for entry in evaluations)
    accuracies = [entry["eval_accuracy"] for entry in history(tmp_path / "run") if "eval_accuracy" in entry]
    assert accuracies and all(0.0 <= accuracy <= 1.0 for accuracy in accuracies)
    assert "| eval_accuracy |" in card


def test_an_encoder_decoder_language_model_trains_only_the_qformer_side(tiny_t5_dir, instructions_dir, tmp_path):
    """A tiny FlanT5-style EmoVIT whose processor_config.json leaves the layout out, as Salesforce's FlanT5 folders
    do: train.py lays out encoder-decoder batches from config.json, the loss falls, only the Q-Former side changes,
    the evaluation during training and on the held-out split runs, and the saved folder scores images as a T5
    EmoVIT."""
    base = copy_with_layout(tiny_t5_dir, tmp_path / "base", None)
    # 24 categorical examples, batch 24: every step sees the same batch.
    train_script(*flags(base, instructions_dir, tmp_path / "run", "--per_device_train_batch_size", 24,
                        "--max_steps", 4, "--lr_scheduler_type", "constant", "--warmup_ratio", 0,
                        "--curriculum", "categorical", "--eval_strategy", "steps", "--eval_steps", 2,
                        "--test_split", "test"))
    assert_four_falling_steps_on_the_qformer_side_only(base, tmp_path / "run")

    evaluations = [entry for entry in history(tmp_path / "run") if "eval_loss" in entry]
    assert evaluations and all(0 < entry["eval_loss"] < 50 for entry in evaluations)
    for method in ("eval", "eval-generate"):  # the held-out split, scored and generated
        metrics = json.loads((tmp_path / "run" / method / "metrics.json").read_text())
        assert metrics["num_images"] == 8 and 0.0 <= metrics["accuracy"] <= 1.0, method

    model = EmoVitForConditionalGeneration.from_pretrained(tmp_path / "run").eval()
    processor = EmoVitProcessor.from_pretrained(tmp_path / "run")
    assert model.config.text_config.model_type == "t5" and not model.config.use_decoder_only_language_model
    assert processor.use_decoder_only_language_model is False
    prediction = model.classify(random_images(2), processor, method="score")
    scores = prediction.scores
    assert scores.shape == (2, len(model.config.emotion_labels)) and torch.isfinite(scores).all()
    assert torch.allclose(scores.sum(-1), torch.ones(2), atol=1e-4)


@pytest.mark.integration  # a whole run: the offline default end to end
def test_offline_default_with_a_few_steps(tmp_path):
    """No --model_name_or_path and no --dataset: the offline default's data, model and flags (here with fewer steps
    and images), then the held-out evaluation of the saved model: classification and explanations."""
    output_dir = tmp_path / "offline"
    done = train_script("--max_steps", 2, "--offline_images_per_class", 3, "--offline_lm_steps", 2,
                        "--output_dir", output_dir)
    for built in ("emoset-synthetic/info.json", "instructions/summary.json", "tiny-base/config.json"):
        assert (output_dir / "offline-inputs" / built).is_file(), built
    assert len(list((output_dir / "vision_cache").glob("*/features.npy"))) == 1  # --cache_vision_features
    # all three types, 1 train image per class (3 conversation pairs each)
    assert "training examples: 40 ({'categorical': 8, 'conversation': 24, 'reasoning': 8})" in done.stdout
    assert [entry["step"] for entry in history(output_dir) if "loss" in entry] == []  # --logging_steps 100
    metrics = json.loads((output_dir / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and (output_dir / "eval-generate" / "metrics.json").is_file()
    reasoning = json.loads((output_dir / "eval-reasoning" / "metrics.json").read_text())
    assert reasoning["num_images"] == 8 and 0.0 <= reasoning["known_word_rate"] <= 1.0
    assert "held-out accuracy_score=" in done.stdout and "reasoning_consistency=" in done.stdout
    card = (output_dir / "README.md").read_text()
    assert "| test_accuracy_score |" in card and "| test_reasoning_grounding |" in card
    assert "This is the offline miniature, not an emotion model" in card


def test_lora_from_a_yaml_file_trains_the_language_model_and_saves_a_plain_emovit(tiny_dir, instructions_dir,
                                                                                   tmp_path):
    config = {"model_name_or_path": str(tiny_dir), "dataset": str(instructions_dir),
              "output_dir": str(tmp_path / "lora"), "types": "categorical", "learning_rate": 1e-3,
              "per_device_train_batch_size": 8, "logging_steps": 1,
              "eval_strategy": "no", "test_split": "none", "report_to": "none", "save_strategy": "no", "seed": 0,
              "dataloader_num_workers": 0, "weight_decay": 0.0, "max_steps": 3, "lora_r": 4}
    (tmp_path / "lora.yaml").write_text(yaml.safe_dump(config))
    train_script(tmp_path / "lora.yaml")
    saved = tmp_path / "lora"
    state = trainable_tensors(saved)  # loads as a plain EmoVIT: no LoRA keys, nothing missing
    assert not any("lora_" in name for name in state)
    base = trainable_tensors(tiny_dir)
    assert set(state) == set(base)
    q_proj = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(state[q_proj], base[q_proj]), "merged LoRA update missing from q_proj"
    mlp = "language_model.model.layers.0.mlp.up_proj.weight"
    assert torch.equal(state[mlp], base[mlp])  # LoRA targets q/v only
    assert "Trainable (Q-Former side + LoRA)" in (saved / "README.md").read_text()


def test_bf16_keeps_the_trainable_side_in_float32(tiny_dir, instructions_dir, tmp_path):
    train_script(*flags(tiny_dir, instructions_dir, tmp_path / "bf16", "--max_steps", 2, "--bf16", "--use_cpu"))
    losses_bf16 = losses(tmp_path / "bf16")
    assert all(torch.isfinite(torch.tensor(losses_bf16)))
    from safetensors import safe_open

    with safe_open(tmp_path / "bf16" / "model.safetensors", "pt") as f:
        dtypes = {name: f.get_slice(name).get_dtype() for name in f.keys()}
    assert dtypes["query_tokens"] == "F32" and dtypes["qformer.encoder.layer.0.attention.attention.query.weight"] == "F32"
    assert dtypes["language_model.model.layers.0.self_attn.q_proj.weight"] == "BF16"
    assert dtypes["vision_model.encoder.layers.0.mlp.fc1.weight"] == "BF16"


def test_augment_and_cache_exclude_each_other(tiny_dir, instructions_dir, tmp_path):
    done = train_script(*flags(tiny_dir, instructions_dir, tmp_path, "--augment", "--cache_vision_features",
                               "--max_steps", 1), check=False)
    assert done.returncode != 0
    assert "train.py: error: --augment and --cache_vision_features exclude each other" in done.stderr
    assert "Traceback" not in done.stderr and done.returncode == 1


@pytest.mark.integration
def test_ddp_two_processes_on_cpu(tiny_dir, instructions_dir, tmp_path):
    """torchrun with 2 CPU processes (gloo): DDP without find_unused_parameters trains and writes one folder, and the
    held-out evaluation at the end takes every process (the main process alone would wait for the others)."""
    args = ["--model_name_or_path", str(tiny_dir), "--dataset", str(instructions_dir), "--output_dir",
            str(tmp_path / "ddp"), "--types", "categorical", "--per_device_train_batch_size", "4", "--max_steps", "2",
            "--eval_strategy", "no", "--report_to", "none", "--save_strategy", "no",
            "--logging_steps", "1", "--use_cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "train.py", *args], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "ddp" / "model.safetensors").exists()
    assert [e["step"] for e in history(tmp_path / "ddp") if "loss" in e] == [1, 2]
    metrics = json.loads((tmp_path / "ddp" / "eval" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["num_images"] > 0
    assert done.stdout.count("held-out ") == 1


def test_an_output_dir_inside_the_evaluation_dataset_is_refused_before_training(tiny_dir, synthetic_root,
                                                                                instructions_dir, tmp_path):
    """The held-out evaluation writes output_dir/eval, which may not lie inside the dataset it reads: refused before
    the first step, not after training."""
    root, data = private_copy(synthetic_root, instructions_dir, tmp_path)
    before = sorted(root.rglob("*"))
    done = train_script(*flags(tiny_dir, data, root / "runs" / "emovit", "--max_steps", 1), check=False)
    assert done.returncode != 0, done.stderr[-3000:]
    assert f"train.py: error: --output_dir '{root / 'runs' / 'emovit'}' lies inside '{root}'" in done.stderr
    assert sorted(root.rglob("*")) == before
