"""emovit.training.offline: the offline default's data and base model, built once and then reused."""

import json
import logging
from pathlib import Path

from emovit.training.offline import build_offline_default


def test_offline_default_builds_data_and_model_once(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="emovit.training.offline"):
        dataset, model = build_offline_default(tmp_path, images_per_class=3, seed=0, lm_steps=2)
    assert "drawing a synthetic EmoSet sample" in caplog.text and "building the tiny EmoVIT" in caplog.text
    assert (tmp_path / "emoset-synthetic" / "info.json").is_file()
    summary = json.loads((tmp_path / "instructions" / "summary.json").read_text())
    assert dataset == str(tmp_path / "instructions") and summary["emoset_root"] == str(tmp_path / "emoset-synthetic")
    assert model == str(tmp_path / "tiny-base") and (tmp_path / "tiny-base" / "config.json").is_file()
    assert json.loads((tmp_path / "tiny-base" / "lm_pretraining.json").read_text())["steps"] == 2
    written = (tmp_path / "tiny-base" / "config.json").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="emovit.training.offline"):
        assert build_offline_default(tmp_path, images_per_class=3, seed=0, lm_steps=2) == (dataset, model)
    assert caplog.text == "" and (tmp_path / "tiny-base" / "config.json").stat().st_mtime_ns == written


def test_offline_default_never_replaces_a_folder_it_did_not_write(tmp_path):
    """A folder where the offline default puts its base model, holding files of someone else's, is refused with
    its name and left as it was; an empty one is built; no temporary folder is left beside the outputs."""
    import pytest

    (tmp_path / "tiny-base").mkdir(parents=True)
    (tmp_path / "tiny-base" / "model.safetensors").write_bytes(b"someone's weights")
    with pytest.raises(ValueError, match="tiny-base") as info:
        build_offline_default(tmp_path, images_per_class=3, seed=0, lm_steps=2)
    assert "model.safetensors" in str(info.value) and "never deleted" in str(info.value)
    assert (tmp_path / "tiny-base" / "model.safetensors").read_bytes() == b"someone's weights"
    assert sorted(p.name for p in (tmp_path / "tiny-base").iterdir()) == ["model.safetensors"]

    (tmp_path / "tiny-base" / "model.safetensors").unlink()  # an empty folder holds nothing to lose
    _, model = build_offline_default(tmp_path, images_per_class=3, seed=0, lm_steps=2)
    assert (tmp_path / "tiny-base" / "config.json").is_file()
    assert (tmp_path / "tiny-base" / "model.safetensors").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emoset-synthetic", "instructions", "tiny-base"]
    summary = json.loads((tmp_path / "instructions" / "summary.json").read_text())
    assert summary["args"]["output_dir"] == str(tmp_path / "instructions")  # not the temporary folder's name


def test_the_t5_base_has_its_own_folder_beside_the_shared_data(tmp_path):
    """The two kinds of tiny base share the sample and the instruction data, each in its own folder: building the T5
    one next to the Llama one leaves the Llama's, and the data, as they were."""
    dataset, llama = build_offline_default(tmp_path, images_per_class=3, seed=0, lm_steps=2)
    written = {name: (tmp_path / name).stat().st_mtime_ns for name in ("emoset-synthetic", "instructions", "tiny-base")}
    t5_dataset, t5 = build_offline_default(tmp_path, images_per_class=3, seed=0, lm_steps=2, language_model="t5")
    assert t5_dataset == dataset and t5 == str(tmp_path / "tiny-base-t5") != llama
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in written} == written
    for folder, model_type in ((llama, "llama"), (t5, "t5")):
        config = json.loads((Path(folder) / "config.json").read_text())
        assert config["text_config"]["model_type"] == model_type
        assert json.loads((Path(folder) / "lm_pretraining.json").read_text())["language_model"] == model_type
