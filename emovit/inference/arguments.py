"""The arguments of a prediction run, as a dataclass for `HfArgumentParser` (predict.py's command line)."""

import os
from dataclasses import dataclass, field

from emovit.inference.loading import DTYPES
from emovit.quantization import QUANTIZATION_HELP, QUANTIZATIONS, check_quantization
from modeling_emovit import CLASSIFY_METHODS, EXPLANATION_PRESETS

from .files import DEFAULT_MAX_IMAGE_PIXELS


@dataclass
class PredictArguments:
    model: str = field(metadata={"help": "EmoVIT or InstructBLIP folder, or Hub id."})
    paths: list[str] = field(
        default_factory=list,
        metadata={"help": "Image files, folders (searched recursively) or glob patterns (`**` crosses folders); "
                          "usually given as positional arguments after the flags."},
    )
    output: str = field(
        default="predictions.jsonl",
        metadata={"help": "JSONL file, one line per image, written whole at the end; `-` prints the lines to stdout "
                          "(the summary then goes to stderr)."},
    )
    method: str = field(
        default="score",
        metadata={"help": "score: the most likely label answer, with every label's probability; generate: the greedy "
                          "answer, parsed (its text is in the line)."},
    )
    top_k: int | None = field(
        default=None, metadata={"help": "Keep the K most likely labels in each line's `scores` (default: all)."}
    )
    explain: bool = field(
        default=False,
        metadata={"help": "Also generate an explanation of the emotion per image (slower: one generation per image)."},
    )
    preset: str | None = field(
        default=None,
        metadata={"help": f"With --explain, the question asked: {list(EXPLANATION_PRESETS)} (default label: why the "
                          "predicted emotion; free: which emotion and why; humour: why the image is funny)."},
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Generation budget of the explanation (--explain; default 128) or, without --explain, of "
                          "the answer of --method generate (default: the longest label answer plus a margin); at "
                          "most what the model's context holds after the image."},
    )
    batch_size: int = field(default=8, metadata={"help": "Images per forward pass (per process)."})
    dtype: str = field(default="float32", metadata={"help": f"Model weights dtype: {list(DTYPES)}."})
    quantization: str | None = field(default=None, metadata={"help": f"{list(QUANTIZATIONS)}: {QUANTIZATION_HELP}"})
    max_image_pixels: int = field(
        default=DEFAULT_MAX_IMAGE_PIXELS,
        metadata={"help": "Images with more pixels are skipped unread, a guard against decompression bombs "
                          "(default: Pillow's error level, about 179 million)."},
    )

    def __post_init__(self):
        if self.method not in CLASSIFY_METHODS:
            raise ValueError(f"--method is {self.method!r}; use one of {list(CLASSIFY_METHODS)}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype is {self.dtype!r}; use one of {list(DTYPES)}.")
        check_quantization(self.quantization)
        for name in ("batch_size", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} is {getattr(self, name)}; use a positive number.")
        for name in ("top_k", "max_new_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} is {getattr(self, name)}; use a positive number or leave it unset.")
        if self.output != "-" and os.path.isdir(self.output):
            raise ValueError(f"--output {self.output!r} is a folder; pass a file name, e.g. "
                             f"{os.path.join(self.output, 'predictions.jsonl')!r}.")
        if self.preset is not None and not self.explain:
            raise ValueError(f"--preset {self.preset} chooses the explanation's question; add --explain, or leave "
                             "--preset out.")
        if self.preset is not None and self.preset not in EXPLANATION_PRESETS:
            raise ValueError(f"--preset is {self.preset!r}; use one of {list(EXPLANATION_PRESETS)}.")
        if self.max_new_tokens is not None and not self.explain and self.method != "generate":
            raise ValueError(f"--max_new_tokens {self.max_new_tokens} bounds generated text, and --method score "
                             "without --explain generates none; add --explain or --method generate, or leave it out.")
