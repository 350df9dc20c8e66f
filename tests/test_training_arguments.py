"""emovit.training.arguments: the offline default's flags, the cross-flag checks, the dtype, and the shipped training
configs read through them."""

import re
from pathlib import Path

import pytest
import torch
import yaml
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
from emovit_utils.commands import read_argument_file


REPO = Path(__file__).resolve().parents[1]


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


def test_offline_language_model_is_checked_by_name():
    model_args, data_args, training_args = parse(["--offline_language_model", "t5"])
    assert data_args.offline_language_model == "t5" and is_offline(model_args, data_args)
    check_arguments(data_args, training_args)
    assert parse([])[1].offline_language_model == "llama"
    with pytest.raises(ValueError, match="--offline_language_model 'flan' .*'llama', 't5'"):
        check_arguments(DataArguments(offline_language_model="flan"), EmoVitTrainingArguments())


@pytest.mark.parametrize("config", sorted(REPO.glob("configs/emovit_*.yaml")), ids=lambda path: path.name)
def test_every_training_config_parses_as_train_py_reads_it_and_names_its_base(config, tmp_path):
    """Each configs/emovit_<base>.yaml goes through train.py's file parsing (the project's dataclasses, unknown keys
    refused), passes train.py's cross-flag checks, and trains the base its name and header say: the launch command
    names the file itself, and `model_name_or_path` and `output_dir` name the backbone in the file's name."""
    text = config.read_text()
    assert text.splitlines()[0] == f"# accelerate launch train.py configs/{config.name}"
    flags = yaml.safe_load(text)
    if not torch.cuda.is_available():
        flags["use_cpu"] = True  # bf16 is refused on a machine without a GPU; the rest parses as on one
    copy = tmp_path / config.name
    copy.write_text(yaml.safe_dump(flags))
    parser = HfArgumentParser((ModelArguments, DataArguments, EmoVitTrainingArguments))
    model_args, data_args, training_args = read_argument_file(parser, str(copy), "train.py")
    check_arguments(data_args, training_args)

    def squashed(text):
        return re.sub(r"[^a-z0-9]", "", text.lower())

    backbone = config.stem.removeprefix("emovit_")  # e.g. vicuna7b, flant5xl
    assert model_args.model_name_or_path.startswith("Salesforce/instructblip-")
    assert squashed(model_args.model_name_or_path).endswith(backbone), model_args.model_name_or_path
    assert squashed(training_args.output_dir).endswith(backbone), training_args.output_dir
    header = squashed(" ".join(line for line in text.splitlines() if line.startswith("#")))
    assert squashed(f"InstructBLIP-{backbone}") in header  # the comment says which base it trains
    # the official recipe's settings (REFERENCE), whatever the backbone
    assert (training_args.learning_rate, training_args.weight_decay, training_args.num_train_epochs,
            training_args.seed, training_args.lr_scheduler_type.value) == (1e-5, 0.005, 4, 42, "cosine")
    assert data_args.curriculum == "categorical,conversation,reasoning" and training_args.bf16
