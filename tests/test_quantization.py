"""emovit.quantization on CPU with the tiny model: which layers bitsandbytes takes, --quantization through predict.py,
evaluate.py, app.py and the pipeline's model_kwargs, training with a quantised language model and the full-precision
folder it saves, the quantised model's agreement with the unquantised one, and the errors."""

import json
import sys

import pytest
import torch
from safetensors import safe_open
from transformers import pipeline

from emovit.evaluation.arguments import EvalArguments
from emovit.inference.arguments import PredictArguments
from emovit.inference.loading import load_model
from emovit.quantization import KEEP_UNQUANTIZED, check_quantization, quantization_config, unquantized_copy
from emovit.training.arguments import ModelArguments
from modeling_emovit import EmoVitForConditionalGeneration

from testing_utils import random_images, run_script, training_batch


bnb = pytest.importorskip("bitsandbytes")

QUANTIZED_LINEAR = {"4bit": bnb.nn.Linear4bit, "8bit": bnb.nn.Linear8bitLt}
# Tensors bitsandbytes adds to a serialised quantised checkpoint; a full-precision folder has none of them.
BNB_KEY_PARTS = ("absmax", "quant_map", "quant_state", "nested_", "SCB", "weight_format")


@pytest.fixture()
def loaded(monkeypatch):
    """Every model `EmoVitForConditionalGeneration.from_pretrained` returns during the test, with the keywords it was
    called with: what a script's flags made of the loading."""
    calls = []
    original = EmoVitForConditionalGeneration.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        model = original(cls, *args, **kwargs)
        calls.append((model, kwargs))
        return model

    monkeypatch.setattr(EmoVitForConditionalGeneration, "from_pretrained", classmethod(spy))
    return calls


def assert_quantized(model, quantization, vision_quantized=True):
    """The language model's linear layers (and the ViT's, with `vision_quantized`) are bitsandbytes layers of
    `quantization`; the Q-Former side and the output head are plain float32 modules."""
    layer = QUANTIZED_LINEAR[quantization]
    for tower, quantized in (("language_model", True), ("vision_model", vision_quantized)):
        linears = [(name, module) for name, module in getattr(model, tower).named_modules()
                   if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")]
        assert linears, tower
        assert all(isinstance(module, layer) == quantized for _, module in linears), (tower, linears[0])
    head = model.get_output_embeddings()
    assert type(head) is torch.nn.Linear and head.weight.dtype == torch.float32
    for name in KEEP_UNQUANTIZED[:-1]:
        part = getattr(model, name)
        params = [part] if isinstance(part, torch.nn.Parameter) else list(part.parameters())
        assert all(param.dtype == torch.float32 for param in params), name
        if isinstance(part, torch.nn.Module):
            assert not any(type(module).__module__.startswith("bitsandbytes") for module in part.modules()), name


def saved_dtypes(path) -> dict:
    with safe_open(path, "pt") as f:
        return {name: f.get_slice(name).get_dtype() for name in f.keys()}


def assert_full_precision_folder(folder):
    dtypes = saved_dtypes(folder / "model.safetensors")
    assert set(dtypes.values()) == {"F32"}, sorted(set(dtypes.values()))
    assert not [name for name in dtypes if any(part in name for part in BNB_KEY_PARTS)]
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())


# ---------------------------------------------------------------------------------------------- the configuration


def test_the_configuration_keeps_the_q_former_side_and_the_head_out():
    four = quantization_config("4bit", torch.bfloat16)
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_compute_dtype == torch.bfloat16
    assert set(four.llm_int8_skip_modules) == set(KEEP_UNQUANTIZED)
    assert "vision_model" in quantization_config("4bit", for_training=True).llm_int8_skip_modules
    eight = quantization_config("8bit", for_training=True)
    assert eight.load_in_8bit and set(eight.llm_int8_skip_modules) == set(KEEP_UNQUANTIZED)  # the ViT too
    assert quantization_config(None) is None


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_load_model_quantises_the_frozen_towers(tiny_dir, tiny_processor, quantization):
    model, processor = load_model(str(tiny_dir), torch.float32, quantization)
    assert_quantized(model, quantization)
    assert model.config.quantization_config.quant_method == "bitsandbytes"
    scores = model.classify(random_images(2), processor).scores
    assert torch.isfinite(scores).all() and torch.allclose(scores.sum(-1), torch.ones(2), atol=1e-5)


# ---------------------------------------------------------------------------------------------- the scripts' flags


def test_predict_py_loads_the_model_quantised(tiny_dir, tiny_processor, photo_folder, tmp_path, loaded):
    folder, _ = photo_folder
    output = tmp_path / "predictions.jsonl"
    done = run_script("predict", ["--model", tiny_dir, "--quantization", "4bit", str(folder / "nested"),
                                  "--output", output])
    assert done.returncode == 0, done.stderr[-2000:]
    (model, kwargs), = loaded
    assert kwargs["quantization_config"].load_in_4bit
    assert_quantized(model, "4bit")
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    from modeling_emovit.image_utils import open_image

    expected = model.classify([open_image(line["path"]) for line in lines], tiny_processor)
    assert [line["label"] for line in lines] == expected.labels


def test_evaluate_py_loads_the_model_quantised_and_records_it(tiny_dir, eval_emoset_dir, tmp_path, loaded):
    done = run_script("evaluate", ["--model", tiny_dir, "--dataset", eval_emoset_dir, "--split", "test",
                                   "--quantization", "8bit", "--max_images", 6, "--output_dir", tmp_path / "out"])
    assert done.returncode == 0, done.stderr[-2000:]
    (model, kwargs), = loaded
    assert kwargs["quantization_config"].load_in_8bit
    assert_quantized(model, "8bit")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["arguments"]["quantization"] == "8bit" and metrics["num_images"] == 6
    assert "accuracy " in done.stdout


def test_app_py_loads_the_model_quantised_from_the_flag_or_the_environment(tiny_dir, tmp_path, monkeypatch, loaded):
    import emovit.inference.demo

    served = []

    class Page:
        def launch(self, **kwargs):
            served.append(kwargs)

    monkeypatch.setattr(emovit.inference.demo, "build_demo", lambda model, *args, **kwargs: Page())
    for name in ("EMOVIT_MODEL", "EMOVIT_DTYPE", "EMOVIT_QUANTIZATION"):
        monkeypatch.delenv(name, raising=False)
    done = run_script("app", ["--model", tiny_dir, "--quantization", "8bit"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "float32, 8bit" in done.stdout and len(served) == 1
    monkeypatch.setenv("EMOVIT_QUANTIZATION", "4bit")
    done = run_script("app", ["--model", tiny_dir], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [kwargs["quantization_config"].quant_method for _, kwargs in loaded] == ["bitsandbytes"] * 2
    assert_quantized(loaded[0][0], "8bit")
    assert_quantized(loaded[1][0], "4bit")


def test_the_pipeline_quantises_through_model_kwargs(tiny_dir):
    classifier = pipeline("visual-emotion-recognition", model=str(tiny_dir), trust_remote_code=True,
                          model_kwargs={"quantization_config": quantization_config("4bit")})
    assert_quantized(classifier.model, "4bit")
    image = random_images(1, seed=5)[0]
    expected = classifier.model.classify([image], classifier.processor)
    result = classifier(image)
    assert result[0]["label"] == expected.labels[0]
    labels = classifier.model.config.emotion_labels
    for entry in result:
        assert entry["score"] == pytest.approx(expected.scores[0, labels.index(entry["label"])].item(), abs=1e-6)


# ---------------------------------------------------------------------------------------------- errors


def test_an_unknown_quantization_is_refused_by_every_command(tiny_dir, eval_emoset_dir, tmp_path):
    with pytest.raises(ValueError, match=r"--quantization is '3bit'; use one of \['4bit', '8bit'\]"):
        check_quantization("3bit")
    for arguments in (lambda: PredictArguments(model=str(tiny_dir), quantization="int4"),
                      lambda: EvalArguments(model=str(tiny_dir), dataset=str(eval_emoset_dir), quantization="int4",
                                            output_dir=str(tmp_path / "out")),
                      lambda: ModelArguments(quantization="int4")):
        with pytest.raises(ValueError, match=r"--quantization is 'int4'; use one of \['4bit', '8bit'\]"):
            arguments()
    done = run_script("predict", ["--model", tiny_dir, "--quantization", "2bit", str(tmp_path)])
    assert done.returncode == 2 and "--quantization is '2bit'" in done.stderr
    done = run_script("app", ["--model", tiny_dir, "--quantization", "fp8"], cwd=tmp_path)
    assert done.returncode == 1 and "--quantization (or $EMOVIT_QUANTIZATION) is 'fp8'" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_bitsandbytes_every_command_says_to_install_it(tiny_dir, instructions_dir, tmp_path, monkeypatch,
                                                              loaded):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now fails, as where it is missing
    with pytest.raises(ImportError):
        import bitsandbytes  # noqa: F401
    message = r"--quantization 4bit needs bitsandbytes, which is not installed: `pip install bitsandbytes`"
    with pytest.raises(ValueError, match=message):
        quantization_config("4bit")
    with pytest.raises(ValueError, match=message):
        load_model(str(tiny_dir), torch.float32, "4bit")
    done = run_script("predict", ["--model", tiny_dir, "--quantization", "4bit", str(tmp_path)])
    assert done.returncode == 2 and "needs bitsandbytes" in done.stderr
    done = run_script("train", ["--model_name_or_path", tiny_dir, "--dataset", instructions_dir, "--output_dir",
                                tmp_path / "run", "--quantization", "4bit"])
    assert done.returncode == 1 and "--quantization 4bit needs bitsandbytes" in done.stderr
    assert not loaded and not (tmp_path / "run").exists()  # refused before anything loaded or was written
    check_quantization(None)  # leaving the flag out needs nothing


@pytest.mark.parametrize("launcher", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_quantised_training_under_fsdp_or_deepspeed_is_refused(tiny_dir, instructions_dir, tmp_path, monkeypatch,
                                                              launcher, loaded):
    from emovit.training.arguments import EmoVitTrainingArguments, check_quantized_training

    training_args = EmoVitTrainingArguments(output_dir=str(tmp_path), use_cpu=True)
    # What `accelerate launch --config_file configs/fsdp.yaml` (or a DeepSpeed config) tells the processes it starts.
    monkeypatch.setenv(launcher, "true")
    sharding = "FSDP" if launcher.endswith("FSDP") else "DeepSpeed"
    with pytest.raises(ValueError, match=rf"--quantization 4bit cannot train under {sharding} .*configs/ddp\.yaml"):
        check_quantized_training(ModelArguments(quantization="4bit"), training_args)
    check_quantized_training(ModelArguments(), training_args)
    if sharding == "FSDP":
        done = run_script("train", ["--model_name_or_path", tiny_dir, "--dataset", instructions_dir, "--output_dir",
                                    tmp_path / "run", "--quantization", "8bit", "--use_cpu"])
        assert done.returncode == 1 and "--quantization 8bit cannot train under FSDP" in done.stderr
        assert not loaded and not (tmp_path / "run").exists()  # refused before anything loaded or was written


# ---------------------------------------------------------------------------------------------- training


def quantised_for_training(folder, quantization):
    """The model as train.py loads it with --quantization, frozen for instruction tuning."""
    model = EmoVitForConditionalGeneration.from_pretrained(
        folder, quantization_config=quantization_config(quantization, for_training=True))
    model.freeze_for_instruction_tuning(freeze_unused=True)
    return model.train()


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_gradients_reach_the_q_former_through_the_quantised_language_model(tiny_dir, tiny_processor, quantization):
    model = quantised_for_training(tiny_dir, quantization)
    assert_quantized(model, quantization, vision_quantized=quantization == "8bit")
    model(**training_batch(tiny_processor, random_images(4))).loss.backward()
    trainable = {name: param for name, param in model.named_parameters() if param.requires_grad}
    assert trainable and all(name.startswith(model.TRAINABLE_PREFIXES) for name in trainable)
    assert all(param.dtype == torch.float32 for param in trainable.values())
    no_gradient = [name for name, param in trainable.items() if param.grad is None or not param.grad.abs().sum() > 0]
    assert not no_gradient, no_gradient[:5]
    assert all(param.grad is None for param in model.parameters() if not param.requires_grad)


@pytest.mark.parametrize("lora_r", [0, 4])
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft asks transformers
def test_the_unquantised_copy_holds_the_trained_tensors_and_the_base_weights(tiny_dir, tiny_processor, tmp_path,
                                                                            lora_r):
    model = quantised_for_training(tiny_dir, "4bit")
    if lora_r:
        model.add_lora(lora_r, dropout=0.0)
    optimizer = torch.optim.AdamW([param for param in model.parameters() if param.requires_grad], lr=1e-2)
    batch = training_batch(tiny_processor, random_images(4))
    for _ in range(2):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    trained = {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}

    copy = unquantized_copy(model, str(tiny_dir))
    state = copy.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in trained.items())
    if lora_r:
        copy.merge_lora()
    assert not any(type(module).__module__.startswith(("bitsandbytes", "peft")) for module in copy.modules())
    copy.save_pretrained(tmp_path / "saved")
    tiny_processor.save_pretrained(tmp_path / "saved")
    assert_full_precision_folder(tmp_path / "saved")

    base = EmoVitForConditionalGeneration.from_pretrained(tiny_dir).state_dict()
    saved = EmoVitForConditionalGeneration.from_pretrained(tmp_path / "saved").eval()
    changed = {name for name, tensor in saved.state_dict().items() if not torch.equal(tensor, base[name])}
    lora_targets = {f"language_model.model.layers.{layer}.self_attn.{projection}.weight" for layer in range(2)
                    for projection in ("q_proj", "v_proj")} if lora_r else set()
    # the frozen towers are the base's own weights (not dequantised ones), but where LoRA was merged into them
    assert {name for name in changed if not name.startswith(model.TRAINABLE_PREFIXES)} == lora_targets
    assert changed & set(trained)
    images = random_images(3, seed=2)
    # Reloaded as it trained, the folder scores as the trained model in memory did; unquantised, as its copy does.
    if not lora_r:  # the LoRA update, merged into full-precision weights, is no longer the quantised one's
        requantised = quantised_for_training(tmp_path / "saved", "4bit").eval()
        assert torch.allclose(requantised.classify(images, tiny_processor).scores,
                              model.classify(images, tiny_processor).scores, atol=1e-5)
    assert torch.allclose(saved.classify(images, tiny_processor).scores, copy.classify(images, tiny_processor).scores,
                          atol=1e-6)


@pytest.mark.parametrize("quantization, extra", [("4bit", []), ("8bit", ["--cache_vision_features"])])
def test_train_py_with_a_quantised_language_model_trains_the_q_former_side_and_saves_full_precision(
        tiny_dir, instructions_dir, tmp_path, quantization, extra):
    run = tmp_path / "run"
    # 24 categorical examples, batch 24: every step sees the same batch.
    done = run_script("train", [
        "--model_name_or_path", tiny_dir, "--dataset", instructions_dir, "--output_dir", run, "--types", "categorical",
        "--quantization", quantization, *extra, "--learning_rate", "1e-3", "--lr_scheduler_type", "constant",
        "--warmup_ratio", 0,
        "--per_device_train_batch_size", 24, "--max_steps", 4, "--logging_steps", 1, "--save_strategy", "steps",
        "--save_steps", 2, "--eval_strategy", "no", "--test_split", "none", "--report_to", "none", "--seed", 0,
        "--dataloader_num_workers", 0, "--weight_decay", 0.0])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    losses = [entry["loss"] for entry in json.loads((run / "training_log.json").read_text()) if "loss" in entry]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]

    assert_full_precision_folder(run)
    before = EmoVitForConditionalGeneration.from_pretrained(tiny_dir).state_dict()
    model = EmoVitForConditionalGeneration.from_pretrained(run).eval()
    changed = {name for name, tensor in model.state_dict().items() if not torch.equal(tensor, before[name])}
    assert changed and all(name.startswith(model.TRAINABLE_PREFIXES) for name in changed), sorted(changed)[:5]
    # checkpoints hold the trainable tensors in float32, and a config without the run's quantisation
    checkpoint = run / "checkpoint-2"
    assert set(saved_dtypes(checkpoint / "trainable_weights.safetensors").values()) == {"F32"}
    assert "quantization_config" not in json.loads((checkpoint / "config.json").read_text())
    assert f"frozen towers loaded in {quantization}" in (run / "README.md").read_text()
    if extra:  # the 8-bit ViT's features, cached once
        assert len(list((run / "vision_cache").glob("*/features.npy"))) == 1
    total = sum(param.numel() for param in model.parameters())
    assert f"of {total:,} (" in done.stdout  # every parameter counted, not the packed 4-bit bytes


# ---------------------------------------------------------------------------------------------- agreement


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    """A tiny EmoVIT trained the way the offline default is, smaller: a clean synthetic EmoSet sample (100 images per
    emotion, 160 of them held out), its categorical instruction data, the tiny base with its language model
    pretrained for 100 steps, and the Q-Former side trained for 300 steps. A random language model will not do here:
    its outputs swing with every weight, so 4-bit noise alone moves them. Returns (model folder, EmoSet root)."""
    from dataset_builder.build import BuildOptions, run_build
    from dataset_builder.synthetic import write_synthetic_emoset
    from emovit.training.tiny_base import build_pretrained_tiny_base

    work = tmp_path_factory.mktemp("trained")
    root, data, base, run = work / "emoset", work / "instructions", work / "base", work / "run"
    write_synthetic_emoset(root, images_per_class=100, seed=0, label_noise=0.0)
    run_build(BuildOptions(emoset_root=str(root), output_dir=str(data), llm_backend="template", types=("categorical",),
                           per_class={"categorical": 100}, captioner="none", seed=0, show_progress=False))
    build_pretrained_tiny_base(base, seed=0, num_pictures=1000, steps=100)
    done = run_script("train", [
        "--model_name_or_path", base, "--dataset", data, "--output_dir", run, "--types", "categorical",
        "--cache_vision_features", "--learning_rate", "3e-3", "--weight_decay", 0, "--warmup_ratio", 0.05,
        "--per_device_train_batch_size", 32, "--max_steps", 300, "--logging_steps", 50, "--eval_strategy", "no",
        "--test_split", "none", "--save_strategy", "no", "--report_to", "none", "--dataloader_num_workers", 0,
        "--seed", 0])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return run, root


def evaluate_predictions(model, root, output_dir, quantization=None) -> tuple[dict, str]:
    """evaluate.py on the held-out split, loaded with `quantization`: predictions.jsonl's lines by image id, and what
    it printed."""
    done = run_script("evaluate", ["--model", model, "--dataset", root, "--split", "test", "--output_dir", output_dir,
                                   *(["--quantization", quantization] if quantization else [])])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    return {line["id"]: line for line in lines}, done.stdout


@pytest.mark.integration  # a whole run: a tiny model trained for a few minutes, then evaluated three times
@pytest.mark.timeout(1200)  # 9.5 minutes measured on 2 CPU cores shared with other work
def test_a_trained_model_scores_the_held_out_split_quantised_as_unquantised(trained_model, tmp_path):
    folder, root = trained_model
    reference, printed = evaluate_predictions(folder, root, tmp_path / "unquantised")
    assert len(reference) == 160 and "accuracy " in printed
    for quantization in ("4bit", "8bit"):
        quantised, printed = evaluate_predictions(folder, root, tmp_path / quantization, quantization)
        assert quantised.keys() == reference.keys() and "accuracy " in printed
        agreement = sum(quantised[i]["prediction"] == reference[i]["prediction"] for i in reference) / len(reference)
        differences = torch.tensor([quantised[i]["scores"][label] - line["scores"][label]
                                    for i, line in reference.items() for label in line["scores"]]).abs()
        print(f"{quantization}: top-label agreement {agreement:.4f}, |dp| mean {differences.mean():.5f} max "
              f"{differences.max():.5f} on {len(reference)} held-out images")
        assert agreement >= 0.95, quantization
        assert differences.mean() < 0.05, quantization
