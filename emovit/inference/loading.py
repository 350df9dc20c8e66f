"""Loads a saved EmoVIT (or Salesforce InstructBLIP) folder or Hub id with its processor, after checking that it is
one: every script that runs a trained model starts here."""

import os

import torch
from transformers import AutoConfig

from emovit.quantization import quantization_config
from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor


MODEL_TYPES = ("emovit", "instructblip")
# The weights dtypes a script can ask for by name.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# What `save_pretrained` writes for the processor; a folder with the weights alone cannot turn images into inputs.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def read_config(path: str):
    """The model configuration at `path` (a folder or Hub id), after checking that it is an EmoVIT or InstructBLIP
    one; ValueError naming --model otherwise. Reads config.json only, no weights."""
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(
            f"--model {path!r} is a folder without config.json, so it is not a saved model. Pass the folder that "
            "`save_pretrained` wrote (EmoVIT or InstructBLIP), e.g. the output of `python -m modeling_emovit.tiny`."
        )
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(
            f"--model {path!r} could not be read as a model configuration ({type(e).__name__}: {e}). Pass an "
            "EmoVIT or InstructBLIP folder or Hub id."
        ) from e
    if config.model_type not in MODEL_TYPES:
        raise ValueError(
            f"--model {path!r} holds a {config.model_type!r} model; this needs one of {list(MODEL_TYPES)} "
            "(an EmoVIT checkpoint, or a Salesforce InstructBLIP one)."
        )
    return config


def max_new_tokens_limit(config) -> int | None:
    """The most tokens the model can generate after an image: the language model's positions (its
    `max_position_embeddings`, or `n_positions`) less the image's query tokens, which come first in a decoder-only
    model's input (the question's tokens come off what is left); an encoder-decoder's decoder holds its answer alone.
    None when the configuration names no limit."""
    text_config = config.text_config
    positions = getattr(text_config, "max_position_embeddings", None) or getattr(text_config, "n_positions", None)
    if not positions:
        return None
    return positions - config.num_query_tokens if config.use_decoder_only_language_model else positions


def check_max_new_tokens(config, max_new_tokens: int | None, flag: str = "--max_new_tokens") -> None:
    """Refuses a generation budget past what the model's context holds (`max_new_tokens_limit`), naming the limit,
    before any work: such a budget cannot be used, and it would keep a run generating for as long as it is let."""
    limit = max_new_tokens_limit(config)
    if max_new_tokens is not None and limit is not None and max_new_tokens > limit:
        raise ValueError(f"{flag} is {max_new_tokens}, more than this model's context holds: its language model has "
                         f"room for at most {limit} new tokens after the image (fewer once the question is in). "
                         f"Pass {flag} {limit} or less.")


def load_model(path: str, dtype: torch.dtype,
               quantization: str | None = None) -> tuple[EmoVitForConditionalGeneration, EmoVitProcessor]:
    """Loads the model (in eval mode, `dtype`) and its processor, whose labels are the model's. With `quantization`
    (`emovit.quantization.QUANTIZATIONS`) the frozen towers are quantised as they load, computing in `dtype`, onto
    the current GPU when there is one (bitsandbytes quantises on the device the weights go to), else the CPU."""
    config = quantization_config(quantization, dtype)  # refuses an unknown value or a missing bitsandbytes first
    read_config(path)
    if os.path.isdir(path) and not any(os.path.isfile(os.path.join(path, name)) for name in PROCESSOR_FILES):
        raise ValueError(
            f"--model {path!r} holds model weights but no processor (none of {list(PROCESSOR_FILES)}), so images "
            "cannot be turned into inputs. Save the processor next to the model (`processor.save_pretrained(folder)`, "
            "as train.py and the converter do), or copy its files from the base model the checkpoint was trained from."
        )
    model = EmoVitForConditionalGeneration.from_pretrained(path, dtype=dtype, quantization_config=config).eval()
    # The processor's label list must be the model's: build it from the config, not from whatever the folder
    # says (an InstructBLIP folder has no EmoVIT processor settings at all).
    try:
        processor = EmoVitProcessor.from_pretrained(path, emotion_labels=list(model.config.emotion_labels))
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(
            f"--model {path!r}: its processor could not be loaded ({type(e).__name__}: {e}). The folder needs the "
            "processor and both tokenizers that `processor.save_pretrained` writes next to the model."
        ) from e
    model.check_processor(processor)
    return model, processor
