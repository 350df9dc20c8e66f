"""The arguments of an evaluation run, as a dataclass for `HfArgumentParser` (evaluate.py's command line) and for
callers that evaluate in-process (train.py's held-out evaluation)."""

import math
from dataclasses import dataclass, field

from emovit.inference.loading import DTYPES
from modeling_emovit import CATEGORICAL_INSTRUCTION_VARIANTS, CLASSIFY_METHODS, EXPLANATION_PRESETS

from .labels import LABEL_MAP_PRESETS


TASKS = ("classification", "reasoning")




@dataclass
class EvalArguments:
    model: str = field(metadata={"help": "EmoVIT or InstructBLIP folder, or Hub id."})
    dataset: str = field(
        metadata={"help": "EmoSet root, ImageFolder, save_to_disk/parquet folder, or Hub dataset id."}
    )
    output_dir: str = field(metadata={"help": "Where metrics.json, predictions.jsonl, confusion_matrix.png go."})
    split: str = field(default="test", metadata={"help": "Split to evaluate."})
    method: str = field(
        default="score",
        metadata={"help": "score: most likely label answer (never invalid); generate: greedy answer, parsed."},
    )
    batch_size: int = field(default=16, metadata={"help": "Images per forward pass (per process)."})
    label_map: str | None = field(
        default=None,
        metadata={"help": f"JSON file mapping model labels to dataset labels, or a preset: {list(LABEL_MAP_PRESETS)}."},
    )
    prompt_variants: int = field(
        default=1,
        metadata={"help": f"Evaluate under the first N of {len(CATEGORICAL_INSTRUCTION_VARIANTS)} paraphrased "
                          "instructions (1 = the training instruction only) and report the accuracy spread."},
    )
    dtype: str = field(default="float32", metadata={"help": f"Model weights dtype: {list(DTYPES)}."})
    max_images: int | None = field(default=None, metadata={"help": "Evaluate only the first N images (smoke runs)."})

    # ---- reasoning quality (--task reasoning): explanations scored offline, optionally by an LLM judge
    task: str = field(
        default="classification",
        metadata={"help": f"{list(TASKS)}: classification metrics, or explanations scored for emotion consistency, "
                          "attribute grounding and contradictions (needs an EmoSet root for the attributes)."},
    )
    explain_preset: str = field(
        default="free",
        metadata={"help": f"Question of --task reasoning, one of {list(EXPLANATION_PRESETS)}. free (default) does not "
                          "name the emotion, so consistency with the label is earned; label names the prediction."},
    )
    max_new_tokens: int = field(default=128, metadata={"help": "Length budget of each explanation (--task reasoning)."})
    judge_model: str | None = field(
        default=None,
        metadata={"help": "Model name for the optional LLM judge of explanations on an OpenAI-compatible server "
                          "(key from OPENAI_API_KEY only); unset: no judge."},
    )
    judge_base_url: str | None = field(
        default=None, metadata={"help": "The judge's endpoint, e.g. http://localhost:8000/v1; default: OPENAI_BASE_URL "
                                        "or OpenAI."},
    )
    judge_max_cost: float | None = field(
        default=None,
        metadata={"help": "USD ceiling for the judge's cache (earlier runs count); no new requests past it."},
    )
    judge_price_per_mtok: str | None = field(
        default=None, metadata={"help": "PROMPT,COMPLETION USD per million tokens, for models without a known price."},
    )
    judge_dry_run: bool = field(
        default=False,
        metadata={"help": "Generate and score the explanations, report the judge's requests, tokens and cost; send "
                          "nothing."},
    )
    judge_concurrency: int = field(default=4, metadata={"help": "Judge requests in flight."})
    judge_cache: str | None = field(
        default=None, metadata={"help": "The judge's reply cache (JSONL); default: OUTPUT_DIR/judge_cache.jsonl."},
    )

    def __post_init__(self):
        if self.method not in CLASSIFY_METHODS:
            raise ValueError(f"--method is {self.method!r}; use one of {list(CLASSIFY_METHODS)}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype is {self.dtype!r}; use one of {list(DTYPES)}.")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size is {self.batch_size}; use a positive number of images per batch.")
        if not 1 <= self.prompt_variants <= len(CATEGORICAL_INSTRUCTION_VARIANTS):
            raise ValueError(
                f"--prompt_variants is {self.prompt_variants}; there are {len(CATEGORICAL_INSTRUCTION_VARIANTS)} "
                f"instruction variants, so use 1 to {len(CATEGORICAL_INSTRUCTION_VARIANTS)}."
            )
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"--max_images is {self.max_images}; use a positive number or leave it unset.")
        self._check_reasoning()

    def _check_reasoning(self):
        """The reasoning task's flags: valid, and given only where they apply."""
        if self.task not in TASKS:
            raise ValueError(f"--task is {self.task!r}; use one of {list(TASKS)}.")
        if self.explain_preset not in EXPLANATION_PRESETS:
            raise ValueError(f"--explain_preset is {self.explain_preset!r}; use one of {list(EXPLANATION_PRESETS)}.")
        if isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens is {self.max_new_tokens}; use a positive number of tokens.")
        if self.judge_max_cost is not None and not (math.isfinite(self.judge_max_cost) and self.judge_max_cost >= 0):
            raise ValueError(f"--judge_max_cost is {self.judge_max_cost}; use a finite number of USD >= 0.")
        if self.judge_concurrency < 1:
            raise ValueError(f"--judge_concurrency is {self.judge_concurrency}; use 1 or more requests in flight.")
        if self.judge_price_per_mtok is not None:
            parse_prices(self.judge_price_per_mtok)
        given = [name for name in ("judge_base_url", "judge_max_cost", "judge_price_per_mtok", "judge_cache")
                 if getattr(self, name) is not None] + (["judge_dry_run"] if self.judge_dry_run else [])
        if given and self.judge_model is None:
            raise ValueError(f"--{given[0]} is set but --judge_model is not; name the judge's model to use the judge.")
        if self.task == "classification":
            if self.judge_model is not None:
                raise ValueError("--judge_model judges explanations; it needs --task reasoning.")
            return
        if self.label_map is not None:
            raise ValueError(f"--label_map is {self.label_map!r}, but --task reasoning compares explanations with "
                             "the model's own labels; evaluate reasoning on a dataset labelled with them.")
        if self.prompt_variants != 1:
            raise ValueError(f"--prompt_variants is {self.prompt_variants}; --task reasoning asks the "
                             "--explain_preset question only, so leave it at 1.")


def parse_prices(text: str) -> tuple[float, float]:
    """"PROMPT,COMPLETION" USD per million tokens -> two finite numbers >= 0; ValueError quoting the text."""
    try:
        prices = tuple(float(part) for part in text.split(","))
    except ValueError:
        prices = ()
    if len(prices) != 2 or not all(math.isfinite(p) and p >= 0 for p in prices):
        raise ValueError(f"--judge_price_per_mtok is {text!r}; use two prices >= 0, e.g. 2.5,10")
    return prices
