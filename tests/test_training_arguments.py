"""emovit.training.arguments: the offline default's flags, the cross-flag checks, the dtype."""

import pytest
import torch
from transformers import HfArgumentParser

from emovit.training.arguments import (
    OFFLINE_DEFAULT_ARGS,
    DataArguments,
    EmoVitTrainingArguments,
    ModelArguments,
    check_arguments,
    compute_dtype,
    is_offline,
    with_offline_defaults,
)


def parse(argv):
    parser = HfArgumentParser((ModelArguments, DataArguments, EmoVitTrainingArguments))
    return parser.parse_args_into_dataclasses(args=with_offline_defaults(argv))


def test_offline_defaults_fill_in_only_without_model_and_dataset():
    assert with_offline_defaults([]) == OFFLINE_DEFAULT_ARGS
    assert with_offline_defaults(["--max_steps", "3"]) == OFFLINE_DEFAULT_ARGS + ["--max_steps", "3"]
    for given in (["--dataset", "d"], ["--dataset=d"], ["--model_name_or_path", "m"], ["--model_name_or_path=m"]):
        assert with_offline_defaults(given) == given


def test_flags_given_override_the_offline_defaults():
    model_args, data_args, training_args = parse(["--max_steps", "3", "--output_dir", "elsewhere"])
    assert is_offline(model_args, data_args)
    assert training_args.max_steps == 3 and training_args.output_dir == "elsewhere"
    assert training_args.learning_rate == 1e-3 and data_args.cache_vision_features
    assert data_args.types == data_args.curriculum == "categorical,conversation,reasoning"  # the paper's order
    model_args, data_args, training_args = parse(["--dataset", "d", "--output_dir", "x"])
    assert not is_offline(model_args, data_args)
    assert training_args.learning_rate == 1e-5 and not data_args.cache_vision_features  # the official recipe


def test_augment_and_cache_exclude_each_other():
    with pytest.raises(ValueError, match="--augment and --cache_vision_features exclude each other"):
        check_arguments(DataArguments(augment=True, cache_vision_features=True), EmoVitTrainingArguments())
    with pytest.raises(ValueError, match="--load_best_model_at_end is not supported"):
        check_arguments(DataArguments(), EmoVitTrainingArguments(load_best_model_at_end=True, eval_strategy="steps",
                                                                 save_strategy="steps"))
    check_arguments(DataArguments(augment=True), EmoVitTrainingArguments())


def test_dtype_follows_the_precision_flag():
    assert compute_dtype(EmoVitTrainingArguments()) == torch.float32
    assert compute_dtype(EmoVitTrainingArguments(bf16=True, use_cpu=True)) == torch.bfloat16
