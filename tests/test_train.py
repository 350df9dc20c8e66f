"""train.py on the tiny preset: a few steps each, on CPU."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_images
from PIL import Image
from safetensors.torch import load_file

from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor

REPO = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = load_script("train")


def run(tiny_dir, instructions_dir, output_dir, *extra):
    args = ["--model_name_or_path", str(tiny_dir), "--dataset", str(instructions_dir), "--output_dir", str(output_dir),
            "--types", "categorical", "--learning_rate", "1e-3", "--per_device_train_batch_size", "8",
            "--logging_steps", "1", "--eval_strategy", "no", "--test_split", "none", "--report_to", "none",
            "--save_strategy", "no", "--seed", "0", "--dataloader_num_workers", "0", "--weight_decay", "0.0",
            *extra]
    return train.main(args)


def trainable_tensors(folder):
    model = EmoVitForConditionalGeneration.from_pretrained(folder)
    return model.state_dict()


def losses(output_dir):
    history = json.loads((Path(output_dir) / "training_log.json").read_text())
    return [entry["loss"] for entry in history if "loss" in entry]


def test_loss_decreases_and_only_trainable_tensors_change(tiny_dir, instructions_dir, tmp_path):
    # 24 categorical examples, batch 24: every step sees the same batch.
    run(tiny_dir, instructions_dir, tmp_path / "run", "--per_device_train_batch_size", "24", "--max_steps", "4",
        "--lr_scheduler_type", "constant", "--warmup_ratio", "0")
    steps = losses(tmp_path / "run")
    assert len(steps) == 4 and all(torch.isfinite(torch.tensor(steps)))
    assert steps[-1] < steps[0]

    before, after = trainable_tensors(tiny_dir), trainable_tensors(tmp_path / "run")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed, "nothing trained"
    allowed = ("qformer.", "query_tokens", "language_projection.", "vision_model.post_layernorm.")
    assert all(name.startswith(allowed) for name in changed), sorted(changed)[:5]
    # the output folder is complete: weights, processor, card with the loss curve, remote code
    for name in ("model.safetensors", "processor_config.json", "README.md", "loss_curve.png", "modeling_emovit.py"):
        assert (tmp_path / "run" / name).exists(), name
    assert "Trainable (Q-Former side)" in (tmp_path / "run" / "README.md").read_text()


def test_checkpoint_resume_continues_exactly(tiny_dir, instructions_dir, tmp_path):
    common = ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2"]
    run(tiny_dir, instructions_dir, tmp_path / "straight", *common)
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    saved = load_file(checkpoint / "trainable_weights.safetensors")
    assert saved and all(name.startswith(("qformer.", "query_tokens", "language_projection.", "vision_model.post"))
                         for name in saved)
    assert (checkpoint / "optimizer.pt").exists() and not (checkpoint / "model.safetensors").exists()

    # a fresh run that resumes the same 4-step schedule from the straight run's step-2 checkpoint
    run(tiny_dir, instructions_dir, tmp_path / "resumed", *common, "--resume_from_checkpoint", str(checkpoint))
    straight, resumed = trainable_tensors(tmp_path / "straight"), trainable_tensors(tmp_path / "resumed")
    for name in straight:
        assert torch.allclose(straight[name], resumed[name], atol=1e-6), name
    assert losses(tmp_path / "resumed")[-2:] == pytest.approx(losses(tmp_path / "straight")[-2:], abs=1e-5)


def test_cached_vision_features_train_like_pixels(tiny_dir, instructions_dir, tmp_path):
    run(tiny_dir, instructions_dir, tmp_path / "pixels", "--max_steps", "3")
    run(tiny_dir, instructions_dir, tmp_path / "cached", "--max_steps", "3", "--cache_vision_features")
    assert len(list((tmp_path / "cached" / "vision_cache").glob("*/features.npy"))) == 1
    assert losses(tmp_path / "pixels") == pytest.approx(losses(tmp_path / "cached"), abs=1e-5)
    pixels, cached = trainable_tensors(tmp_path / "pixels"), trainable_tensors(tmp_path / "cached")
    for name in pixels:
        assert torch.allclose(pixels[name], cached[name], atol=1e-5), name


def test_augment_and_cache_exclude_each_other(tiny_dir, instructions_dir, tmp_path):
    with pytest.raises(ValueError, match="--augment and --cache_vision_features exclude each other"):
        run(tiny_dir, instructions_dir, tmp_path, "--augment", "--cache_vision_features", "--max_steps", "1")


def test_curriculum_sampler_visits_types_in_order():
    types = ["reasoning", "categorical", "conversation", "categorical", "reasoning", "conversation", "categorical"]
    sampler = train.CurriculumSampler(types, ["categorical", "conversation", "reasoning"], seed=0)
    order = [types[i] for i in sampler]
    assert order == ["categorical"] * 3 + ["conversation"] * 2 + ["reasoning"] * 2
    assert sorted(sampler) == list(range(len(types)))
    first = list(sampler)
    sampler.set_epoch(1)
    assert sorted(list(sampler)) == sorted(first)


def test_curriculum_must_cover_the_data(tiny_dir, instructions_dir, tmp_path):
    with pytest.raises(ValueError, match="leaves out the types \\['reasoning'\\]"):
        run(tiny_dir, instructions_dir, tmp_path, "--types", "categorical,reasoning",
            "--curriculum", "categorical", "--max_steps", "1")


def test_collator_masks_and_cache_agree(tiny_dir, instructions_dir, tmp_path):
    processor = EmoVitProcessor.from_pretrained(tiny_dir)
    model = EmoVitForConditionalGeneration.from_pretrained(tiny_dir)
    data_args = train.DataArguments(dataset=str(instructions_dir), types="categorical,reasoning")
    examples, root = train.load_examples(data_args)
    assert root is not None and {e["type"] for e in examples} == {"categorical", "reasoning"}
    batch_examples = examples[:2] + [e for e in examples if e["type"] == "reasoning"][:2]
    plain = train.EmoVitCollator(processor)(batch_examples)
    cache = train.VisionCache.build(model, processor, batch_examples, tmp_path / "vision_cache")
    cached = train.EmoVitCollator(processor, cache=cache)(batch_examples)
    assert torch.equal(plain["labels"], cached["labels"]) and "pixel_values" not in cached
    for row, example in enumerate(batch_examples):
        supervised = plain["labels"][row][plain["labels"][row] != -100]
        assert supervised[-1] == processor.tokenizer.eos_token_id
        text = processor.tokenizer.decode(supervised, skip_special_tokens=True).strip()
        assert text == example["answer"].strip()
    with torch.no_grad():
        assert torch.allclose(model.encode_vision(plain["pixel_values"]), cached["vision_hidden_states"], atol=1e-6)


def test_llava_json_source_matches_the_builder_folder(instructions_dir, synthetic_root, tmp_path):
    from_folder, _ = train.load_examples(train.DataArguments(dataset=str(instructions_dir), types="categorical"))
    # the official files hold one instruction type each; keep the categorical entries of ours
    entries = json.loads((instructions_dir / "instructions_llava.json").read_text())
    categorical = [e for e in entries if e["conversations"][1]["value"].startswith("Predict emotion:")]
    (tmp_path / "categorical.json").write_text(json.dumps(categorical))
    llava = train.DataArguments(dataset=str(tmp_path / "categorical.json"), types="categorical",
                                image_root=str(synthetic_root), official_type="auto")
    from_json, _ = train.load_examples(llava)
    assert sorted((e["image"], e["answer"]) for e in from_json) == sorted((e["image"], e["answer"]) for e in from_folder)
    assert all(Path(e["image"]).is_file() for e in from_json)
    with pytest.raises(ValueError, match="--image_root"):
        train.load_examples(train.DataArguments(dataset=llava.dataset, types="categorical"))


def test_lora_trains_the_language_model_and_saves_a_plain_emovit(tiny_dir, instructions_dir, tmp_path):
    run(tiny_dir, instructions_dir, tmp_path / "lora", "--max_steps", "3", "--lora_r", "4")
    saved = tmp_path / "lora"
    state = trainable_tensors(saved)  # loads as a plain EmoVIT: no LoRA keys, nothing missing
    assert not any("lora_" in name for name in state)
    base = trainable_tensors(tiny_dir)
    assert set(state) == set(base)
    q_proj = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(state[q_proj], base[q_proj]), "merged LoRA update missing from q_proj"
    mlp = "language_model.model.layers.0.mlp.up_proj.weight"
    assert torch.equal(state[mlp], base[mlp])  # LoRA targets q/v only


def test_bf16_keeps_the_trainable_side_in_float32(tiny_dir, instructions_dir, tmp_path):
    run(tiny_dir, instructions_dir, tmp_path / "bf16", "--max_steps", "2", "--bf16", "--use_cpu")
    losses_bf16 = losses(tmp_path / "bf16")
    assert all(torch.isfinite(torch.tensor(losses_bf16)))
    from safetensors import safe_open

    with safe_open(tmp_path / "bf16" / "model.safetensors", "pt") as f:
        dtypes = {name: f.get_slice(name).get_dtype() for name in f.keys()}
    assert dtypes["query_tokens"] == "F32" and dtypes["qformer.encoder.layer.0.attention.attention.query.weight"] == "F32"
    assert dtypes["language_model.model.layers.0.self_attn.q_proj.weight"] == "BF16"
    assert dtypes["vision_model.encoder.layers.0.mlp.fc1.weight"] == "BF16"


DDP_SCRIPT = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("train_script", sys.argv[1])
train = importlib.util.module_from_spec(spec); spec.loader.exec_module(train)
train.main(json.loads(sys.argv[2]))
"""


def test_ddp_two_processes_on_cpu(tiny_dir, instructions_dir, tmp_path):
    """torchrun with 2 CPU processes (gloo): DDP without find_unused_parameters trains and writes one folder."""
    import os
    import subprocess
    import sys

    args = ["--model_name_or_path", str(tiny_dir), "--dataset", str(instructions_dir), "--output_dir",
            str(tmp_path / "ddp"), "--types", "categorical", "--per_device_train_batch_size", "4", "--max_steps", "2",
            "--eval_strategy", "no", "--test_split", "none", "--report_to", "none", "--save_strategy", "no",
            "--logging_steps", "1", "--use_cpu"]
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(REPO / "train.py"), json.dumps(args)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "ddp" / "model.safetensors").exists()
    history = json.loads((tmp_path / "ddp" / "training_log.json").read_text())
    assert [e["step"] for e in history if "loss" in e] == [1, 2]


def test_vision_cache_is_rebuilt_for_another_base_model(tiny_dir, instructions_dir, tmp_path):
    from modeling_emovit.tiny import save_tiny_emovit

    other_base = tmp_path / "other-base"
    save_tiny_emovit(other_base, seed=1)
    cached = ["--max_steps", "2", "--cache_vision_features"]
    run(tiny_dir, instructions_dir, tmp_path / "reused", *cached)
    run(other_base, instructions_dir, tmp_path / "reused", *cached)  # same run folder, another base model
    run(other_base, instructions_dir, tmp_path / "fresh", *cached)
    assert losses(tmp_path / "reused") == pytest.approx(losses(tmp_path / "fresh"), abs=1e-6)
    reused, fresh = trainable_tensors(tmp_path / "reused"), trainable_tensors(tmp_path / "fresh")
    for name in fresh:
        assert torch.allclose(reused[name], fresh[name], atol=1e-6), name
    assert len(list((tmp_path / "reused" / "vision_cache").iterdir())) == 1  # the stale entry is gone


def test_vision_cache_key_covers_dtype_image_files_and_half_written_entries(tiny_dir, instructions_dir, tmp_path):
    import os
    import shutil

    processor = EmoVitProcessor.from_pretrained(tiny_dir)
    model = EmoVitForConditionalGeneration.from_pretrained(tiny_dir)
    examples, _ = train.load_examples(train.DataArguments(dataset=str(instructions_dir), types="categorical"))
    images = tmp_path / "images"
    shutil.copytree(Path(examples[0]["image"]).parent, images)
    examples = [{**e, "image": str(images / Path(e["image"]).name), "image_key": str(images / Path(e["image"]).name)}
                for e in examples[:4] if (images / Path(e["image"]).name).is_file()]
    folder = tmp_path / "vision_cache"

    def entry():
        (found,) = [p for p in folder.iterdir() if not p.name.startswith(".")]
        return found

    first = train.VisionCache.build(model, processor, examples, folder)
    built = entry()
    assert train.VisionCache.build(model, processor, examples, folder).array.shape == first.array.shape
    assert entry() == built  # same inputs: reused
    # an entry whose key file is missing (a build that never finished) or whose array is torn is rebuilt
    (built / "key.json").unlink()
    train.VisionCache.build(model, processor, examples, folder)
    assert (entry() / "key.json").is_file()
    (entry() / "features.npy").write_bytes((entry() / "features.npy").read_bytes()[:200])
    rebuilt = train.VisionCache.build(model, processor, examples, folder)
    assert rebuilt.array.shape == first.array.shape and np.array_equal(rebuilt.array, first.array)
    # another image file content (new size and mtime) gives a new entry
    path = Path(examples[0]["image"])
    path.write_bytes(path.read_bytes() + b"\0")
    os.utime(path, ns=(1, 1))
    train.VisionCache.build(model, processor, examples, folder)
    assert entry() != built
    changed = entry()
    # another dtype too
    model.vision_model.embeddings.to(torch.bfloat16)
    model.vision_model.encoder.to(torch.bfloat16)
    train.VisionCache.build(model, processor, examples, folder)
    assert entry() != changed


def test_augment_resume_is_exact(tiny_dir, instructions_dir, tmp_path):
    # 24 examples, batch 8: 3 steps per epoch, so the resumed half crosses into the second epoch.
    common = ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--augment"]
    run(tiny_dir, instructions_dir, tmp_path / "straight", *common)
    run(tiny_dir, instructions_dir, tmp_path / "resumed", *common,
        "--resume_from_checkpoint", str(tmp_path / "straight" / "checkpoint-2"))
    straight, resumed = trainable_tensors(tmp_path / "straight"), trainable_tensors(tmp_path / "resumed")
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), (name, (straight[name] - resumed[name]).abs().max())
    assert losses(tmp_path / "resumed")[-2:] == losses(tmp_path / "straight")[-2:]


def test_augmentation_differs_per_epoch_and_skips_evaluation_examples(tiny_dir):
    processor = EmoVitProcessor.from_pretrained(tiny_dir)
    collator = train.EmoVitCollator(processor, augment=True, seed=0)
    dataset = train.InstructionDataset([{"image": img, "image_key": str(i), "instruction": "Q?", "answer": "A.",
                                         "type": "conversation", "emotion": "awe"}
                                        for i, img in enumerate(random_images(2, size=(60, 40)))])
    batch = lambda keys: collator([dataset[k] for k in keys])["pixel_values"]  # noqa: E731
    assert torch.equal(batch([(0, 0), (0, 1)]), batch([(0, 0), (0, 1)]))
    assert not torch.equal(batch([(0, 0)]), batch([(1, 0)]))
    plain = train.EmoVitCollator(processor)([dataset[0]])["pixel_values"]
    assert torch.equal(batch([0]), plain)
    sampler = train.AugmentationKeySampler(train.CurriculumSampler(["categorical"] * 3, ["categorical"], seed=0))
    sampler.set_epoch(2)
    assert sorted(sampler) == [(2, 0), (2, 1), (2, 2)]


def private_copy(synthetic_root, instructions_dir, tmp_path):
    """Copies of the synthetic EmoSet and its instruction data that a test may change."""
    import shutil

    root, data = tmp_path / "emoset", tmp_path / "instructions"
    shutil.copytree(synthetic_root, root)
    shutil.copytree(instructions_dir, data)
    summary = json.loads((data / "summary.json").read_text())
    (data / "summary.json").write_text(json.dumps({**summary, "emoset_root": str(root)}))
    return root, data


def categorical_images(data):
    return [json.loads(line)["image"] for line in (data / "instructions.jsonl").read_text().splitlines()
            if json.loads(line)["type"] == "categorical"]


def test_16_bit_training_images_are_scaled_like_everywhere_else(tiny_dir, synthetic_root, instructions_dir, tmp_path):
    root, data = private_copy(synthetic_root, instructions_dir, tmp_path)
    for image in categorical_images(data)[:3]:
        Image.fromarray(np.full((30, 30), 40000, dtype=np.uint16)).save(root / image, format="PNG")
    run(tiny_dir, data, tmp_path / "run", "--max_steps", "1", "--per_device_train_batch_size", "24")
    assert len(losses(tmp_path / "run")) == 1


def test_a_decompression_bomb_in_training_names_the_file(tiny_dir, synthetic_root, instructions_dir, tmp_path,
                                                          monkeypatch):
    root, data = private_copy(synthetic_root, instructions_dir, tmp_path)
    bomb = categorical_images(data)[0]
    Image.new("RGB", (3000, 3000)).save(root / bomb, format="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    with pytest.raises(ValueError, match=f"{bomb}.*could not be read.*DecompressionBomb"):
        run(tiny_dir, data, tmp_path / "run", "--max_steps", "1", "--per_device_train_batch_size", "24")


def test_a_missing_training_image_is_named_before_training(synthetic_root, instructions_dir, tmp_path):
    root, data = private_copy(synthetic_root, instructions_dir, tmp_path)
    gone = categorical_images(data)[5]
    (root / gone).unlink()
    with pytest.raises(FileNotFoundError, match=f"1 training image.*{gone}"):
        train.load_examples(train.DataArguments(dataset=str(data), types="categorical"))


def test_a_categorical_answer_naming_another_emotion_is_refused(synthetic_root, instructions_dir, tmp_path):
    _, data = private_copy(synthetic_root, instructions_dir, tmp_path)
    lines = (data / "instructions.jsonl").read_text().splitlines()
    number, record = next((n, json.loads(line)) for n, line in enumerate(lines, start=1)
                          if json.loads(line)["type"] == "categorical" and json.loads(line)["emotion"] != "fear")
    record["conversations"][1]["value"] = "Predict emotion: fear"
    lines[number - 1] = json.dumps(record)
    (data / "instructions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"instructions.jsonl:{number}: the categorical answer .* names 'fear'"):
        train.load_examples(train.DataArguments(dataset=str(data), types="categorical"))


def test_llava_json_entries_leaving_the_image_root_are_skipped(instructions_dir, synthetic_root, tmp_path):
    entries = json.loads((instructions_dir / "instructions_llava.json").read_text())
    categorical = [e for e in entries if e["conversations"][1]["value"].startswith("Predict emotion:")][:3]
    outside = dict(categorical[0], image="../" + Path(synthetic_root).name + "-elsewhere/x.jpg")
    (tmp_path / "data.json").write_text(json.dumps(categorical + [outside]))
    examples, _ = train.load_examples(train.DataArguments(dataset=str(tmp_path / "data.json"), types="categorical",
                                                          image_root=str(synthetic_root)))
    assert len(examples) == 3
    assert all(Path(e["image"]).resolve().is_relative_to(Path(synthetic_root).resolve()) for e in examples)


def test_an_unreadable_evaluation_image_is_left_out_not_fatal(tiny_dir, synthetic_root, instructions_dir, tmp_path,
                                                              capsys):
    from dataset_builder.emoset import read_split

    root, data = private_copy(synthetic_root, instructions_dir, tmp_path)
    broken = read_split(root, "val").items[0]
    Path(broken.image_path).write_bytes(b"not an image")
    results = run(tiny_dir, data, tmp_path / "run", "--max_steps", "1", "--eval_strategy", "steps",
                  "--eval_steps", "1")
    assert 0.0 <= results["eval_accuracy"] <= 1.0
    printed = capsys.readouterr().out
    assert "evaluating accuracy on 7 images" in printed and f"{broken.image_path} could not be read" in printed

def test_evaluation_loss_comes_from_the_trainer(tiny_dir, instructions_dir, tmp_path):
    """With evaluation on, the Trainer's own prediction step reports the loss of the categorical answers of the
    evaluation images (it finds `labels` in the model's forward signature), beside emotion accuracy."""
    run(tiny_dir, instructions_dir, tmp_path / "run", "--max_steps", "2", "--eval_strategy", "steps",
        "--eval_steps", "2")
    history = json.loads((tmp_path / "run" / "training_log.json").read_text())
    evaluations = [entry for entry in history if "eval_loss" in entry]
    assert evaluations and all(0 < entry["eval_loss"] < 50 for entry in evaluations)
    assert any("eval_accuracy" in entry for entry in history)
