"""emovit.evaluation.arguments: EvalArguments refuses bad values, naming the flag and the value."""

import re

import pytest
from transformers import HfArgumentParser

from emovit.evaluation.arguments import EvalArguments
from emovit.inference.loading import DTYPES
from modeling_emovit import CATEGORICAL_INSTRUCTION_VARIANTS, CLASSIFY_METHODS


def arguments(**overrides):
    return EvalArguments(**{"model": "m", "dataset": "d", "output_dir": "o", **overrides})


def test_defaults():
    args = arguments()
    assert (args.split, args.method, args.batch_size, args.label_map, args.prompt_variants, args.dtype,
            args.max_images) == ("test", "score", 16, None, 1, "float32", None)
    assert CLASSIFY_METHODS == ("score", "generate") and list(DTYPES) == ["float32", "bfloat16", "float16"]


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match=r"--method is 'vote'.*'score', 'generate'"):
        arguments(method="vote")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dtype": "int8"}, r"--dtype is 'int8'.*'float32'"),
        ({"batch_size": 0}, r"--batch_size is 0"),
        ({"prompt_variants": 0}, rf"--prompt_variants is 0.*1 to {len(CATEGORICAL_INSTRUCTION_VARIANTS)}"),
        ({"prompt_variants": len(CATEGORICAL_INSTRUCTION_VARIANTS) + 1}, r"--prompt_variants is"),
        ({"max_images": 0}, r"--max_images is 0"),
    ],
)
def test_bad_values_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        arguments(**overrides)


def test_parser_reads_the_flags():
    (args,) = HfArgumentParser(EvalArguments).parse_args_into_dataclasses(
        args=["--model", "m", "--dataset", "d", "--output_dir", "o", "--method", "generate", "--label_map", "binary",
              "--max_images", "7"]
    )
    assert (args.method, args.label_map, args.max_images) == ("generate", "binary", 7)


# ----------------------------------------------------------------------------------------------------- reasoning


def test_reasoning_defaults_leave_classification_as_it_was():
    args = arguments()
    assert (args.task, args.explain_preset, args.max_new_tokens, args.judge_model) == ("classification", "free", 128,
                                                                                        None)
    (parsed,) = HfArgumentParser(EvalArguments).parse_args_into_dataclasses(
        args=["--model", "m", "--dataset", "d", "--output_dir", "o", "--task", "reasoning", "--explain_preset", "label",
              "--judge_model", "gpt-4o", "--judge_max_cost", "0.5", "--judge_dry_run", "--judge_price_per_mtok", "1,2"])
    assert (parsed.task, parsed.explain_preset, parsed.judge_model, parsed.judge_max_cost, parsed.judge_dry_run,
            parsed.judge_price_per_mtok) == ("reasoning", "label", "gpt-4o", 0.5, True, "1,2")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"task": "captioning"}, r"--task is 'captioning'.*'classification', 'reasoning'"),
        ({"task": "reasoning", "explain_preset": "poem"}, r"--explain_preset is 'poem'.*'label', 'free', 'humour'"),
        ({"task": "reasoning", "max_new_tokens": 0}, r"--max_new_tokens is 0"),
        ({"task": "reasoning", "label_map": "binary"}, r"--label_map is 'binary'.*model's own labels"),
        ({"task": "reasoning", "prompt_variants": 2}, r"--prompt_variants is 2.*leave it at 1"),
        ({"task": "reasoning", "calibrate_on": "val"}, r"--calibrate_on is 'val'.*--task classification"),
        ({"judge_model": "gpt-4o"}, r"--judge_model judges explanations; it needs --task reasoning"),
        ({"task": "reasoning", "judge_max_cost": 1.0}, r"--judge_max_cost is set but --judge_model is not"),
        ({"task": "reasoning", "judge_dry_run": True}, r"--judge_dry_run is set but --judge_model is not"),
        ({"task": "reasoning", "judge_model": "m", "judge_max_cost": -1.0}, r"--judge_max_cost is -1.0"),
        ({"task": "reasoning", "judge_model": "m", "judge_price_per_mtok": "cheap"},
         r"--judge_price_per_mtok is 'cheap'"),
        ({"task": "reasoning", "judge_model": "m", "judge_concurrency": 0}, r"--judge_concurrency is 0"),
        ({"references": "."}, r"--references scores explanations .*needs --task reasoning"),
        ({"task": "reasoning", "references": "missing.jsonl"}, r"--references 'missing.jsonl' does not exist"),
        ({"task": "reasoning", "reference_types": "categorical"}, r"--reference_types is 'categorical'.*label only"),
        ({"task": "reasoning", "reference_types": "poems"}, r"--reference_types 'poems' names \['poems'\]"),
        ({"task": "reasoning", "bertscore_model": "."}, r"--bertscore_model .*pass --references too"),
        ({"task": "reasoning", "references": ".", "bertscore_layer": 3}, r"--bertscore_layer .*--bertscore_model"),
        ({"task": "reasoning", "references": ".", "bertscore_model": "roberta-large"},
         r"--bertscore_model 'roberta-large' is not a local folder.*nothing is downloaded"),
    ],
)
def test_bad_reasoning_values_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        arguments(**overrides)

def test_dataset_format_is_checked_and_defaults_to_none():
    args = arguments()
    assert args.dataset_format is None and args.skip_uncovered_labels is False
    assert arguments(dataset_format="emotion6").dataset_format == "emotion6"
    with pytest.raises(ValueError, match=r"--dataset_format is 'emotion7'.*'artphoto'"):
        arguments(dataset_format="emotion7")


def test_calibration_and_card_flags_are_checked_up_front(tmp_path):
    assert (arguments().calibrate_on, arguments().save_temperature, arguments().update_card) == (None, False, None)
    with pytest.raises(ValueError, match=r"--calibrate_on 'val' needs --method score.*--method generate"):
        arguments(method="generate", calibrate_on="val")
    with pytest.raises(ValueError, match=r"--save_temperature .* pass --calibrate_on"):
        arguments(model=str(tmp_path), save_temperature=True)
    with pytest.raises(ValueError, match=r"--model 'user/emovit' is not a local folder \(a Hub id"):
        arguments(model="user/emovit", calibrate_on="val", save_temperature=True)
    with pytest.raises(ValueError, match=r"--update_card 'user/emovit' is not a local folder"):
        arguments(update_card="user/emovit")
    args = arguments(model=str(tmp_path), calibrate_on="val", save_temperature=True, update_card=str(tmp_path))
    assert (args.calibrate_on, args.save_temperature, args.update_card) == ("val", True, str(tmp_path))


def test_an_output_dir_that_is_the_dataset_the_model_or_a_file_is_refused(tmp_path):
    from PIL import Image

    dataset, model = tmp_path / "images", tmp_path / "model"
    (dataset / "awe").mkdir(parents=True)
    model.mkdir()
    Image.new("RGB", (8, 8)).save(dataset / "awe" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "red.jpg")
    for output_dir, words in [
        (dataset, f"is the input '{dataset}'"),
        (dataset / "awe", f"lies inside '{dataset}'"),  # confusion_matrix.png would become an image of class awe
        (model, f"is the input '{model}'"),
        (tmp_path / "red.jpg", "is an image file (JPEG), not a folder"),
    ]:
        with pytest.raises(ValueError, match=rf"^--output_dir '{output_dir}' {re.escape(words)}"):
            EvalArguments(model=str(model), dataset=str(dataset), output_dir=str(output_dir))
    # train.py's held-out evaluation writes into the model folder's eval/: that is not an input.
    EvalArguments(model=str(model), dataset=str(dataset), output_dir=str(model / "eval"))


def test_a_judge_cache_over_an_input_or_a_photo_is_refused(tmp_path):
    from PIL import Image

    dataset = tmp_path / "images"
    (dataset / "awe").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(dataset / "awe" / "a.png")
    reasoning = {"model": str(tmp_path / "model"), "dataset": str(dataset), "output_dir": str(tmp_path / "out"),
                 "task": "reasoning", "judge_model": "gpt-4o-mini"}
    for cache, words in [
        (dataset / "awe" / "a.png", f"lies inside '{dataset}'"),
        (dataset / "cache.jsonl", f"lies inside '{dataset}'"),
        (tmp_path / "red.jpg", "is named like an image (.jpg)"),
    ]:
        with pytest.raises(ValueError, match=rf"^--judge_cache '{cache}' {re.escape(words)}"):
            EvalArguments(**reasoning, judge_cache=str(cache))
    EvalArguments(**reasoning, judge_cache=str(tmp_path / "judge.jsonl"))


def test_update_card_is_checked_before_the_run(tmp_path):
    (tmp_path / "README.md").write_text("---\nmodel-index: [unclosed\n---\n")
    with pytest.raises(ValueError, match=r"--update_card .*metadata block of .*README.md' is not valid YAML"):
        EvalArguments(model="m", dataset="d", output_dir=str(tmp_path / "out"), update_card=str(tmp_path))
