"""emovit.inference.loading: a saved model and its processor, or an error that names the folder and what to do."""

import json
import shutil

import pytest
import torch

from emovit.inference.loading import PROCESSOR_FILES, load_model


def test_folders_that_are_not_saved_emovit_models_are_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"'.*empty' is a folder without config\.json"):
        load_model(str(empty), torch.float32)
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "config.json").write_text("{")
    with pytest.raises(ValueError, match=r"'.*garbled' could not be read as a model configuration"):
        load_model(str(tmp_path / "garbled"), torch.float32)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    with pytest.raises(ValueError, match=r"holds a 'bert' model.*emovit"):
        load_model(str(tmp_path / "bert"), torch.float32)


def test_a_model_folder_without_its_processor_says_so(tmp_path, tiny_dir):
    weights_only = tmp_path / "weights-only"
    shutil.copytree(tiny_dir, weights_only)
    for name in PROCESSOR_FILES:
        (weights_only / name).unlink(missing_ok=True)
    with pytest.raises(ValueError, match=r"'.*weights-only' holds model weights but no processor.*save_pretrained"):
        load_model(str(weights_only), torch.float32)

    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_dir, no_tokenizer)
    for path in no_tokenizer.glob("tokenizer*"):
        path.unlink()
    with pytest.raises(ValueError, match=r"'.*no-tokenizer': its processor could not be loaded"):
        load_model(str(no_tokenizer), torch.float32)


def test_load_model_gives_the_processor_the_models_labels(tiny_dir):
    model, processor = load_model(str(tiny_dir), torch.bfloat16)
    assert not model.training and model.dtype == torch.bfloat16
    assert list(processor.emotion_labels) == list(model.config.emotion_labels)
