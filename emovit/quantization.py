"""Quantised frozen towers (bitsandbytes): what `--quantization 4bit|8bit` means for loading an EmoVIT, and how a model
trained that way is saved at full precision.

Only the frozen towers are quantised: the language model and, for inference, the ViT. The Q-Former side (the Q-Former,
the query tokens and the language projection) is what EmoVIT trains and is small, so it stays in full precision, and
so does the language model's output head, whose logits every score is read from. For training, 4-bit keeps the ViT
unquantised too (in the run's compute dtype): the language model is where the memory is, as in QLoRA.
"""

import importlib.util

import torch
from transformers import BitsAndBytesConfig

from modeling_emovit import EmoVitForConditionalGeneration


# The names `--quantization` accepts; None (the flag left out) loads the weights as they are.
QUANTIZATIONS = ("4bit", "8bit")
# Modules left in full precision whatever the quantisation: the trained Q-Former side and the output head.
KEEP_UNQUANTIZED = ("qformer", "query_tokens", "language_projection", "lm_head")
# The flag's help, the same for every script that loads a model.
QUANTIZATION_HELP = ("Load the frozen towers quantised with bitsandbytes, for GPUs with little memory: 4bit (NF4) or "
                     "8bit (LLM.int8()). The Q-Former side and the output head stay unquantised. Unset: as saved.")


def check_quantization(quantization: str | None, flag: str = "--quantization") -> None:
    """ValueError unless `quantization` is None or one of QUANTIZATIONS and, when it is set, bitsandbytes can be
    imported."""
    if quantization is None:
        return
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"{flag} is {quantization!r}; use one of {list(QUANTIZATIONS)}, or leave it out to load the "
                         "weights unquantised.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(f"{flag} {quantization} needs bitsandbytes, which is not installed: `pip install "
                         "bitsandbytes` (it runs on CUDA GPUs and, more slowly, on CPU), or leave the flag out.")


def quantization_config(quantization: str | None, compute_dtype: torch.dtype = torch.float32,
                        for_training: bool = False) -> BitsAndBytesConfig | None:
    """The `quantization_config` that `from_pretrained` takes for `quantization` (None for None). 4-bit is NF4 with
    double quantisation, computing in `compute_dtype`; 8-bit is LLM.int8(). `for_training` with 4-bit also keeps the
    ViT out of quantisation (it then takes `compute_dtype` from the caller)."""
    check_quantization(quantization)
    if quantization is None:
        return None
    keep = list(KEEP_UNQUANTIZED)
    if quantization == "4bit":
        if for_training:
            keep.append("vision_model")
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=keep)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep)


def unquantized_copy(model: EmoVitForConditionalGeneration, base: str) -> EmoVitForConditionalGeneration:
    """`model`, trained with quantised frozen towers, as a plain float32 EmoVIT on the CPU, ready for
    `save_pretrained`: `base` (the folder or Hub id `model` was loaded from) is loaded again unquantised (with the
    same LoRA adapters as `model`, to merge after), and every tensor that trained is copied in.

    The frozen towers are the base's own weights, not a dequantised approximation of them, and the saved folder
    loads anywhere with plain `from_pretrained`, bitsandbytes or not. Needs the base's float32 size in CPU memory."""
    trained = {name: param.detach().to("cpu", torch.float32)
               for name, param in model.named_parameters() if param.requires_grad}
    copy = EmoVitForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
    lora_model = model.__dict__.get("_lora_model")
    if lora_model is not None:
        lora = lora_model.peft_config["default"]
        copy.add_lora(lora.r, lora.lora_alpha, lora.lora_dropout, sorted(lora.target_modules))
    unknown = sorted(set(trained) - set(copy.state_dict()))
    if unknown:
        raise ValueError(f"The trained tensors {unknown[:5]} have no place in {base!r} loaded unquantised; pass the "
                         "folder or Hub id the quantised model was loaded from.")
    copy.load_state_dict(trained, strict=False)
    return copy
