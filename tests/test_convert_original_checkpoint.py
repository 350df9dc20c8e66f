"""Round trips through LAVIS-named state dicts, written here from the LAVIS naming in REFERENCE.md."""

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
    lavis["Qformer.bert.embeddings.position_ids"] = torch.arange(8)[None]
    lavis["Qformer.cls.predictions.bias"] = torch.zeros(3)
    return lavis


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
    lavis = to_lavis(source.state_dict())
    # LAVIS's Vicuna vocabulary has no <image> token: one embedding row fewer than transformers'.
    image_row = source.config.image_token_index
    for key in ("llm_model.model.embed_tokens.weight", "llm_model.lm_head.weight"):
        assert lavis[key].shape[0] == image_row + 1
        lavis[key] = lavis[key][:image_row].clone()
    torch.save({"model": lavis}, tmp_path / "lavis.pth")

    report = main(["--checkpoint", str(tmp_path / "lavis.pth"), "--base_model", str(base_dir),
                   "--output_dir", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert report["mode"] == "full" and report["kept_from_base"] == 0
    assert "dropped: Qformer.bert.embeddings.position_ids" in printed and "dropped: Qformer.cls.predictions.bias" in printed
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
    assert "amusement" in card and "lavis.pth" in card and "mode: `full`" in card
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_full_lavis_dict_of_the_base_reproduces_its_logits(base_dir, tmp_path):
    base = EmoVitForConditionalGeneration.from_pretrained(base_dir)
    torch.save(to_lavis(base.state_dict()), tmp_path / "same.pth")  # bare state dict this time
    _, _, report = convert(tmp_path / "same.pth", base_dir)
    assert report["mode"] == "full" and report["max_logits_diff_vs_base"] == 0.0 and not report["changed_modules"]


def test_emovit_trained_tensors_on_base(base_dir, tmp_path):
    source = perturbed(base_dir, only_trained=True)
    lavis = to_lavis(source.state_dict())
    release = {k: v for k, v in lavis.items() if k.startswith(("Qformer.", "query_tokens", "llm_proj.", "ln_vision."))}
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
    with pytest.raises(KeyError, match=r"2 checkpoint keys have no mapping.*t5_proj.weight.*rel_pos_bias"):
        convert(tmp_path / "odd.pth", base_dir)


def test_partial_checkpoint_with_frozen_tensors_is_refused(base_dir, tmp_path):
    base = EmoVitForConditionalGeneration.from_pretrained(base_dir)
    lavis = {k: v for k, v in to_lavis(base.state_dict()).items() if k.startswith(("llm_proj", "visual_encoder.cls"))}
    torch.save(lavis, tmp_path / "partial.pth")
    with pytest.raises(KeyError, match="neither complete .* nor trained-only"):
        convert(tmp_path / "partial.pth", base_dir)


def test_missing_and_non_state_dict_files(base_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        convert(tmp_path / "nope.pth", base_dir)
    torch.save({"model": {"llm_proj.weight": [1, 2]}}, tmp_path / "lists.pth")
    with pytest.raises(ValueError, match="not tensors"):
        convert(tmp_path / "lists.pth", base_dir)
