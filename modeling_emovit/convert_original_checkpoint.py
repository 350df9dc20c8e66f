# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""Convert a LAVIS / official EmoVIT checkpoint into a transformers EmoVIT folder.

    python -m modeling_emovit.convert_original_checkpoint --checkpoint model_weights1.pth \
        --base_model Salesforce/instructblip-vicuna-7b --output_dir emovit-vicuna-7b [--push_to_hub USER/emovit-vicuna-7b]
    python -m modeling_emovit.convert_original_checkpoint --checkpoint checkpoint_best.pth \
        --base_model Salesforce/instructblip-flan-t5-xl --output_dir emovit-flan-t5-xl

Checkpoints of both LAVIS InstructBLIP models convert: `blip2_vicuna_instruct` (Vicuna under `llm_model.`, projection
`llm_proj`) and `blip2_t5_instruct` (FlanT5-XL/XXL under `t5_model.`, projection `t5_proj`). Which one a file is
comes from its keys, and `--base_model` must have that language model (decoder-only Vicuna, encoder-decoder FlanT5);
the saved processor lays out batches for it.

Two kinds of file are accepted, as `{"model": state_dict}` or as a bare state dict:
(a) a full LAVIS state dict: every weight comes from the file; `--base_model` supplies the configuration and the
    tokenizers only (and the `<image>` embedding row, which LAVIS's Vicuna never had);
(b) a file holding only the tensors EmoVIT trains (Q-Former, query tokens, `llm_proj`/`t5_proj`, `ln_vision`), as the
    official EmoVIT release `model_weights1.pth` and LAVIS's own training checkpoints do: they replace those of
    `--base_model`, everything else stays.

Every key is mapped through the table below, checked and dropped by name, or stops the conversion:
- LAVIS saved its checkpoints with the transformers of its day and kept every buffer. Buffers that today's
  transformers computes instead of storing (each LLaMA layer's `self_attn.rotary_emb.inv_freq`, the rotary
  `cos_cached`/`sin_cached` of some releases, the Q-Former's `position_ids`) are compared with what `--base_model`
  computes, the largest difference is reported, and they are dropped; a real disagreement (another RoPE base, say) is
  an error.
- The Q-Former's BERT language-model head (`Qformer.cls.*`), used only in its pretraining, is dropped.
- Names under which the model holds a tensor it already holds under another name (FlanT5's
  `t5_model.encoder.embed_tokens.weight` and `t5_model.decoder.embed_tokens.weight` are its `t5_model.shared.weight`)
  are compared with that tensor, or with `--base_model`'s when the file lacks it, and dropped. LAVIS trims its
  checkpoints by `named_parameters()`, which lists a shared tensor once, so even a trained-only FlanT5 file keeps
  these two copies of the frozen embedding.
- Any other unknown key is an error that lists it.
The file may wrap its state dict as `{"model": ...}` (LAVIS, with its optimizer, config, scaler and epoch beside
it) or `{"state_dict": ...}`; tensors of any floating dtype (LAVIS trains in fp16) are cast to `--dtype`, and any other
dtype (an integer tensor of a quantised or damaged file) is refused by name. A trained-only file must hold every
tensor EmoVIT trains, and no tensor may hold NaN or Inf. A file torch.load cannot read is named in the error. Before saving, the script runs the
converted model and the unconverted `--base_model` on a test image and prints the largest logits difference, and
lists which modules changed. Files are read with `torch.load(..., weights_only=True)`; the output is safetensors +
processor + a model card.
"""

import argparse
import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emovit_utils.commands import run_command
from emovit_utils.hub import push_folder, usage_snippet, write_card

from .configuration_emovit import EMOSET_EMOTIONS, EmoVitConfig
from .image_utils import open_image
from .modeling_emovit import EmoVitForConditionalGeneration
from .processing_emovit import EmoVitProcessor, format_answer


# LAVIS name -> transformers name, tried in order. `{i}` layers are matched by regex groups.
KEY_MAPPING = [
    (r"^visual_encoder\.cls_token$", "vision_model.embeddings.class_embedding"),
    (r"^visual_encoder\.pos_embed$", "vision_model.embeddings.position_embedding"),
    (r"^visual_encoder\.patch_embed\.proj\.(weight|bias)$", r"vision_model.embeddings.patch_embedding.\1"),
    (r"^visual_encoder\.blocks\.(\d+)\.norm1\.(weight|bias)$", r"vision_model.encoder.layers.\1.layer_norm1.\2"),
    (r"^visual_encoder\.blocks\.(\d+)\.norm2\.(weight|bias)$", r"vision_model.encoder.layers.\1.layer_norm2.\2"),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.weight$", r"vision_model.encoder.layers.\1.self_attn.qkv.weight"),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.(weight|bias)$",
     r"vision_model.encoder.layers.\1.self_attn.projection.\2"),
    (r"^visual_encoder\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$", r"vision_model.encoder.layers.\1.mlp.\2.\3"),
    (r"^ln_vision\.(weight|bias)$", r"vision_model.post_layernorm.\1"),
    (r"^Qformer\.bert\.embeddings\.LayerNorm\.(weight|bias)$", r"qformer.embeddings.layernorm.\1"),
    (r"^Qformer\.bert\.embeddings\.(word_embeddings|position_embeddings)\.weight$", r"qformer.embeddings.\1.weight"),
    (r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.(query|key|value)\.(weight|bias)$",
     r"qformer.encoder.layer.\1.\2.attention.\3.\4"),
    (r"^Qformer\.bert\.encoder\.(.+)$", r"qformer.encoder.\1"),
    (r"^llm_proj\.(weight|bias)$", r"language_projection.\1"),
    (r"^llm_model\.(.+)$", r"language_model.\1"),
    # LAVIS's T5 is a copy of transformers' T5ForConditionalGeneration: shared, encoder.block..., decoder.block...,
    # lm_head keep their names under the prefix.
    (r"^t5_proj\.(weight|bias)$", r"language_projection.\1"),
    (r"^t5_model\.(.+)$", r"language_model.\1"),
    (r"^query_tokens$", "query_tokens"),
]
# The two LAVIS InstructBLIP models, told apart by the prefixes of their language-model side, each with whether its
# language model is decoder-only (as the base model's `config.use_decoder_only_language_model` must say).
LAVIS_MODELS = {
    "blip2_vicuna_instruct": (("llm_proj.", "llm_model."), True),
    "blip2_t5_instruct": (("t5_proj.", "t5_model."), False),
}
# EVA's attention keeps separate q and v biases and no k bias; transformers stores one qkv bias.
QKV_BIAS = re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.(q_bias|v_bias)$")
# The BERT LM head the Q-Former pretraining used: no counterpart in InstructBLIP.
DROPPED = [re.compile(r"^Qformer\.cls\..+$")]
# Buffers that checkpoints of LAVIS's era store but today's transformers computes when it builds the model (they are
# non-persistent now). Each is checked against the base model's own, then dropped.
COMPUTED_BUFFERS = [
    (re.compile(r"^llm_model\.model\.layers\.\d+\.self_attn\.rotary_emb\.(original_)?inv_freq$"), "rotary inv_freq"),
    (re.compile(r"^llm_model\.model\.layers\.\d+\.self_attn\.rotary_emb\.(cos|sin)_cached$"), "rotary cos/sin cache"),
    (re.compile(r"^Qformer\.bert\.embeddings\.position_ids$"), "Q-Former position_ids"),
]
# Top-level keys under which a checkpoint file keeps its state dict (LAVIS: "model", beside optimizer, config, ...).
STATE_DICT_WRAPPERS = ("model", "state_dict")


def _load_error(error: Exception) -> str:
    """The part of a torch.load error that says what was wrong: the weights-only reader's own reason when it gave
    one (the rest of its message suggests loading the file unsafely), else the first line."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first[:200]}" if first else type(error).__name__


def load_original_state_dict(path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.is_dir():
        candidates = sorted(p.name for p in path.glob("*.pth")) + sorted(p.name for p in path.glob("*.pt"))
        raise IsADirectoryError(
            f"--checkpoint {str(path)!r} is a directory; pass the checkpoint file itself"
            + (f", e.g. one of {candidates[:5]}." if candidates else " (LAVIS and EmoVIT save a .pth file).")
        )
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist. Pass the .pth file LAVIS or EmoVIT saved.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    # torch.load raises whatever its reader meets first (EOFError on an empty file, UnpicklingError on random bytes
    # or pickled objects other than tensors, KeyError on text, RuntimeError on a truncated zip): all mean the same.
    except Exception as e:
        raise ValueError(
            f"Checkpoint {str(path)!r} could not be read as a PyTorch checkpoint ({_load_error(e)}). Pass the .pth "
            "file LAVIS or EmoVIT saved; an empty, truncated or text file, or one that pickles other Python objects "
            "than tensors, is not one."
        ) from e
    if isinstance(checkpoint, dict):
        for wrapper in STATE_DICT_WRAPPERS:
            if isinstance(checkpoint.get(wrapper), dict):
                checkpoint = checkpoint[wrapper]
                break
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ValueError(
            f"{path} holds no state dict: expected a bare state dict or one under "
            f"{' / '.join(repr(w) for w in STATE_DICT_WRAPPERS)}."
        )
    not_tensors = [key for key, value in checkpoint.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"{path}: these entries are not tensors, so this is not a state dict: {not_tensors[:10]}. A checkpoint "
            f"keeps its weights at the top level or under {' / '.join(repr(w) for w in STATE_DICT_WRAPPERS)}."
        )
    return checkpoint


def detect_lavis_model(original: dict[str, torch.Tensor], checkpoint) -> tuple[str | None, str | None]:
    """Which LAVIS model saved `original`: `(name, the key that told)`, or `(None, None)` when no key belongs to a
    language-model side (such a file lacks the projection, which the later checks report). A file with keys of both
    models raises."""
    found = {}
    for name, (prefixes, _) in LAVIS_MODELS.items():
        # The projection names the model best; a full file without one still has the language model's keys.
        key = next((key for prefix in prefixes for key in sorted(original) if key.startswith(prefix)), None)
        if key is not None:
            found[name] = key
    if len(found) > 1:
        raise ValueError(
            f"{checkpoint} holds keys of two LAVIS models: "
            + ", ".join(f"{key!r} ({name})" for name, key in found.items())
            + ". A LAVIS InstructBLIP checkpoint has one language model; convert the file of one run."
        )
    return next(iter(found.items()), (None, None))


def check_language_model(lavis_model: str | None, told_by: str | None, checkpoint, config, base_model) -> None:
    """Raises when the checkpoint's language model (Vicuna or FlanT5) is not the kind `--base_model` has: the
    mapped names would not fit, and a trained-only file would land on a language model it was never trained with."""
    if lavis_model is None:
        return
    decoder_only = LAVIS_MODELS[lavis_model][1]
    if config.use_decoder_only_language_model != decoder_only:
        layout = "a decoder-only" if config.use_decoder_only_language_model else "an encoder-decoder"
        wanted = ("a decoder-only Vicuna, e.g. Salesforce/instructblip-vicuna-7b" if decoder_only
                  else "an encoder-decoder FlanT5, e.g. Salesforce/instructblip-flan-t5-xl (or -xxl)")
        raise ValueError(
            f"Checkpoint {str(checkpoint)!r} is a LAVIS {lavis_model} checkpoint (it holds {told_by!r}), but "
            f"--base_model {str(base_model)!r} has {layout} language model ({config.text_config.model_type}). "
            f"Pass a base model with {wanted}."
        )


def convert_state_dict(original: dict[str, torch.Tensor]):
    """Renames LAVIS keys to transformers keys.

    Returns `(converted, dropped_keys, computed_buffers, sources)`: the renamed tensors, the keys dropped as having no
    counterpart, the buffers today's transformers computes (LAVIS name -> tensor) for `check_computed_buffers`, and
    each renamed tensor's LAVIS name (transformers name -> LAVIS name). Unknown keys raise.
    """
    converted, dropped, computed, unknown, biases, sources = {}, [], {}, [], {}, {}
    for key, tensor in original.items():
        if any(pattern.match(key) for pattern in DROPPED):
            dropped.append(key)
            continue
        if any(pattern.match(key) for pattern, _ in COMPUTED_BUFFERS):
            computed[key] = tensor
            continue
        bias = QKV_BIAS.match(key)
        if bias:
            biases.setdefault(int(bias.group(1)), {})[bias.group(2)] = tensor
            continue
        for pattern, replacement in KEY_MAPPING:
            if re.match(pattern, key):
                name = re.sub(pattern, replacement, key)
                converted[name], sources[name] = tensor, key
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} checkpoint keys have no mapping to EmoVIT: {sorted(unknown)[:20]}"
            f"{' ...' if len(unknown) > 20 else ''}. Is this a LAVIS {' / '.join(LAVIS_MODELS)} / EmoVIT checkpoint?"
        )
    for layer, pair in biases.items():
        if set(pair) != {"q_bias", "v_bias"}:
            raise ValueError(f"Vision block {layer} has {sorted(pair)} but needs both q_bias and v_bias.")
        q_bias, v_bias = pair["q_bias"], pair["v_bias"]
        name = f"vision_model.encoder.layers.{layer}.self_attn.qkv.bias"
        converted[name] = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
        sources[name] = f"visual_encoder.blocks.{layer}.attn.q_bias/v_bias"
    return converted, dropped, computed, sources


def _expected_buffer(key: str, kind: str, tensor: torch.Tensor, inv_freq: torch.Tensor | None) -> torch.Tensor:
    """What the base model computes for the stored buffer `key` of `kind`, in the stored tensor's shape when the
    sizes agree (otherwise in its own shape, which the caller reports as a mismatch)."""
    if kind == "Q-Former position_ids":
        expected = torch.arange(tensor.shape[-1])
    elif inv_freq is None:
        raise ValueError(f"The checkpoint stores {key}, but the base model's language model has no rotary embedding "
                       "to compare it with. Wrong --base_model?")
    elif kind == "rotary inv_freq":
        expected = inv_freq
    else:
        # LLaMA's cos/sin caches: positions x frequencies in float32, duplicated along the last axis.
        angles = torch.outer(torch.arange(tensor.shape[-2], dtype=torch.float32), inv_freq.float())
        angles = torch.cat([angles, angles], dim=-1)
        expected = angles.sin() if key.endswith("sin_cached") else angles.cos()
    return expected.view(tensor.shape) if expected.numel() == tensor.numel() else expected


def check_computed_buffers(computed: dict[str, torch.Tensor], model) -> dict[str, dict]:
    """Compares each stored buffer with what `model` computes. Returns per kind `{"count", "max_abs_diff"}`; raises
    when a buffer has another shape or differs by more than its storage dtype's rounding."""
    inv_freq = next((buffer for name, buffer in model.named_buffers()
                     if name.startswith("language_model.") and name.endswith("rotary_emb.inv_freq")), None)
    report, wrong = {}, []
    for key, tensor in sorted(computed.items()):
        kind = next(kind for pattern, kind in COMPUTED_BUFFERS if pattern.match(key))
        expected = _expected_buffer(key, kind, tensor, inv_freq)
        if expected.shape != tensor.shape:
            wrong.append(f"{key}: shape {tuple(tensor.shape)}, base computes {tuple(expected.shape)}")
            continue
        difference = (tensor.double() - expected.double()).abs().max().item()
        # fp32 buffers match to float rounding; fp16/bf16 copies (LAVIS trains in fp16) to their own rounding.
        tolerance = max(1e-5, 4 * torch.finfo(tensor.dtype).eps) if tensor.is_floating_point() else 0.0
        if difference > tolerance:
            wrong.append(f"{key}: max |difference| {difference:.3e} from the base model's (tolerance {tolerance:.1e})")
        entry = report.setdefault(kind, {"count": 0, "max_abs_diff": 0.0})
        entry["count"] += 1
        entry["max_abs_diff"] = max(entry["max_abs_diff"], difference)
    if wrong:
        raise ValueError(
            f"{len(wrong)} stored buffers disagree with what the base model computes: {wrong[:5]}. The checkpoint was "
            "built with another language-model configuration (RoPE base, head size, context length); pass the "
            "matching --base_model."
        )
    return report


def tied_aliases(model) -> dict[str, str]:
    """The names under which `model` holds a parameter it already holds under an earlier name, each with that first
    name: T5's encoder and decoder `embed_tokens` are its `shared` embedding, and an output head tied to the input
    embedding is that embedding. Loading the first name sets them all."""
    first, aliases = {}, {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases[name] = first[id(param)]
        else:
            first[id(param)] = name
    return aliases


def check_tied_copies(converted: dict[str, torch.Tensor], sources: dict[str, str], model, checkpoint,
                      base_model) -> dict[str, dict]:
    """Takes out of `converted` the tensors that `model` holds as an alias of another (`tied_aliases`), after
    checking them: against the file's own tensor under the first name when the file holds it (they were one tensor
    in LAVIS), else against the base model's, to the rounding of both dtypes (LAVIS keeps FlanT5 in bfloat16). A
    copy that differs from the base model's means the file was trained on another language model.

    Returns per LAVIS key `{"of": what it was compared with, "max_abs_diff": float}`.
    """
    aliases = tied_aliases(model)
    base = model.state_dict()
    report, wrong = {}, []
    for name in sorted(set(converted) & set(aliases)):
        tensor, key, source = converted.pop(name), sources[name], aliases[name]
        if source in converted:
            other = converted[source]
            if tensor.shape != other.shape or not torch.equal(tensor, other):
                raise ValueError(
                    f"{checkpoint}: {key!r} and {sources[source]!r} differ, but --base_model {str(base_model)!r} holds "
                    f"them as one tensor ({name} is {source}); loading would keep only one of them. The file is "
                    "damaged, or its language model does not tie them; then pass a base whose configuration does not "
                    "tie them either."
                )
            report[key] = {"of": sources[source], "max_abs_diff": 0.0}
            continue
        expected = base[source]
        if tensor.shape[0] < expected.shape[0] and tensor.shape[1:] == expected.shape[1:]:
            expected = expected[: tensor.shape[0]]  # the rows of the vocabulary the file has (see _fit_vocabulary)
        if tensor.shape != expected.shape:
            wrong.append(f"{key}: shape {tuple(tensor.shape)}, base model's {tuple(expected.shape)}")
            continue
        difference = (tensor.double() - expected.double()).abs()
        rounding = (torch.finfo(tensor.dtype).eps + torch.finfo(expected.dtype).eps) * expected.double().abs()
        if (difference > rounding + torch.finfo(tensor.dtype).tiny).any():
            wrong.append(f"{key}: max |difference| {difference.max().item():.3e} from the base model's {source}")
        report[key] = {"of": f"{base_model} {source}", "max_abs_diff": difference.max().item()}
    if wrong:
        raise ValueError(
            f"{checkpoint}: {len(wrong)} stored copies of frozen tensors disagree with --base_model "
            f"{str(base_model)!r} beyond rounding: {wrong[:5]}. The checkpoint was trained on another language model; "
            "pass the base model it was trained from."
        )
    return report


def _fit_vocabulary(converted, model) -> list[str]:
    """LAVIS's Vicuna has one row fewer than transformers' (no `<image>` token), and so has LAVIS's FlanT5 where the
    base model added the `<image>` row to its embeddings. Keep the file's rows and the base model's extra rows, whose
    values never reach an output (the placeholder is overwritten)."""
    notes = []
    target = model.state_dict()
    for name in ("language_model.model.embed_tokens.weight", "language_model.shared.weight",
                 "language_model.lm_head.weight"):
        if name in converted and converted[name].shape[0] < target[name].shape[0]:
            rows = converted[name].shape[0]
            merged = target[name].clone()
            merged[:rows] = converted[name].to(merged.dtype)
            converted[name] = merged
            notes.append(f"{name}: {rows} rows from the checkpoint, {merged.shape[0] - rows} kept from the base model")
    return notes


def _test_inputs(processor, image_path=None):
    if image_path is not None:
        image = open_image(image_path)
    else:
        # A fixed colour gradient: deterministic, and not a constant image (which would hide vision differences).
        y, x = np.mgrid[0:224, 0:224]
        image = Image.fromarray(np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8))
    instruction = processor.categorical_instruction
    return processor.training_features([instruction], [format_answer(processor.emotion_labels[0])], images=[image])


@torch.no_grad()
def _logits(model, inputs):
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return model(**inputs).logits.float()


def _module_of(name: str) -> str:
    for prefix in ("vision_model.post_layernorm", "vision_model", "qformer", "query_tokens", "language_projection",
                   "language_model"):
        if name.startswith(prefix):
            return prefix
    return name


def convert(checkpoint, base_model, output_dir=None, mode="auto", dtype="float32", test_image=None,
            emotion_labels=None):
    """Converts `checkpoint` onto `base_model`; returns `(model, processor, report)`. Saves when `output_dir`."""
    # ---- the checkpoint, mapped to transformers' names and checked
    original = load_original_state_dict(checkpoint)
    check_floating_point(original, checkpoint)
    lavis_model, told_by = detect_lavis_model(original, checkpoint)
    converted, dropped, computed, sources = convert_state_dict(original)
    check_finite(converted, checkpoint)
    # Read before the weights, so that a Vicuna file on a FlanT5 base (or the other way) fails in a second.
    check_language_model(lavis_model, told_by, checkpoint, EmoVitConfig.from_pretrained(base_model), base_model)

    # ---- the base model it lands on; the processor lays out batches for its language model
    model = EmoVitForConditionalGeneration.from_pretrained(base_model, dtype=getattr(torch, dtype)).eval()
    processor = EmoVitProcessor.from_pretrained(
        base_model, emotion_labels=emotion_labels or model.config.emotion_labels,
        use_decoder_only_language_model=model.config.use_decoder_only_language_model,
    )
    model.config.emotion_labels = list(processor.emotion_labels)  # id2label / label2id follow
    buffers = check_computed_buffers(computed, model)
    tied = check_tied_copies(converted, sources, model, checkpoint, base_model)
    notes = _fit_vocabulary(converted, model)
    aliases = tied_aliases(model)
    target = {name: tensor for name, tensor in model.state_dict().items() if name not in aliases}
    mode, missing = check_against_base(converted, target, base_model, mode)

    # ---- load, and compare the logits with the base model's on a test image
    changed, logits_diff = load_converted(model, converted, _test_inputs(processor, test_image))

    report = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest(),
        "checkpoint_dtypes": dict(Counter(str(t.dtype).removeprefix("torch.") for t in original.values())),
        "lavis_model": lavis_model,
        "lavis_model_key": told_by,
        "language_model": model.config.text_config.model_type,
        "decoder_only": model.config.use_decoder_only_language_model,
        "dtype": dtype,
        "base_model": str(base_model),
        "mode": mode,
        "loaded_tensors": len(converted),
        "kept_from_base": len(missing),
        "dropped_keys": dropped,
        "computed_buffers": buffers,
        "tied_copies": tied,
        "notes": notes,
        "changed_modules": {module: len(names) for module, names in sorted(changed.items())},
        "max_logits_diff_vs_base": logits_diff,
    }
    if output_dir is not None:
        save(model, processor, report, output_dir)
    return model, processor, report


def check_floating_point(original: dict[str, torch.Tensor], checkpoint) -> None:
    """Every tensor EmoVIT takes from a file is a floating-point weight: an integer (or boolean, complex) one is a
    quantised or damaged file, and casting it to the weights' dtype would load rounded values without a word. The
    stored buffers (integer position_ids among them) are checked on their own and dropped."""
    not_float = [f"{key} ({str(tensor.dtype).removeprefix('torch.')})" for key, tensor in sorted(original.items())
                 if not tensor.is_floating_point() and not any(pattern.match(key) for pattern, _ in COMPUTED_BUFFERS)]
    if not_float:
        raise ValueError(f"{checkpoint}: {len(not_float)} tensors are not floating point, e.g. {not_float[:10]}; "
                         "EmoVIT's weights are. Convert the float32/float16/bfloat16 checkpoint LAVIS saved, not a "
                         "quantised or edited copy.")


def check_finite(converted: dict[str, torch.Tensor], checkpoint) -> None:
    not_finite = sorted(k for k, v in converted.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if not_finite:
        raise ValueError(f"{checkpoint}: {len(not_finite)} tensors hold NaN or Inf, e.g. {not_finite[:10]}. The run "
                         "that saved it diverged; convert an earlier checkpoint.")


def check_against_base(converted: dict[str, torch.Tensor], target: dict[str, torch.Tensor], base_model,
                       mode: str) -> tuple[str, list[str]]:
    """Checks that the converted tensors fit the base model (names and shapes) and that the checkpoint is complete
    (`full`) or holds exactly EmoVIT's trained tensors (`trained`); `auto` picks the one that fits. Returns the mode
    and the base model's tensors the checkpoint does not hold (kept from the base)."""
    unmatched = sorted(set(converted) - set(target))
    if unmatched:
        raise ValueError(f"Mapped keys that {base_model} does not have: {unmatched[:20]}. Wrong --base_model?")
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in converted.items() if v.shape != target[k].shape]
    if mismatched:
        raise ValueError(f"Shapes differ from {base_model}: {mismatched[:10]}. Wrong --base_model?")
    missing = sorted(set(target) - set(converted))
    if mode == "auto":
        mode = "full" if not missing else "trained"
    if mode == "full" and missing:
        raise ValueError(f"--mode full, but the checkpoint lacks {len(missing)} tensors, e.g. {missing[:10]}.")
    if mode == "trained":
        trainable = EmoVitForConditionalGeneration.TRAINABLE_PREFIXES
        frozen = sorted(k for k in converted if not k.startswith(trainable))
        if frozen:
            raise ValueError(
                f"The checkpoint is neither complete (it lacks {len(missing)} tensors, e.g. {missing[:5]}) nor "
                f"trained-only (it holds frozen tensors, e.g. {frozen[:5]}). Pass a full LAVIS state dict or "
                "EmoVIT's trained-tensor file."
            )
        lacking = [k for k in missing if k.startswith(trainable)]
        if lacking:
            raise ValueError(
                f"The trained-only checkpoint lacks {len(lacking)} of the tensors EmoVIT trains: {lacking[:20]}"
                f"{' ...' if len(lacking) > 20 else ''}. Keeping the base model's values for them would mix two "
                "models silently; pass the complete trained-tensor file."
            )
    return mode, missing


def load_converted(model, converted: dict[str, torch.Tensor], inputs) -> tuple[dict[str, list[str]], float]:
    """Loads the converted tensors into `model`; returns the tensors that differ from the base model's, by module,
    and the largest logits difference on `inputs` between the base model and the converted one."""
    target = model.state_dict()
    reference_logits = _logits(model, inputs)
    changed = {}
    for name, tensor in converted.items():
        difference = (tensor.float() - target[name].float()).abs().max().item() if tensor.numel() else 0.0
        if difference > 0:
            changed.setdefault(_module_of(name), []).append(name)
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in converted.items()}, strict=False)
    return changed, (_logits(model, inputs) - reference_logits).abs().max().item()


CARD_BODY = """# EmoVIT: {name}

Visual emotion instruction tuning (EmoVIT, CVPR 2024) on InstructBLIP, converted to transformers from `{checkpoint}`
(sha256 `{sha}`).

## Use

{usage}

## Labels

{labels}

The categorical instruction is `{instruction}` and the answer format `{answer}`.

## Provenance

- LAVIS model: {lavis_model}; language model: {language_model} ({layout})
- conversion mode: `{mode}` ({mode_text})
- base model (configuration, tokenizers{base_weights}): `{base_model}`
- tensors from the checkpoint: {loaded}; kept from the base model: {kept}
- checkpoint dtypes: {dtypes}; saved as {dtype}
- dropped checkpoint keys: {dropped}
- stored buffers that transformers computes, checked against the base model and dropped: {buffers}
- stored copies of tied tensors, checked and dropped: {tied}
- modules that differ from the base model: {changed}
- largest logits difference from the base model on a test image: {diff:.3e}
{notes}
## Results

None measured on this conversion, so the card carries no `model-index`. The conversion only checks the logits
against the base model; evaluate the folder with the project's `evaluate.py --update_card {name}` to add results.
"""


def save(model, processor, report, output_dir):
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    trained = report["mode"] == "trained"
    body = CARD_BODY.format(
        name=output_dir.name,
        usage=usage_snippet(output_dir.name),
        checkpoint=Path(report["checkpoint"]).name,
        sha=report["checkpoint_sha256"],
        base_model=report["base_model"],
        labels=", ".join(f"{i}: {label}" for i, label in enumerate(model.config.emotion_labels)),
        instruction=processor.categorical_instruction,
        answer=format_answer("<emotion>"),
        lavis_model=(f"`{report['lavis_model']}` (told by `{report['lavis_model_key']}`)" if report["lavis_model"]
                     else "not told by the keys"),
        language_model=report["language_model"],
        layout="decoder-only" if report["decoder_only"] else "encoder-decoder",
        mode=report["mode"],
        mode_text="EmoVIT's trained tensors applied on the base model" if trained else "every weight from the file",
        base_weights=", and every weight the checkpoint does not hold" if trained else "",
        loaded=report["loaded_tensors"],
        kept=report["kept_from_base"],
        dtypes=", ".join(f"{n} {name}" for name, n in report["checkpoint_dtypes"].items()),
        dtype=report["dtype"],
        dropped=", ".join(f"`{key}`" for key in report["dropped_keys"]) or "none",
        buffers=", ".join(f"{e['count']} {kind} (max difference {e['max_abs_diff']:.1e})"
                          for kind, e in report["computed_buffers"].items()) or "none",
        tied=", ".join(f"`{key}` (as {e['of']}, max difference {e['max_abs_diff']:.1e})"
                       for key, e in report["tied_copies"].items()) or "none",
        changed=", ".join(f"{m} ({n} tensors)" for m, n in report["changed_modules"].items()) or "none",
        diff=report["max_logits_diff_vs_base"],
        notes="".join(f"- {note}\n" for note in report["notes"]),
    )
    metadata = {"library_name": "transformers", "pipeline_tag": "image-text-to-text",
                "tags": ["emovit", "instructblip", "emotion-recognition", "visual-emotion-analysis"],
                "base_model": str(report["base_model"])}
    write_card(output_dir, metadata, body)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="LAVIS (blip2_vicuna_instruct or blip2_t5_instruct) or EmoVIT .pth file.")
    parser.add_argument("--base_model", required=True,
                        help="InstructBLIP/EmoVIT folder or Hub id giving the configuration, tokenizers (and weights "
                             "the checkpoint lacks).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--mode", choices=["auto", "full", "trained"], default="auto",
                        help="full: every weight from the file; trained: only EmoVIT's trained tensors; auto: detect.")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="dtype to load and save in (7B: float16 halves the memory, about 16 GB).")
    parser.add_argument("--test_image", default=None, help="Image for the logits check (default: a gradient).")
    parser.add_argument("--emotion_labels", default=None,
                        help=f"Comma-separated labels (default: the base's, else {','.join(EMOSET_EMOTIONS)}).")
    parser.add_argument("--push_to_hub", default=None, metavar="REPO", help="Also upload the folder to this repo.")
    args = parser.parse_args(argv)

    labels = args.emotion_labels.split(",") if args.emotion_labels else None
    _, _, report = convert(args.checkpoint, args.base_model, args.output_dir, mode=args.mode, dtype=args.dtype,
                           test_image=args.test_image, emotion_labels=labels)
    if report["lavis_model"]:
        print(f"LAVIS model: {report['lavis_model']} (from key {report['lavis_model_key']}); language model: "
              f"{report['language_model']}, {'decoder-only' if report['decoder_only'] else 'encoder-decoder'}")
    print(f"mode: {report['mode']}; {report['loaded_tensors']} tensors from the checkpoint, "
          f"{report['kept_from_base']} kept from the base model")
    print("checkpoint dtypes: " + ", ".join(f"{n} {name}" for name, n in report["checkpoint_dtypes"].items())
          + f"; converted to {report['dtype']}")
    for key in report["dropped_keys"]:
        print(f"dropped: {key}")
    for kind, entry in report["computed_buffers"].items():
        print(f"checked and dropped {entry['count']} stored {kind} buffers (computed by transformers; max |difference| "
              f"from the base model's: {entry['max_abs_diff']:.3e})")
    for key, entry in report["tied_copies"].items():
        print(f"checked and dropped tied copy {key} (the same tensor as {entry['of']}; max |difference| "
              f"{entry['max_abs_diff']:.3e})")
    for note in report["notes"]:
        print(f"note: {note}")
    for module, count in report["changed_modules"].items():
        print(f"changed vs base: {module} ({count} tensors)")
    print(f"max |logits difference| vs unconverted base model: {report['max_logits_diff_vs_base']:.6e}")
    print(f"saved to {args.output_dir}")
    if args.push_to_hub:
        url = push_folder(args.output_dir, args.push_to_hub,
                          commit_message="Add EmoVIT converted from the original checkpoint")
        print(f"pushed to {args.push_to_hub}: {url}")
    return report


if __name__ == "__main__":
    run_command("convert_original_checkpoint", main)
