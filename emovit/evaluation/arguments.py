"""The arguments of an evaluation run, as a dataclass for `HfArgumentParser` (evaluate.py's command line) and for
callers that evaluate in-process (train.py's held-out evaluation)."""

import os
from dataclasses import dataclass, field

from dataset_builder import parse_types
from dataset_builder.llm import parse_prices
from emovit.inference.loading import DTYPES
from emovit.quantization import QUANTIZATION_HELP, QUANTIZATIONS, check_quantization
from emovit_utils.files import check_output_path
from emovit_utils.hub import check_card
from emovit_utils.numbers import is_finite_number
from modeling_emovit import CATEGORICAL_INSTRUCTION_VARIANTS, CLASSIFY_METHODS, EXPLANATION_PRESETS

from .benchmarks import DATASET_FORMATS
from .calibration import MAX_TEMPERATURE, MIN_CALIBRATION_IMAGES, MIN_TEMPERATURE
from .data import REFERENCE_TYPES
from .labels import LABEL_MAP_PRESETS


TASKS = ("classification", "reasoning")




@dataclass
class EvalArguments:
    model: str = field(metadata={"help": "EmoVIT or InstructBLIP folder, or Hub id."})
    dataset: str = field(
        metadata={"help": "EmoSet root, ImageFolder, save_to_disk/parquet folder, or Hub dataset id."}
    )
    output_dir: str = field(metadata={"help": "Where metrics.json, predictions.jsonl, confusion_matrix.png go; not the "
                                              "model folder, nor the dataset or a folder inside it."})
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
    quantization: str | None = field(default=None, metadata={"help": f"{list(QUANTIZATIONS)}: {QUANTIZATION_HELP}"})
    max_images: int | None = field(default=None, metadata={"help": "Evaluate only the first N images (smoke runs)."})
    # ---- benchmark datasets (emovit.evaluation.benchmarks)
    dataset_format: str | None = field(
        default=None,
        metadata={"help": f"Read --dataset in a benchmark's published layout: {list(DATASET_FORMATS)}. Unset: an "
                          "EmoSet root, ImageFolder (FI, UnbiasedEmo, Twitter I/II), saved dataset or Hub id."},
    )
    skip_uncovered_labels: bool = field(
        default=False,
        metadata={"help": "Leave out (counted, with the reason) images whose label no model label maps to under "
                          "--label_map, instead of stopping (WebEmo-7's confusion in zero-shot)."},
    )
    # ---- calibration and the model card
    calibrate_on: str | None = field(
        default=None,
        metadata={"help": "score only: fit one temperature on this split's NLL (same dataset) and report the "
                          "evaluated split's metrics before and after it (`calibrated`)."},
    )
    save_temperature: bool = field(
        default=False,
        metadata={"help": "With --calibrate_on: store the temperature in --model's config.json (score_temperature), "
                          "which classify(method='score'), the pipeline and predict.py apply. Local folders only. "
                          "Refused when the fit is unreliable (see --save_unreliable_temperature)."},
    )
    save_unreliable_temperature: bool = field(
        default=False,
        metadata={"help": "With --save_temperature: store the temperature even when the fit is unreliable (fewer "
                          f"than {MIN_CALIBRATION_IMAGES} images, a single class, or a fit at an end of the search "
                          f"range {MIN_TEMPERATURE:g}-{MAX_TEMPERATURE:g}), which is otherwise refused."},
    )
    update_card: str | None = field(
        default=None,
        metadata={"help": "Model folder whose README.md gets this run's results in its model-index metadata "
                          "(replacing an earlier run's on the same dataset, split and metric; created if missing)."},
    )

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
    vocabulary_from: str | None = field(
        default=None,
        metadata={"help": "A dataset_builder output folder (the model's training data): --task reasoning then reports "
                          "known_word_rate, the share of explanation words found in its answers."},
    )
    references: str | None = field(
        default=None,
        metadata={"help": "Reference answers of the split's images: a dataset_builder output folder built from the "
                          "evaluated split (its --reference_types records), or a JSONL of {\"id\" or \"image\", "
                          "\"reference\"} lines. --task reasoning then reports BLEU-4 and ROUGE-L against them."},
    )
    reference_types: str = field(
        default="reasoning",
        metadata={"help": f"With a dataset_builder folder as --references: the record types whose answers are the "
                          f"references, a comma list of {list(REFERENCE_TYPES)}."},
    )
    bertscore_model: str | None = field(
        default=None,
        metadata={"help": "With --references: a local folder holding a text encoder (e.g. roberta-large) for "
                          "BERTScore; nothing is downloaded. Unset: no BERTScore."},
    )
    bertscore_layer: int | None = field(
        default=None, metadata={"help": "The --bertscore_model layer whose hidden states are compared; default: its "
                                        "last (roberta-large's usual choice is 17)."},
    )
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
        check_quantization(self.quantization)
        if self.batch_size < 1:
            raise ValueError(f"--batch_size is {self.batch_size}; use a positive number of images per batch.")
        if not 1 <= self.prompt_variants <= len(CATEGORICAL_INSTRUCTION_VARIANTS):
            raise ValueError(
                f"--prompt_variants is {self.prompt_variants}; there are {len(CATEGORICAL_INSTRUCTION_VARIANTS)} "
                f"instruction variants, so use 1 to {len(CATEGORICAL_INSTRUCTION_VARIANTS)}."
            )
        if self.dataset_format is not None and self.dataset_format not in DATASET_FORMATS:
            raise ValueError(f"--dataset_format is {self.dataset_format!r}; use one of {list(DATASET_FORMATS)} or "
                             "leave it unset.")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"--max_images is {self.max_images}; use a positive number or leave it unset.")
        self._check_reasoning()
        self._check_calibration_and_card()
        self.check_output_dir()

    def check_output_dir(self):
        """--output_dir keeps off the inputs: not the model folder, the dataset (nor inside it: an ImageFolder would
        take confusion_matrix.png for one of its images), the label map or the judge's cache, and not a file. The
        judge's cache, appended to, keeps off them too, and off photos."""
        reads = [self.model, self.dataset, *([self.label_map] if self.label_map else []),
                 *[path for path in (self.references, self.bertscore_model) if path]]
        check_output_path("--output_dir", self.output_dir, [*reads, *([self.judge_cache] if self.judge_cache else [])],
                          read_folders=[self.dataset], folder=True)
        if self.judge_cache is not None:
            check_output_path("--judge_cache", self.judge_cache, reads, read_folders=[self.dataset])

    def _check_reasoning(self):
        """The reasoning task's flags: valid, and given only where they apply."""
        if self.task not in TASKS:
            raise ValueError(f"--task is {self.task!r}; use one of {list(TASKS)}.")
        if self.explain_preset not in EXPLANATION_PRESETS:
            raise ValueError(f"--explain_preset is {self.explain_preset!r}; use one of {list(EXPLANATION_PRESETS)}.")
        if isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens is {self.max_new_tokens}; use a positive number of tokens.")
        if self.judge_max_cost is not None and not is_finite_number(self.judge_max_cost, 0):
            raise ValueError(f"--judge_max_cost is {self.judge_max_cost}; use a finite number of USD >= 0.")
        if self.judge_concurrency < 1:
            raise ValueError(f"--judge_concurrency is {self.judge_concurrency}; use 1 or more requests in flight.")
        if self.judge_price_per_mtok is not None:
            parse_prices(self.judge_price_per_mtok, "--judge_price_per_mtok")
        given = [name for name in ("judge_base_url", "judge_max_cost", "judge_price_per_mtok", "judge_cache")
                 if getattr(self, name) is not None] + (["judge_dry_run"] if self.judge_dry_run else [])
        if given and self.judge_model is None:
            raise ValueError(f"--{given[0]} is set but --judge_model is not; name the judge's model to use the judge.")
        self._check_references()
        if self.task == "classification":
            if self.judge_model is not None:
                raise ValueError("--judge_model judges explanations; it needs --task reasoning.")
            if self.vocabulary_from is not None:
                raise ValueError("--vocabulary_from counts the words of explanations; it needs --task reasoning.")
            if self.references is not None:
                raise ValueError("--references scores explanations against reference answers; it needs --task "
                                 "reasoning.")
            return
        if self.label_map is not None:
            raise ValueError(f"--label_map is {self.label_map!r}, but --task reasoning compares explanations with "
                             "the model's own labels; evaluate reasoning on a dataset labelled with them.")
        if self.prompt_variants != 1:
            raise ValueError(f"--prompt_variants is {self.prompt_variants}; --task reasoning asks the "
                             "--explain_preset question only, so leave it at 1.")
        classification_only = [name for name in ("dataset_format", "calibrate_on", "update_card")
                               if getattr(self, name) is not None]
        if classification_only:
            raise ValueError(f"--{classification_only[0]} is {getattr(self, classification_only[0])!r}, but it belongs "
                             "to --task classification; --task reasoning reads EmoSet roots, ImageFolders and "
                             "datasets by their own layout and writes no calibration or card results.")

    def _check_references(self):
        """The reference flags: an existing --references, known types, BERTScore only with references."""
        types = parse_types(self.reference_types, "--reference_types")
        if "categorical" in types:
            raise ValueError(f"--reference_types is {self.reference_types!r}; a categorical answer names a label only, "
                             f"so use {list(REFERENCE_TYPES)}.")
        if self.references is not None and not os.path.exists(self.references):
            raise ValueError(f"--references {self.references!r} does not exist; give a JSONL file of references or a "
                             "dataset_builder output folder.")
        if self.bertscore_model is not None and self.references is None:
            raise ValueError("--bertscore_model scores explanations against reference answers; pass --references too.")
        if self.bertscore_layer is not None and self.bertscore_model is None:
            raise ValueError("--bertscore_layer picks a layer of --bertscore_model; pass --bertscore_model too.")
        if self.bertscore_model is not None and not os.path.isdir(self.bertscore_model):
            raise ValueError(f"--bertscore_model {self.bertscore_model!r} is not a local folder. BERTScore is "
                             "computed from a model on disk only (nothing is downloaded): pass the folder of a saved "
                             "encoder (`hf download roberta-large --local-dir DIR` where there is network).")

    def _check_calibration_and_card(self):
        if self.calibrate_on is not None and self.method != "score":
            raise ValueError(
                f"--calibrate_on {self.calibrate_on!r} needs --method score: a temperature rescales the label "
                f"probabilities, and --method {self.method} gives none (its answers score 1 or 0)."
            )
        if self.save_temperature and self.calibrate_on is None:
            raise ValueError("--save_temperature stores the temperature fitted by --calibrate_on; pass --calibrate_on "
                             "SPLIT (e.g. validation) as well.")
        if self.save_unreliable_temperature and not self.save_temperature:
            raise ValueError("--save_unreliable_temperature lets --save_temperature store an unreliable fit; pass "
                             "--save_temperature as well (or drop --save_unreliable_temperature).")
        if self.save_temperature and not os.path.isdir(self.model):
            raise ValueError(
                f"--save_temperature writes into --model's config.json, but --model {self.model!r} is not a local "
                "folder (a Hub id cannot be written to). Download it (`hf download ID --local-dir DIR`) and pass DIR."
            )
        if self.update_card is not None and not os.path.isdir(self.update_card):
            raise ValueError(
                f"--update_card {self.update_card!r} is not a local folder; it names the model folder whose "
                "README.md gets the results. A Hub repo's card cannot be edited from here: download the repo, "
                "update its folder, then upload it."
            )
        if self.update_card is not None:
            # The card is read now, so a broken one stops the run before the evaluation rather than after it.
            try:
                check_card(self.update_card)
            except ValueError as e:
                raise ValueError(f"--update_card {self.update_card!r}: {e}") from e
