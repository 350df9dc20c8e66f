# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""Convert a LAVIS / official EmoVIT checkpoint into a transformers EmoVIT folder.

    python -m modeling_emovit.convert_original_checkpoint --checkpoint model_weights1.pth \
        --base_model Salesforce/instructblip-vicuna-7b --output_dir emovit-vicuna-7b [--push_to_hub USER/emovit-vicuna-7b]

Two kinds of file are accepted, as `{"model": state_dict}` or as a bare state dict:
(a) a full LAVIS `blip2_vicuna_instruct` state dict: every weight comes from the file; `--base_model` supplies the
    configuration and the tokenizers only (and the `<image>` embedding row, which LAVIS never had);
(b) the official EmoVIT release `model_weights1.pth`, which holds only the tensors EmoVIT trains (Q-Former, query
    tokens, `llm_proj`, `ln_vision`): they replace those of `--base_model`, everything else stays.

Every key is mapped through the table below or dropped by name; any other key stops the conversion. Before saving,
the script runs the converted model and the unconverted `--base_model` on a test image and prints the largest logits
difference, and lists which modules changed. Files are read with `torch.load(..., weights_only=True)`; the output is
safetensors + processor + a model card.
"""

import argparse
import hashlib
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .configuration_emovit import EMOSET_EMOTIONS
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
    (r"^query_tokens$", "query_tokens"),
]
# EVA's attention keeps separate q and v biases and no k bias; transformers stores one qkv bias.
QKV_BIAS = re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.(q_bias|v_bias)$")
# Keys with no counterpart: a buffer transformers rebuilds, and the BERT LM head the Q-Former pretraining used.
DROPPED = [re.compile(r"^Qformer\.bert\.embeddings\.position_ids$"), re.compile(r"^Qformer\.cls\..+$")]


def load_original_state_dict(path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist. Pass the .pth file LAVIS or EmoVIT saved.")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ValueError(f"{path} holds no state dict: expected {{'model': state_dict}} or a bare state dict.")
    not_tensors = [key for key, value in checkpoint.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{path}: these entries are not tensors, so this is not a state dict: {not_tensors[:10]}")
    return checkpoint


def convert_state_dict(original: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Renames LAVIS keys to transformers keys. Returns `(converted, dropped_keys)`; unknown keys raise."""
    converted, dropped, unknown, biases = {}, [], [], {}
    for key, tensor in original.items():
        if any(pattern.match(key) for pattern in DROPPED):
            dropped.append(key)
            continue
        bias = QKV_BIAS.match(key)
        if bias:
            biases.setdefault(int(bias.group(1)), {})[bias.group(2)] = tensor
            continue
        for pattern, replacement in KEY_MAPPING:
            if re.match(pattern, key):
                converted[re.sub(pattern, replacement, key)] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(
            f"{len(unknown)} checkpoint keys have no mapping to EmoVIT: {sorted(unknown)[:20]}"
            f"{' ...' if len(unknown) > 20 else ''}. Is this a LAVIS blip2_vicuna_instruct / EmoVIT checkpoint?"
        )
    for layer, pair in biases.items():
        if set(pair) != {"q_bias", "v_bias"}:
            raise KeyError(f"Vision block {layer} has {sorted(pair)} but needs both q_bias and v_bias.")
        q_bias, v_bias = pair["q_bias"], pair["v_bias"]
        converted[f"vision_model.encoder.layers.{layer}.self_attn.qkv.bias"] = torch.cat(
            [q_bias, torch.zeros_like(q_bias), v_bias]
        )
    return converted, dropped


def _fit_vocabulary(converted, model) -> list[str]:
    """LAVIS's Vicuna has one row fewer than transformers' (no `<image>` token). Keep the file's rows and the
    base model's extra rows, whose values never reach an output (the placeholder is overwritten)."""
    notes = []
    target = model.state_dict()
    for name in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        if name in converted and converted[name].shape[0] < target[name].shape[0]:
            rows = converted[name].shape[0]
            merged = target[name].clone()
            merged[:rows] = converted[name].to(merged.dtype)
            converted[name] = merged
            notes.append(f"{name}: {rows} rows from the checkpoint, {merged.shape[0] - rows} kept from the base model")
    return notes


def _test_inputs(processor, image_path=None):
    if image_path is not None:
        image = Image.open(image_path)
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
    original = load_original_state_dict(checkpoint)
    converted, dropped = convert_state_dict(original)
    torch_dtype = getattr(torch, dtype)
    model = EmoVitForConditionalGeneration.from_pretrained(base_model, dtype=torch_dtype).eval()
    processor = EmoVitProcessor.from_pretrained(base_model, emotion_labels=emotion_labels or model.config.emotion_labels)
    if emotion_labels:
        model.config.emotion_labels = list(processor.emotion_labels)
        model.config.id2label = dict(enumerate(processor.emotion_labels))
        model.config.label2id = {label: i for i, label in enumerate(processor.emotion_labels)}
    notes = _fit_vocabulary(converted, model)

    target = model.state_dict()
    unmatched = sorted(set(converted) - set(target))
    if unmatched:
        raise KeyError(f"Mapped keys that {base_model} does not have: {unmatched[:20]}. Wrong --base_model?")
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in converted.items() if v.shape != target[k].shape]
    if mismatched:
        raise ValueError(f"Shapes differ from {base_model}: {mismatched[:10]}. Wrong --base_model?")
    missing = sorted(set(target) - set(converted))
    if mode == "auto":
        mode = "full" if not missing else "trained"
    if mode == "full" and missing:
        raise KeyError(f"--mode full, but the checkpoint lacks {len(missing)} tensors, e.g. {missing[:10]}.")
    if mode == "trained":
        frozen = sorted(k for k in converted if not k.startswith(EmoVitForConditionalGeneration.TRAINABLE_PREFIXES))
        if frozen:
            raise KeyError(
                f"The checkpoint is neither complete (it lacks {len(missing)} tensors, e.g. {missing[:5]}) nor "
                f"trained-only (it holds frozen tensors, e.g. {frozen[:5]}). Pass a full LAVIS state dict or "
                "EmoVIT's trained-tensor file."
            )

    inputs = _test_inputs(processor, test_image)
    reference_logits = _logits(model, inputs)
    changed = {}
    for name, tensor in converted.items():
        difference = (tensor.float() - target[name].float()).abs().max().item() if tensor.numel() else 0.0
        if difference > 0:
            changed.setdefault(_module_of(name), []).append(name)
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in converted.items()}, strict=False)
    converted_logits = _logits(model, inputs)
    logits_diff = (converted_logits - reference_logits).abs().max().item()

    report = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest(),
        "base_model": str(base_model),
        "mode": mode,
        "loaded_tensors": len(converted),
        "kept_from_base": len(missing),
        "dropped_keys": dropped,
        "notes": notes,
        "changed_modules": {module: len(names) for module, names in sorted(changed.items())},
        "max_logits_diff_vs_base": logits_diff,
    }
    if output_dir is not None:
        save(model, processor, report, output_dir)
    return model, processor, report


MODEL_CARD = """---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [emovit, instructblip, emotion-recognition, visual-emotion-analysis]
base_model: {base_model}
---

# EmoVIT: {name}

Visual emotion instruction tuning (EmoVIT, CVPR 2024) on InstructBLIP, converted to transformers from `{checkpoint}`
(sha256 `{sha}`).

## Use

```python
import modeling_emovit  # or pass trust_remote_code=True to the two calls below
from transformers import AutoModelForImageTextToText, AutoProcessor
from PIL import Image

model = AutoModelForImageTextToText.from_pretrained("{repo}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)
result = model.classify([Image.open("photo.jpg")], processor, method="score")  # or method="generate"
print(result.labels, result.scores)
```

## Labels

{labels}

The categorical instruction is `{instruction}` and the answer format `{answer}`.

## Provenance

- conversion mode: `{mode}` ({mode_text})
- base model (configuration, tokenizers{base_weights}): `{base_model}`
- tensors from the checkpoint: {loaded}; kept from the base model: {kept}
- dropped checkpoint keys: {dropped}
- modules that differ from the base model: {changed}
- largest logits difference from the base model on a test image: {diff:.3e}
{notes}
"""


def save(model, processor, report, output_dir):
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    trained = report["mode"] == "trained"
    card = MODEL_CARD.format(
        name=output_dir.name,
        repo=output_dir.name,
        checkpoint=Path(report["checkpoint"]).name,
        sha=report["checkpoint_sha256"],
        base_model=report["base_model"],
        labels=", ".join(f"{i}: {label}" for i, label in enumerate(model.config.emotion_labels)),
        instruction=processor.categorical_instruction,
        answer=format_answer("<emotion>"),
        mode=report["mode"],
        mode_text="EmoVIT's trained tensors applied on the base model" if trained else "every weight from the file",
        base_weights=", and every weight the checkpoint does not hold" if trained else "",
        loaded=report["loaded_tensors"],
        kept=report["kept_from_base"],
        dropped=", ".join(f"`{key}`" for key in report["dropped_keys"]) or "none",
        changed=", ".join(f"{m} ({n} tensors)" for m, n in report["changed_modules"].items()) or "none",
        diff=report["max_logits_diff_vs_base"],
        notes="".join(f"- {note}\n" for note in report["notes"]),
    )
    (output_dir / "README.md").write_text(card)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="LAVIS or EmoVIT .pth file.")
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
    print(f"mode: {report['mode']}; {report['loaded_tensors']} tensors from the checkpoint, "
          f"{report['kept_from_base']} kept from the base model")
    for key in report["dropped_keys"]:
        print(f"dropped: {key}")
    for note in report["notes"]:
        print(f"note: {note}")
    for module, count in report["changed_modules"].items():
        print(f"changed vs base: {module} ({count} tensors)")
    print(f"max |logits difference| vs unconverted base model: {report['max_logits_diff_vs_base']:.6e}")
    print(f"saved to {args.output_dir}")
    if args.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(args.push_to_hub, exist_ok=True)
        api.upload_folder(folder_path=args.output_dir, repo_id=args.push_to_hub,
                          commit_message="Add EmoVIT converted from the original checkpoint")
        print(f"pushed to https://huggingface.co/{args.push_to_hub}")
    return report


if __name__ == "__main__":
    main()
