"""The record schema: the Record dataclass, the categorical pair, training checks, and parsing type lists."""

import pytest

from dataset_builder.records import (
    INSTRUCTION_TYPES,
    Record,
    categorical_pair,
    parse_per_class,
    parse_types,
    question_and_answer,
    training_record_problem,
)
from modeling_emovit.processing_emovit import format_answer, format_categorical_instruction


def test_categorical_pair_is_the_processor_definition():
    question, answer = categorical_pair("fear")
    assert answer == format_answer("fear") == "Predict emotion: fear"
    assert question == format_categorical_instruction(("amusement", "awe", "contentment", "excitement", "anger",
                                                        "disgust", "fear", "sadness"))


def test_record_round_trips_through_its_json_object_in_file_order():
    record = Record(id="conversation/awe_00001/0", image="image/awe/awe_00001.jpg", emotion="awe", type="conversation",
                    conversations=question_and_answer("Q?", "A."), attributes={"scene": "mountain"},
                    attributes_computed=["brightness"], caption="a peak", generator="template", prompt_hash="h")
    data = record.to_dict()
    assert list(data) == ["id", "image", "emotion", "type", "conversations", "attributes", "attributes_computed",
                          "caption", "generator", "prompt_hash"]
    assert data["conversations"] == [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]
    assert Record.from_dict(data) == record and training_record_problem(data) is None
    with pytest.raises(ValueError, match=r"fields \['extra'\] that a record does not have"):
        Record.from_dict({**data, "extra": 1})
    with pytest.raises(ValueError, match="lacks a required field"):
        Record.from_dict({k: v for k, v in data.items() if k != "emotion"})


def test_type_lists_are_parsed_once_for_every_flag():
    assert parse_types(" reasoning, categorical,,") == ("reasoning", "categorical")
    assert parse_types(",".join(INSTRUCTION_TYPES), "--curriculum", distinct=True) == INSTRUCTION_TYPES
    with pytest.raises(ValueError, match=r"--types 'categorical,joy' names \['joy'\]; use a comma list"):
        parse_types("categorical,joy")
    with pytest.raises(ValueError, match="--types ' , ' names no type"):
        parse_types(" , ")
    with pytest.raises(ValueError, match="--curriculum 'reasoning,reasoning' names a type twice"):
        parse_types("reasoning,reasoning", "--curriculum", distinct=True)
    defaults = {"categorical": 4600, "conversation": 1000, "reasoning": 100}
    assert parse_per_class("reasoning=3, categorical=0", defaults) == {"categorical": 0, "conversation": 1000,
                                                                        "reasoning": 3}
    assert defaults["reasoning"] == 100
    for bad in ("reasoning", "joy=3", "reasoning=-1", "reasoning=x"):
        with pytest.raises(ValueError, match=f"--per_class part {bad!r} is not TYPE=COUNT"):
            parse_per_class(bad, defaults)
