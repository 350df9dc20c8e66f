"""emovit.evaluation.labels: presets, reading a label map, dataset labels as indices, mapping scores."""

import json

import pytest

from emovit.evaluation.labels import (
    LABEL_MAP_PRESETS,
    LabelMapping,
    label_mapping,
    map_scores,
    normalise_label,
    reference_indices,
    resolve_label_map,
    target_indices,
)
from modeling_emovit import EMOSET_EMOTIONS, EmoVitConfig


MODEL_LABELS = list(EMOSET_EMOTIONS)
# Written out here rather than taken from the library, so a wrong preset fails the test.
BINARY = {"amusement": "positive", "awe": "positive", "contentment": "positive", "excitement": "positive",
          "anger": "negative", "disgust": "negative", "fear": "negative", "sadness": "negative"}


def test_labels_are_compared_as_the_config_normalises_them():
    assert normalise_label("  Joy ") == "joy"
    assert normalise_label("Very\t Happy\n") == "very happy"
    assert normalise_label(3) == "3"
    raw = ["Amusement ", "AWE", " quiet  Joy", "fear"]
    assert [normalise_label(label) for label in raw] == EmoVitConfig(emotion_labels=raw).emotion_labels


def test_presets_map_every_emoset_label():
    mapping, targets = resolve_label_map("binary", MODEL_LABELS)
    assert mapping == BINARY and targets == ["positive", "negative"]
    mapping, targets = resolve_label_map("emotion6", MODEL_LABELS)
    assert mapping["awe"] == "surprise" and mapping["contentment"] == "joy"
    assert sorted(targets) == ["anger", "disgust", "fear", "joy", "sadness", "surprise"]
    mapping, targets = resolve_label_map("unbiasedemo", MODEL_LABELS)
    assert mapping["disgust"] is None and mapping["contentment"] == "love" and "disgust" not in targets
    for preset in LABEL_MAP_PRESETS.values():
        assert list(preset) == MODEL_LABELS


def test_no_label_map_is_the_identity():
    mapping, targets = resolve_label_map(None, MODEL_LABELS)
    assert mapping == {label: label for label in MODEL_LABELS} and targets == MODEL_LABELS


def test_label_mapping_holds_the_map_its_targets_and_each_model_labels_target():
    labels = label_mapping("unbiasedemo", MODEL_LABELS)
    assert labels == LabelMapping(MODEL_LABELS, *resolve_label_map("unbiasedemo", MODEL_LABELS),
                                  target_indices(MODEL_LABELS, *resolve_label_map("unbiasedemo", MODEL_LABELS)))
    assert labels.mapping["disgust"] is None and labels.target_of[MODEL_LABELS.index("disgust")] is None
    assert labels.targets[labels.target_of[MODEL_LABELS.index("contentment")]] == "love"
    assert label_mapping(None, MODEL_LABELS).target_of == list(range(8))


def test_label_map_file_is_normalised_and_may_drop_labels(tmp_path):
    mapping = {label: None for label in EMOSET_EMOTIONS}
    mapping.update(Amusement="Joy", excitement="joy ", sadness="sadness")  # case and spaces are normalised
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    resolved, targets = resolve_label_map(str(tmp_path / "map.json"), MODEL_LABELS)
    assert targets == ["joy", "sadness"]
    assert resolved["amusement"] == resolved["excitement"] == "joy" and resolved["awe"] is None
    assert target_indices(MODEL_LABELS, resolved, targets) == [0, None, None, 0, None, None, None, 1]


def test_bad_label_maps_are_refused_with_the_reason(tmp_path):
    (tmp_path / "partial.json").write_text(json.dumps({"amusement": "positive", "anger": "negative"}))
    with pytest.raises(ValueError, match=r"missing from the map: \['awe'"):
        resolve_label_map(str(tmp_path / "partial.json"), MODEL_LABELS)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"holds a list.*JSON object"):
        resolve_label_map(str(tmp_path / "list.json"), MODEL_LABELS)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json.*not valid JSON"):
        resolve_label_map(str(tmp_path / "broken.json"), MODEL_LABELS)
    with pytest.raises(ValueError, match=r"'nonsense' is neither a preset"):
        resolve_label_map("nonsense", MODEL_LABELS)
    (tmp_path / "one.json").write_text(json.dumps({label: "x" for label in MODEL_LABELS}))
    with pytest.raises(ValueError, match=r"leaves \['x'\].*at least two"):
        resolve_label_map(str(tmp_path / "one.json"), MODEL_LABELS)


def test_dataset_labels_outside_the_models_are_refused():
    # UnbiasedEmo has no disgust: EmoSet's disgust images have nothing to be compared with.
    mapping, targets = resolve_label_map("unbiasedemo", MODEL_LABELS)
    with pytest.raises(ValueError, match=r"\['disgust'\].*--label_map"):
        reference_indices(MODEL_LABELS, mapping, targets)
    mapping, targets = resolve_label_map(None, MODEL_LABELS)
    with pytest.raises(ValueError, match=r"\['joy', 'surprise'\].*--label_map"):
        reference_indices(["anger", "joy", "surprise"], mapping, targets)


def test_reference_indices_send_model_labels_through_the_map():
    mapping, targets = resolve_label_map("binary", MODEL_LABELS)
    # EmoSet's own labels (model labels) and the binary labels themselves both work.
    assert reference_indices(["awe", "fear", "positive", "negative"], mapping, targets) == [0, 1, 0, 1]


def test_map_scores_sums_and_renormalises_over_kept_labels():
    mapping, targets = resolve_label_map("binary", MODEL_LABELS)
    probabilities = [0.1, 0.2, 0.05, 0.05, 0.3, 0.1, 0.1, 0.1]
    mapped = map_scores(probabilities, target_indices(MODEL_LABELS, mapping, targets), len(targets))
    assert mapped == pytest.approx([0.4, 0.6])
    # Dropped labels' mass is removed, and the rest renormalised.
    assert map_scores([0.5, 0.25, 0.25], [0, None, 1], 2) == pytest.approx([2 / 3, 1 / 3])
    # All kept labels underflowed: zeros stay zeros instead of dividing by zero.
    assert map_scores([0.0, 1.0, 0.0], [0, None, 1], 2) == [0.0, 0.0]


def test_benchmark_presets():
    # Written out here so a changed preset fails the test.
    mapping, targets = resolve_label_map("webemo7", MODEL_LABELS)
    assert mapping == {"amusement": "joy", "awe": "surprise", "contentment": "love", "excitement": "joy",
                       "anger": "anger", "disgust": "anger", "fear": "fear", "sadness": "sadness"}
    assert sorted(targets) == ["anger", "fear", "joy", "love", "sadness", "surprise"]  # no confusion
    assert resolve_label_map("emotionroi", MODEL_LABELS) == resolve_label_map("emotion6", MODEL_LABELS)
    for preset in ("webemo2", "twitter"):
        assert resolve_label_map(preset, MODEL_LABELS) == (BINARY, ["positive", "negative"])
