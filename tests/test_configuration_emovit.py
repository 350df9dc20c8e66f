"""EmoVitConfig: InstructBLIP's configuration plus `emotion_labels`, the one source of the label set."""

import json
import re
from pathlib import Path

import pytest
from huggingface_hub.errors import StrictDataclassFieldValidationError

import modeling_emovit
from modeling_emovit import EmoVitConfig


def in_step(config):
    labels = config.emotion_labels
    return (
        config.num_labels == len(labels)
        and config.id2label == dict(enumerate(labels))
        and config.label2id == {label: i for i, label in enumerate(labels)}
    )


def test_config_is_instructblip_plus_labels():
    config = EmoVitConfig()
    assert config.model_type == "emovit"
    assert config.emotion_labels[:2] == ["amusement", "awe"] and len(config.emotion_labels) == 8
    assert config.id2label[7] == "sadness" and config.label2id["fear"] == 6
    custom = EmoVitConfig(emotion_labels=["Positive ", "negative"])
    assert custom.emotion_labels == ["positive", "negative"] and custom.id2label == {0: "positive", 1: "negative"}
    assert EmoVitConfig.from_dict(custom.to_dict()).emotion_labels == ["positive", "negative"]


@pytest.mark.parametrize(
    "labels, message",
    [([], "at least two"), (["awe"], "at least two"), (["awe", "awe"], "repeats"), (["awe", ""], "non-empty"),
     ("awe", "'emotion_labels' with value 'awe'")],
)
def test_config_rejects_bad_labels(labels, message):
    # a wrong type is caught by the strict config's own type check, which also names the field and value
    with pytest.raises((ValueError, StrictDataclassFieldValidationError), match=message) as error:
        EmoVitConfig(emotion_labels=labels)
    assert "emotion_labels" in str(error.value)


def test_num_labels_alone_gives_that_many_placeholder_labels():
    config = EmoVitConfig(num_labels=5)
    assert config.emotion_labels == [f"label_{i}" for i in range(5)] and in_step(config)
    assert EmoVitConfig(num_labels=8).emotion_labels == EmoVitConfig().emotion_labels


def test_setting_num_labels_keeps_labels_in_step():
    config = EmoVitConfig()
    config.num_labels = 8  # same count: the names stay, as transformers' setter keeps id2label
    assert config.emotion_labels[0] == "amusement" and in_step(config)
    config.num_labels = 3
    assert config.emotion_labels == ["label_0", "label_1", "label_2"] and in_step(config)


def test_assigning_labels_or_id2label_renames_everywhere():
    config = EmoVitConfig()
    config.emotion_labels = ["Positive", "negative"]
    assert config.emotion_labels == ["positive", "negative"] and in_step(config)
    config.id2label = {"0": "calm", "1": "tense", "2": "joy"}  # JSON-style string keys
    assert config.emotion_labels == ["calm", "tense", "joy"] and in_step(config)
    config.label2id = {"calm": 0, "tense": 1, "joy": 2}  # the inverse is accepted ...
    with pytest.raises(ValueError, match="not the inverse"):  # ... anything else is not
        config.label2id = {"calm": 1, "tense": 0, "joy": 2}
    with pytest.raises(ValueError, match="repeats"):
        config.id2label = {0: "calm", 1: "Calm"}
    assert config.emotion_labels == ["calm", "tense", "joy"] and in_step(config)


def test_named_id2label_is_used_and_a_disagreement_is_an_error():
    assert EmoVitConfig(id2label={0: "Joy", 1: "fear"}).emotion_labels == ["joy", "fear"]
    with pytest.raises(ValueError, match="name different labels"):
        EmoVitConfig(emotion_labels=["joy", "fear"], id2label={0: "fear", 1: "joy"})
    # transformers' LABEL_i placeholders name nothing: the emotion labels win
    config = EmoVitConfig(emotion_labels=["joy", "fear"], id2label={0: "LABEL_0", 1: "LABEL_1"})
    assert config.emotion_labels == ["joy", "fear"] and in_step(config)


def test_num_labels_beside_named_labels_is_ignored_then_from_pretrained_override_applies(tmp_path):
    config = EmoVitConfig(emotion_labels=["joy", "fear"], num_labels=5)
    assert config.emotion_labels == ["joy", "fear"] and in_step(config)
    config.save_pretrained(tmp_path)
    assert EmoVitConfig.from_pretrained(tmp_path).emotion_labels == ["joy", "fear"]
    reloaded = EmoVitConfig.from_pretrained(tmp_path, num_labels=3)  # transformers' re-head pattern
    assert reloaded.emotion_labels == ["label_0", "label_1", "label_2"] and in_step(reloaded)


def test_save_and_reload_keeps_the_contract(tmp_path):
    config = EmoVitConfig(num_labels=5)
    config.save_pretrained(tmp_path)
    reloaded = EmoVitConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict() and in_step(reloaded)


def test_every_file_carries_a_dated_licence_header():
    """transformers' common tests read the copyright year on top of the configuration file to decide which checks
    apply (models added since 2023 must re-initialise every weight); every file of the package carries one."""
    for path in sorted(Path(modeling_emovit.__file__).parent.glob("*.py")):
        head = path.read_text().splitlines()[:4]
        match = re.match(r"^# Copyright (\d{4}) ", head[0])
        assert match and int(match.group(1)) >= 2023, path.name
        assert any("BSD 3-Clause" in line for line in head), path.name


def test_score_temperature_defaults_to_one_is_validated_and_survives_save(tmp_path):
    assert EmoVitConfig().score_temperature == 1.0
    config = EmoVitConfig(score_temperature=2)
    assert config.score_temperature == 2.0 and isinstance(config.score_temperature, float)
    for bad in (0, -1.5, float("nan"), float("inf"), True):  # a bool is refused by the field's type already
        message = r"score_temperature.*" + re.escape(repr(bad))
        with pytest.raises((ValueError, StrictDataclassFieldValidationError), match=message):
            EmoVitConfig(score_temperature=bad)
        with pytest.raises((ValueError, StrictDataclassFieldValidationError), match=message):
            config.score_temperature = bad
    assert config.score_temperature == 2.0  # a refused assignment leaves the value
    config.score_temperature = 0.5
    config.save_pretrained(tmp_path)
    assert EmoVitConfig.from_pretrained(tmp_path).score_temperature == 0.5


def test_score_temperature_is_bounded_to_where_the_scores_stay_finite(tmp_path):
    from modeling_emovit.configuration_emovit import SCORE_TEMPERATURE_RANGE

    low, high = SCORE_TEMPERATURE_RANGE
    assert EmoVitConfig(score_temperature=low).score_temperature == low
    assert EmoVitConfig(score_temperature=high).score_temperature == high
    for bad in (1e-40, low / 2, high * 2, 1e300):
        with pytest.raises(ValueError, match=rf"score_temperature.*between {low:g} and {high:g}.*"
                                             rf"{re.escape(repr(bad))}"):
            EmoVitConfig(score_temperature=bad)
    # A config.json edited by hand is refused on loading, naming the value.
    EmoVitConfig().save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**stored, "score_temperature": 1e-40}))
    with pytest.raises(ValueError, match=r"score_temperature.*1e-40"):
        EmoVitConfig.from_pretrained(tmp_path)
