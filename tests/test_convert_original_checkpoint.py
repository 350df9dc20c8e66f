"""Round trips through LAVIS-named state dicts, written here from LAVIS's naming and from what its checkpoints of
their day hold (every buffer, rotary inv_freq per LLaMA layer, fp16 language model, the runner's wrapper)."""

import re

import pytest
import torch

from modeling_emovit import EmoVitForConditionalGeneration
from modeling_emovit.convert_original_checkpoint import convert, main


def to_lavis(state_dict):
    """transformers names -> LAVIS names (the inverse of the reference table), plus the keys LAVIS has that
    transformers does not (position_ids, the Q-Former's BERT head)."""
    lavis = {}
    for name, tensor in state_dict.items():
        if name.endswith("self_attn.qkv.bias"):
            layer = re.search(r"layers\.(\d+)\.", name).group(1)
            q, k, v = tensor.chunk(3)
            assert not k.any(), "EVA has no k bias; the fixture must zero it"
            lavis[f"visual_encoder.blocks.{layer}.attn.q_bias"] = q.clone()
            lavis[f"visual_encoder.blocks.{layer}.attn.v_bias"] = v.clone()
            continue
        new = name
        for old, replacement in [
            ("vision_model.embeddings.class_embedding", "visual_encoder.cls_token"),
            ("vision_model.embeddings.position_embedding", "visual_encoder.pos_embed"),
            ("vision_model.embeddings.patch_embedding.", "visual_encoder.patch_embed.proj."),
            ("vision_model.encoder.layers.", "visual_encoder.blocks."),
            (".layer_norm1.", ".norm1."),
            (".layer_norm2.", ".norm2."),
            (".self_attn.qkv.", ".attn.qkv."),
            (".self_attn.projection.", ".attn.proj."),
            ("vision_model.post_layernorm.", "ln_vision."),
            ("qformer.embeddings.layernorm.", "Qformer.bert.embeddings.LayerNorm."),
            ("qformer.", "Qformer.bert."),
            ("attention.attention.", "attention.self."),
            ("language_projection.", "llm_proj."),
            ("language_model.", "llm_model."),
        ]:
            new = new.replace(old, replacement)
        lavis[new] = tensor.clone()
    lavis["Qformer.cls.predictions.bias"] = torch.zeros(3)
    return lavis


def lavis_era(model, trained_only=False, llm_dtype=None, cos_sin=False, theta=None):
    """The state dict LAVIS's runner saves for `model`, as the transformers of LAVIS's day built it: every buffer is
    kept (the Q-Former's position_ids, each LLaMA layer's rotary inv_freq, and in some releases cos/sin caches), and
    with `trained_only` the parameters that do not train are dropped (buffers stay)."""
    lavis = to_lavis(model.state_dict())
    if trained_only:
        lavis = {k: v for k, v in lavis.items() if k.startswith(("Qformer.", "query_tokens", "llm_proj.", "ln_vision."))}
    if llm_dtype is not None:
        lavis = {k: v.to(llm_dtype) if k.startswith("llm_model.") else v for k, v in lavis.items()}
    lavis["Qformer.bert.embeddings.position_ids"] = torch.arange(model.config.qformer_config.max_position_embeddings)[None]
    text = model.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    base = theta if theta is not None else text.rope_parameters["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))  # LLaMA's formula of the day
    angles = torch.outer(torch.arange(text.max_position_embeddings).float(), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    for layer in range(text.num_hidden_layers):
        prefix = f"llm_model.model.layers.{layer}.self_attn.rotary_emb."
        lavis[prefix + "inv_freq"] = inv_freq.clone()
        if cos_sin:
            lavis[prefix + "cos_cached"] = angles.cos()[None, None]
            lavis[prefix + "sin_cached"] = angles.sin()[None, None]
    return lavis


def runner_checkpoint(state_dict):
    """What LAVIS's runner writes: the model beside optimizer, config, scaler and epoch."""
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 1e-5}]}
    return {"model": state_dict, "optimizer": optimizer, "config": {"run": {"lr": 1e-5}}, "scaler": None, "epoch": 3}


def first_image_logits_and_greedy(model, processor, images):
    """Logits of a training batch and the greedy continuation of the categorical prompt. The `<image>` token, which
    LAVIS's vocabulary never had, is left out of both."""
    image_token = model.config.image_token_index
    batch = processor.training_features([processor.categorical_instruction] * len(images),
                                        ["Predict emotion: awe"] * len(images), images=images)
    prompt = processor.classification_inputs(images)
    prompt = {k: v for k, v in prompt.items() if not k.startswith("candidate_")}
    with torch.no_grad():
        logits = model.eval()(**batch).logits[..., :image_token]
        greedy = model.generate(**prompt, do_sample=False, max_new_tokens=10, suppress_tokens=[image_token],
                                pad_token_id=processor.tokenizer.pad_token_id)
    return logits, greedy


@pytest.fixture()
def base_dir(tmp_path, tiny_dir):
    """The tiny EmoVIT with zero k-biases in the ViT (EVA has none), saved as the --base_model."""
    model = EmoVitForConditionalGeneration.from_pretrained(tiny_dir)
    with torch.no_grad():
        for layer in model.vision_model.encoder.layers:
            layer.self_attn.qkv.bias.view(3, -1)[1].zero_()
    from modeling_emovit import EmoVitProcessor

    model.save_pretrained(tmp_path / "base")
    EmoVitProcessor.from_pretrained(tiny_dir).save_pretrained(tmp_path / "base")
    return tmp_path / "base"


def perturbed(base_dir, only_trained):
    model = EmoVitForConditionalGeneration.from_pretrained(base_dir)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            trained = name.startswith(("qformer.", "query_tokens", "language_projection.", "vision_model.post_layer"))
            if trained or not only_trained:
                if name.endswith("self_attn.qkv.bias"):
                    param.view(3, -1)[0].add_(torch.randn(param.shape[0] // 3, generator=generator) * 0.1)
                else:
                    param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


def test_full_lavis_state_dict_round_trip(base_dir, tmp_path, capsys, images):
    source = perturbed(base_dir, only_trained=False)
    lavis = lavis_era(source, cos_sin=True)
    # LAVIS's Vicuna vocabulary has no <image> token: one embedding row fewer than transformers'.
    image_row = source.config.image_token_index
    for key in ("llm_model.model.embed_tokens.weight", "llm_model.lm_head.weight"):
        assert lavis[key].shape[0] == image_row + 1
        lavis[key] = lavis[key][:image_row].clone()
    torch.save(runner_checkpoint(lavis), tmp_path / "lavis.pth")

    report = main(["--checkpoint", str(tmp_path / "lavis.pth"), "--base_model", str(base_dir),
                   "--output_dir", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    layers = source.config.text_config.num_hidden_layers
    assert report["mode"] == "full" and report["kept_from_base"] == 0
    assert report["dropped_keys"] == ["Qformer.cls.predictions.bias"] and "dropped: Qformer.cls.predictions.bias" in printed
    assert report["computed_buffers"]["rotary inv_freq"]["count"] == layers
    assert report["computed_buffers"]["rotary cos/sin cache"]["count"] == 2 * layers
    assert report["computed_buffers"]["Q-Former position_ids"] == {"count": 1, "max_abs_diff": 0.0}
    assert all(entry["max_abs_diff"] < 1e-6 for entry in report["computed_buffers"].values())
    assert f"checked and dropped {layers} stored rotary inv_freq buffers" in printed
    assert "max |logits difference| vs unconverted base model" in printed and report["max_logits_diff_vs_base"] > 0
    assert set(report["changed_modules"]) >= {"vision_model", "qformer", "language_model"}

    converted = EmoVitForConditionalGeneration.from_pretrained(tmp_path / "out")
    expected = source.state_dict()
    for name, tensor in converted.state_dict().items():
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            assert torch.equal(tensor[:image_row], expected[name][:image_row]), name
        else:
            assert torch.equal(tensor, expected[name]), name
    card = (tmp_path / "out" / "README.md").read_text()
    assert "amusement" in card and "lavis.pth" in card and "mode: `full`" in card and "rotary inv_freq" in card
    assert 'pipeline("visual-emotion-recognition", model="out", trust_remote_code=True)' in card
    assert "model-index" not in card.split("---")[1] and "None measured on this conversion" in card
    assert (tmp_path / "out" / "pipeline_emovit.py").is_file()
    assert (tmp_path / "out" / "model.safetensors").exists() and not (tmp_path / "out" / "README.md.tmp").exists()


def test_lavis_era_checkpoints_reproduce_their_model(base_dir, tmp_path, tiny_processor, images):
    """A full checkpoint (fp16 language model, as LAVIS loads Vicuna) and a trimmed one (trained tensors plus every
    buffer) converted onto the base give the logits of the model they were saved from to 1e-4, and its greedy ids."""
    full_source = perturbed(base_dir, only_trained=False)
    full = lavis_era(full_source, llm_dtype=torch.float16)
    image_row = full_source.config.image_token_index
    for key in ("llm_model.model.embed_tokens.weight", "llm_model.lm_head.weight"):
        full[key] = full[key][:image_row].clone()
    torch.save(runner_checkpoint(full), tmp_path / "full.pth")
    with torch.no_grad():  # what LAVIS computes with: the language model rounded to fp16
        for param in full_source.language_model.parameters():
            param.copy_(param.half().float())

    trimmed_source = perturbed(base_dir, only_trained=True)
    torch.save({"state_dict": lavis_era(trimmed_source, trained_only=True)}, tmp_path / "trimmed.pth")

    for name, source in (("full", full_source), ("trimmed", trimmed_source)):
        model, _, report = convert(tmp_path / f"{name}.pth", base_dir)
        assert report["mode"] == name.replace("trimmed", "trained")
        assert report["computed_buffers"]["rotary inv_freq"]["count"] == source.config.text_config.num_hidden_layers
        expected_logits, expected_ids = first_image_logits_and_greedy(source, tiny_processor, images)
        logits, ids = first_image_logits_and_greedy(model, tiny_processor, images)
        assert (logits - expected_logits).abs().max().item() < 1e-4, name
        assert torch.equal(ids, expected_ids), name
    assert report["checkpoint_dtypes"] == {"float32": len(lavis_era(trimmed_source, trained_only=True)) - 1,
                                           "int64": 1}


def test_fp16_trimmed_checkpoint(base_dir, tmp_path, tiny_processor, images):
    source = perturbed(base_dir, only_trained=True)
    release = {k: v.half() if v.is_floating_point() else v
               for k, v in lavis_era(source, trained_only=True).items()}
    torch.save({"model": release}, tmp_path / "fp16.pth")
    model, _, report = convert(tmp_path / "fp16.pth", base_dir)
    assert report["checkpoint_dtypes"]["float16"] == len(release) - 1
    assert 0 < report["computed_buffers"]["rotary inv_freq"]["max_abs_diff"] < 1e-3  # fp16's own rounding
    with torch.no_grad():
        for name, param in source.named_parameters():
            if name.startswith(EmoVitForConditionalGeneration.TRAINABLE_PREFIXES):
                param.copy_(param.half().float())
    expected_logits, expected_ids = first_image_logits_and_greedy(source, tiny_processor, images)
    logits, ids = first_image_logits_and_greedy(model, tiny_processor, images)
    assert (logits - expected_logits).abs().max().item() < 1e-4 and torch.equal(ids, expected_ids)


def test_rotary_buffers_of_another_rope_base_are_an_error(base_dir, tmp_path):
    base = EmoVitForConditionalGeneration.from_pretrained(base_dir)
    torch.save({"model": lavis_era(base, theta=500000.0)}, tmp_path / "rope.pth")
    with pytest.raises(ValueError, match=r"2 stored buffers disagree.*rotary_emb.inv_freq.*matching --base_model"):
        convert(tmp_path / "rope.pth", base_dir)


def test_full_lavis_dict_of_the_base_reproduces_its_logits(base_dir, tmp_path):
    base = EmoVitForConditionalGeneration.from_pretrained(base_dir)
    torch.save(lavis_era(base), tmp_path / "same.pth")  # bare state dict this time
    _, _, report = convert(tmp_path / "same.pth", base_dir)
    assert report["mode"] == "full" and report["max_logits_diff_vs_base"] == 0.0 and not report["changed_modules"]


def test_emovit_trained_tensors_on_base(base_dir, tmp_path):
    source = perturbed(base_dir, only_trained=True)
    release = lavis_era(source, trained_only=True)
    torch.save({"model": release}, tmp_path / "model_weights1.pth")

    model, _, report = convert(tmp_path / "model_weights1.pth", base_dir, tmp_path / "out")
    assert report["mode"] == "trained"
    assert set(report["changed_modules"]) == {"qformer", "query_tokens", "language_projection",
                                              "vision_model.post_layernorm"}
    assert report["max_logits_diff_vs_base"] > 0
    base = EmoVitForConditionalGeneration.from_pretrained(base_dir).state_dict()
    reloaded = EmoVitForConditionalGeneration.from_pretrained(tmp_path / "out").state_dict()
    expected = source.state_dict()
    for name, tensor in reloaded.items():
        assert torch.equal(tensor, expected[name]), name  # trained tensors from the file ...
        if name.startswith(("vision_model.encoder", "vision_model.embeddings", "language_model")):
            assert torch.equal(tensor, base[name]), name  # ... and the frozen towers from the base


def test_unknown_keys_are_listed(base_dir, tmp_path):
    base = EmoVitForConditionalGeneration.from_pretrained(base_dir)
    lavis = to_lavis(base.state_dict())
    lavis["t5_proj.weight"] = torch.zeros(2, 2)
    lavis["visual_encoder.rel_pos_bias.table"] = torch.zeros(2)
    torch.save({"model": lavis}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=r"2 checkpoint keys have no mapping.*t5_proj.weight.*rel_pos_bias"):
        convert(tmp_path / "odd.pth", base_dir)


def test_partial_checkpoint_with_frozen_tensors_is_refused(base_dir, tmp_path):
    base = EmoVitForConditionalGeneration.from_pretrained(base_dir)
    lavis = {k: v for k, v in to_lavis(base.state_dict()).items() if k.startswith(("llm_proj", "visual_encoder.cls"))}
    torch.save(lavis, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="neither complete .* nor trained-only"):
        convert(tmp_path / "partial.pth", base_dir)


def test_missing_and_non_state_dict_files(base_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        convert(tmp_path / "nope.pth", base_dir)
    torch.save({"model": {"llm_proj.weight": [1, 2]}}, tmp_path / "lists.pth")
    with pytest.raises(ValueError, match="not tensors"):
        convert(tmp_path / "lists.pth", base_dir)


def test_trained_only_checkpoint_missing_trained_tensors_is_an_error(base_dir, tmp_path):
    base = EmoVitForConditionalGeneration.from_pretrained(base_dir)
    release = lavis_era(base, trained_only=True)
    del release["query_tokens"], release["llm_proj.bias"]
    torch.save({"model": release}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"lacks 2 of the tensors EmoVIT trains.*language_projection.bias.*query_tokens"):
        convert(tmp_path / "partial.pth", base_dir)


def test_non_finite_weights_are_an_error(base_dir, tmp_path):
    base = EmoVitForConditionalGeneration.from_pretrained(base_dir)
    release = lavis_era(base, trained_only=True)
    release["llm_proj.weight"][0, 0] = float("nan")
    release["query_tokens"][0, 0, 0] = float("inf")
    torch.save({"model": release}, tmp_path / "nan.pth")
    with pytest.raises(ValueError, match=r"2 tensors hold NaN or Inf.*language_projection.weight.*query_tokens"):
        convert(tmp_path / "nan.pth", base_dir)


def test_directory_as_checkpoint_says_so(base_dir, tmp_path):
    (tmp_path / "run").mkdir()
    torch.save({}, tmp_path / "run" / "checkpoint_best.pth")
    with pytest.raises(IsADirectoryError, match=r"is a directory.*checkpoint_best.pth"):
        convert(tmp_path / "run", base_dir)


@pytest.mark.parametrize("content", [bytes(range(256)) * 8, b"", b"model weights, as text\n"],
                         ids=["random bytes", "empty", "text"])
def test_a_file_that_is_no_checkpoint_is_named(base_dir, tmp_path, content):
    (tmp_path / "weights.pth").write_bytes(content)
    with pytest.raises(ValueError, match=r"Checkpoint '.*weights\.pth' could not be read as a PyTorch checkpoint"):
        convert(tmp_path / "weights.pth", base_dir)


def test_a_tensor_that_is_not_floating_point_is_refused_by_name(base_dir, tmp_path):
    base = EmoVitForConditionalGeneration.from_pretrained(base_dir)
    release = lavis_era(base, trained_only=True)
    release["llm_proj.weight"] = release["llm_proj.weight"].round().to(torch.int32)
    torch.save({"model": release}, tmp_path / "int.pth")
    with pytest.raises(ValueError, match=r"int\.pth: 1 tensors are not floating point.*llm_proj\.weight \(int32\)"):
        convert(tmp_path / "int.pth", base_dir)


@pytest.mark.parametrize("case", ["empty file", "unknown keys"])
def test_the_command_ends_input_errors_in_one_line(base_dir, tmp_path, case):
    from testing_utils import run_main

    if case == "empty file":
        (tmp_path / "weights.pth").write_bytes(b"")
        message = f"convert_original_checkpoint: error: Checkpoint '{tmp_path / 'weights.pth'}'"
    else:
        torch.save({"t5_proj.weight": torch.zeros(2, 2)}, tmp_path / "weights.pth")
        message = "convert_original_checkpoint: error: 1 checkpoint keys have no mapping to EmoVIT: ['t5_proj.weight']"
    done = run_main("convert_original_checkpoint", main, ["--checkpoint", tmp_path / "weights.pth", "--base_model",
                                                          base_dir, "--output_dir", tmp_path / "out"])
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert message in done.stderr
    assert not (tmp_path / "out").exists()
