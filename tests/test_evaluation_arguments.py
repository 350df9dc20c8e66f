"""emovit.evaluation.arguments: EvalArguments refuses bad values, naming the flag and the value."""

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
