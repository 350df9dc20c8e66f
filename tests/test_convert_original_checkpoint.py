"""Round trips through LAVIS-named state dicts, written here from LAVIS's naming and from what its checkpoints of
their day hold (every buffer, rotary inv_freq per LLaMA layer, fp16 Vicuna or bf16 FlanT5, the runner's wrapper and
its trimming by `named_parameters()`)."""

import json
import re

import pytest
import torch

from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor
from modeling_emovit.convert_original_checkpoint import convert, main


# LAVIS's prefixes of the language-model side: blip2_vicuna_instruct's and blip2_t5_instruct's.
LAVIS_LANGUAGE_MODEL = {"vicuna": ("llm_proj.", "llm_model."), "t5": ("t5_proj.", "t5_model.")}


def lavis_name(name, language_model="vicuna"):
    """A transformers name as LAVIS spells it (the inverse of the reference table); the ViT's qkv bias, which LAVIS
    splits in two, is `to_lavis`'s."""
    projection, model = LAVIS_LANGUAGE_MODEL[language_model]
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
        ("language_projection.", projection),
        ("language_model.", model),
    ]:
        name = name.replace(old, replacement)
    return name


def to_lavis(state_dict, language_model="vicuna"):
    """transformers names -> LAVIS names, plus, for Vicuna, the Q-Former's BERT head, which blip2_t5_instruct
    discards when it builds the model."""
    lavis = {}
    for name, tensor in state_dict.items():
        if name.endswith("self_attn.qkv.bias"):
            layer = re.search(r"layers\.(\d+)\.", name).group(1)
            q, k, v = tensor.chunk(3)
            assert not k.any(), "EVA has no k bias; the fixture must zero it"
            lavis[f"visual_encoder.blocks.{layer}.attn.q_bias"] = q.clone()
            lavis[f"visual_encoder.blocks.{layer}.attn.v_bias"] = v.clone()
            continue
        lavis[lavis_name(name, language_model)] = tensor.clone()
    if language_model == "vicuna":
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
    lavis["visual_encoder.head.weight"] = torch.zeros(2, 2)
    lavis["visual_encoder.rel_pos_bias.table"] = torch.zeros(2)
    torch.save({"model": lavis}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=r"2 checkpoint keys have no mapping.*head.weight.*rel_pos_bias.*"
                                         r"blip2_t5_instruct"):
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


@pytest.mark.parametrize("case", ["empty file", "unknown keys", "other language model"])
def test_the_command_ends_input_errors_in_one_line(base_dir, tmp_path, case):
    from testing_utils import run_main

    if case == "empty file":
        (tmp_path / "weights.pth").write_bytes(b"")
        message = f"convert_original_checkpoint: error: Checkpoint '{tmp_path / 'weights.pth'}'"
    elif case == "unknown keys":
        torch.save({"visual_encoder.head.weight": torch.zeros(2, 2)}, tmp_path / "weights.pth")
        message = ("convert_original_checkpoint: error: 1 checkpoint keys have no mapping to EmoVIT: "
                   "['visual_encoder.head.weight']")
    else:
        torch.save({"t5_proj.weight": torch.zeros(2, 2)}, tmp_path / "weights.pth")
        message = (f"convert_original_checkpoint: error: Checkpoint '{tmp_path / 'weights.pth'}' is a LAVIS "
                   f"blip2_t5_instruct checkpoint (it holds 't5_proj.weight'), but --base_model '{base_dir}' has a "
                   "decoder-only language model (llama)")
    done = run_main("convert_original_checkpoint", main, ["--checkpoint", tmp_path / "weights.pth", "--base_model",
                                                          base_dir, "--output_dir", tmp_path / "out"])
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert message in done.stderr
    assert not (tmp_path / "out").exists()


# ---- blip2_t5_instruct: FlanT5 under `t5_model.`, its projection `t5_proj`


@pytest.fixture()
def t5_base_dir(tmp_path, tiny_t5_dir):
    """The tiny T5 EmoVIT as InstructBLIP-FlanT5 is: zero k-biases in the ViT, and an output head of its own (FlanT5
    does not tie `lm_head` to `shared`; transformers keeps them apart when a checkpoint holds both)."""
    model = EmoVitForConditionalGeneration.from_pretrained(tiny_t5_dir)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in model.vision_model.encoder.layers:
            layer.self_attn.qkv.bias.view(3, -1)[1].zero_()
        shared = model.language_model.shared.weight
        model.language_model.lm_head.weight = torch.nn.Parameter(torch.randn(shared.shape, generator=generator) * 0.05)
    model.save_pretrained(tmp_path / "t5-base")
    EmoVitProcessor.from_pretrained(tiny_t5_dir).save_pretrained(tmp_path / "t5-base")
    return tmp_path / "t5-base"


def lavis_t5(model, trained_only=False):
    """What LAVIS's runner saves for a blip2_t5_instruct `model`: FlanT5 in bfloat16 (LAVIS casts it when it builds
    the model), the Q-Former's position_ids buffer, no Q-Former BERT head; with `trained_only`, its trimming: a key is
    dropped when `named_parameters()` lists it and it does not train. That listing names each tensor once
    (`shared.weight`), so the encoder's and decoder's `embed_tokens`, the same frozen embedding, stay."""
    lavis = to_lavis(model.state_dict(), "t5")
    if trained_only:
        listed_frozen = set()
        for name, _ in model.named_parameters():
            if name.startswith(EmoVitForConditionalGeneration.TRAINABLE_PREFIXES):
                continue
            if name.endswith("self_attn.qkv.bias"):  # LAVIS's q_bias and v_bias, frozen with the ViT
                block = lavis_name(name).removesuffix("qkv.bias")
                listed_frozen |= {block + "q_bias", block + "v_bias"}
            listed_frozen.add(lavis_name(name, "t5"))
        lavis = {k: v for k, v in lavis.items() if k not in listed_frozen}
    lavis = {k: v.bfloat16() if k.startswith("t5_model.") else v for k, v in lavis.items()}
    positions = model.config.qformer_config.max_position_embeddings
    lavis["Qformer.bert.embeddings.position_ids"] = torch.arange(positions)[None]
    return lavis


def round_language_model_to_bf16(model):
    """What LAVIS computes with: the FlanT5 weights rounded to bfloat16."""
    with torch.no_grad():
        for param in model.language_model.parameters():
            param.copy_(param.bfloat16().float())


def assert_same_predictions(model, source, processor, images):
    """The converted model's training logits, greedy continuation, label scores and generated labels are the
    source's."""
    logits, ids = first_image_logits_and_greedy(model, processor, images)
    expected_logits, expected_ids = first_image_logits_and_greedy(source, processor, images)
    assert (logits - expected_logits).abs().max().item() < 1e-4 and torch.equal(ids, expected_ids)
    scored, expected = model.classify(images, processor), source.classify(images, processor)
    assert scored.labels == expected.labels
    assert (scored.log_likelihoods - expected.log_likelihoods).abs().max().item() < 1e-4
    assert model.classify(images, processor, method="generate").texts == \
        source.classify(images, processor, method="generate").texts


def test_t5_full_lavis_state_dict_round_trip(t5_base_dir, tmp_path, capsys, images):
    source = perturbed(t5_base_dir, only_trained=False)
    lavis = lavis_t5(source)
    assert lavis["t5_model.shared.weight"].dtype == torch.bfloat16
    assert not any(key.startswith("Qformer.cls") for key in lavis)
    torch.save(runner_checkpoint(lavis), tmp_path / "lavis_t5.pth")

    report = main(["--checkpoint", str(tmp_path / "lavis_t5.pth"), "--base_model", str(t5_base_dir),
                   "--output_dir", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert report["lavis_model"] == "blip2_t5_instruct" and report["lavis_model_key"] == "t5_proj.bias"
    assert report["language_model"] == "t5" and report["decoder_only"] is False
    assert report["mode"] == "full" and report["kept_from_base"] == 0 and report["checkpoint_dtypes"]["bfloat16"] > 0
    assert report["tied_copies"] == {f"t5_model.{stack}.embed_tokens.weight": {"of": "t5_model.shared.weight",
                                                                               "max_abs_diff": 0.0}
                                     for stack in ("encoder", "decoder")}
    assert report["dropped_keys"] == [] and report["notes"] == [] and list(report["computed_buffers"]) == [
        "Q-Former position_ids"]
    assert set(report["changed_modules"]) == {"vision_model", "vision_model.post_layernorm", "qformer", "query_tokens",
                                              "language_projection", "language_model"}
    assert "LAVIS model: blip2_t5_instruct (from key t5_proj.bias); language model: t5, encoder-decoder" in printed
    assert "checked and dropped tied copy t5_model.decoder.embed_tokens.weight" in printed

    round_language_model_to_bf16(source)
    converted = EmoVitForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    expected = source.state_dict()
    assert converted.state_dict().keys() == expected.keys()
    for name, tensor in converted.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert not torch.equal(converted.language_model.lm_head.weight, converted.language_model.shared.weight)

    saved = json.loads((tmp_path / "out" / "processor_config.json").read_text())
    assert saved["use_decoder_only_language_model"] is False
    processor = EmoVitProcessor.from_pretrained(tmp_path / "out")
    assert processor.use_decoder_only_language_model is False
    assert_same_predictions(converted, source.eval(), processor, images)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "`blip2_t5_instruct` (told by `t5_proj.bias`)" in card and "t5 (encoder-decoder)" in card
    assert "`t5_model.encoder.embed_tokens.weight` (as t5_model.shared.weight" in card


def test_t5_trained_only_checkpoint_on_base(t5_base_dir, tmp_path, images):
    source = perturbed(t5_base_dir, only_trained=True).eval()
    release = lavis_t5(source, trained_only=True)
    copies = {f"t5_model.{stack}.embed_tokens.weight" for stack in ("encoder", "decoder")}
    assert {k for k in release if k.startswith("t5_model.")} == copies
    torch.save(runner_checkpoint(release), tmp_path / "checkpoint_best.pth")

    _, processor, report = convert(tmp_path / "checkpoint_best.pth", t5_base_dir, tmp_path / "out")
    assert report["mode"] == "trained" and report["lavis_model"] == "blip2_t5_instruct"
    assert set(report["changed_modules"]) == {"qformer", "query_tokens", "language_projection",
                                              "vision_model.post_layernorm"}
    assert set(report["tied_copies"]) == copies
    for entry in report["tied_copies"].values():  # bf16 copies of the base's fp32 embedding: rounding, no more
        assert entry["of"] == f"{t5_base_dir} language_model.shared.weight" and 0 < entry["max_abs_diff"] < 1e-2
    assert processor.use_decoder_only_language_model is False

    base = EmoVitForConditionalGeneration.from_pretrained(t5_base_dir).state_dict()
    converted = EmoVitForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    expected = source.state_dict()
    for name, tensor in converted.state_dict().items():
        assert torch.equal(tensor, expected[name]), name  # trained tensors from the file ...
        if name.startswith(("vision_model.encoder", "vision_model.embeddings", "language_model")):
            assert torch.equal(tensor, base[name]), name  # ... and the frozen towers from the base
    assert_same_predictions(converted, source, EmoVitProcessor.from_pretrained(tmp_path / "out"), images)


def test_a_checkpoint_onto_a_base_with_the_other_language_model_is_refused(base_dir, t5_base_dir, tmp_path):
    t5 = EmoVitForConditionalGeneration.from_pretrained(t5_base_dir)
    torch.save({"model": lavis_t5(t5, trained_only=True)}, tmp_path / "t5.pth")
    with pytest.raises(ValueError, match=r"Checkpoint '.*t5\.pth' is a LAVIS blip2_t5_instruct checkpoint \(it holds "
                                         r"'t5_proj.bias'\), but --base_model '.*base' has a decoder-only language "
                                         r"model \(llama\)\. Pass a base model with an encoder-decoder FlanT5"):
        convert(tmp_path / "t5.pth", base_dir)

    vicuna = EmoVitForConditionalGeneration.from_pretrained(base_dir)
    torch.save({"model": lavis_era(vicuna, trained_only=True)}, tmp_path / "vicuna.pth")
    with pytest.raises(ValueError, match=r"'.*vicuna\.pth' is a LAVIS blip2_vicuna_instruct checkpoint \(it holds "
                                         r"'llm_proj.bias'\), but --base_model '.*t5-base' has an encoder-decoder "
                                         r"language model \(t5\)\. Pass a base model with a decoder-only Vicuna"):
        convert(tmp_path / "vicuna.pth", t5_base_dir)

    mixed = lavis_t5(t5)
    mixed["llm_proj.weight"] = mixed["t5_proj.weight"]
    torch.save(mixed, tmp_path / "mixed.pth")
    with pytest.raises(ValueError, match=r"holds keys of two LAVIS models: 'llm_proj.weight' "
                                         r"\(blip2_vicuna_instruct\), 't5_proj.bias' \(blip2_t5_instruct\)"):
        convert(tmp_path / "mixed.pth", t5_base_dir)


def test_t5_missing_and_unexpected_keys_are_errors(t5_base_dir, tmp_path):
    base = EmoVitForConditionalGeneration.from_pretrained(t5_base_dir)
    release = lavis_t5(base, trained_only=True)
    del release["query_tokens"], release["t5_proj.bias"]
    torch.save({"model": release}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"lacks 2 of the tensors EmoVIT trains.*language_projection.bias.*"
                                         r"query_tokens"):
        convert(tmp_path / "partial.pth", t5_base_dir)

    # The encoder-decoder attention's relative bias that T5 checkpoints of old carried and no T5 block has.
    old = lavis_t5(base)
    old["t5_model.decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = torch.zeros(32, 4)
    torch.save({"model": old}, tmp_path / "old.pth")
    with pytest.raises(ValueError, match=r"Mapped keys that .*t5-base does not have: \['language_model.decoder.block.0"
                                         r".layer.1.EncDecAttention.relative_attention_bias.weight'\]"):
        convert(tmp_path / "old.pth", t5_base_dir)

    odd = lavis_t5(base)
    odd["t5_proj.scale"] = torch.ones(2)
    torch.save({"model": odd}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=r"1 checkpoint keys have no mapping to EmoVIT: \['t5_proj.scale'\]"):
        convert(tmp_path / "odd.pth", t5_base_dir)


def test_t5_tied_copies_that_disagree_are_refused(t5_base_dir, tiny_t5_dir, tmp_path):
    base = EmoVitForConditionalGeneration.from_pretrained(t5_base_dir)
    damaged = lavis_t5(base)
    damaged["t5_model.encoder.embed_tokens.weight"] = damaged["t5_model.encoder.embed_tokens.weight"] + 1
    torch.save(damaged, tmp_path / "damaged.pth")
    with pytest.raises(ValueError, match=r"'t5_model.encoder.embed_tokens.weight' and 't5_model.shared.weight' differ"):
        convert(tmp_path / "damaged.pth", t5_base_dir)

    # Trained on another FlanT5: the frozen embedding the trimmed file keeps is not the base's.
    other = lavis_t5(base, trained_only=True)
    for stack in ("encoder", "decoder"):
        other[f"t5_model.{stack}.embed_tokens.weight"] = other[f"t5_model.{stack}.embed_tokens.weight"] * 1.5
    torch.save(other, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"2 stored copies of frozen tensors disagree with --base_model .*trained on "
                                         r"another language model"):
        convert(tmp_path / "other.pth", t5_base_dir)

    # The tiny preset ties lm_head to shared, as transformers' T5 does by default; a FlanT5 file has its own head.
    torch.save(lavis_t5(base), tmp_path / "untied.pth")
    with pytest.raises(ValueError, match=r"'t5_model.lm_head.weight' and 't5_model.shared.weight' differ, but "
                                         r"--base_model .* holds them as one tensor"):
        convert(tmp_path / "untied.pth", tiny_t5_dir)
