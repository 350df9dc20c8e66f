"""The `datasets` builder over a build output folder: four configs, Image and ClassLabel features."""

import re

import pytest

from dataset_builder.build import BuildOptions, run_build
from dataset_builder.emovit_instructions import CONFIG_NAMES, EmovitInstructions
from modeling_emovit.configuration_emovit import EMOSET_EMOTIONS


@pytest.fixture(scope="module")
def built(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    run_build(BuildOptions(emoset_root=str(synthetic_root), output_dir=str(out), show_progress=False,
                           per_class={"categorical": 3, "conversation": 2, "reasoning": 1}))
    return out


def load(config_name, data_dir, tmp_path):
    builder = EmovitInstructions(config_name=config_name, data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    return builder.as_dataset(split="train")


def test_configs_hold_their_types(built, tmp_path):
    assert CONFIG_NAMES == ("categorical", "conversation", "reasoning", "all")
    sizes = {}
    for name in CONFIG_NAMES:
        dataset = load(name, built, tmp_path)
        sizes[name] = len(dataset)
        if name != "all":
            assert set(dataset["type"]) == {name}
    assert sizes == {"categorical": 24, "conversation": 48, "reasoning": 8, "all": 80}


def test_features_decode(built, tmp_path, synthetic_root):
    dataset = load("reasoning", built, tmp_path)
    assert dataset.features["emotion"].names == list(EMOSET_EMOTIONS)
    row = dataset[0]
    assert row["image"].size == (64, 64)
    assert EMOSET_EMOTIONS[row["emotion"]] in row["id"]
    assert [t["from"] for t in row["conversations"]] == ["human", "gpt"]
    assert row["attributes"]["brightness"] in [k / 10 for k in range(11)]
    assert row["generator"] == "template"


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="instructions.jsonl"):
        load("all", tmp_path / "nothing", tmp_path)


def test_record_pointing_outside_the_root_is_refused(built, tmp_path):
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(built, folder)
    records = (folder / "instructions.jsonl").read_text().splitlines()
    records[3] = records[3].replace('"image": "', '"image": "../../', 1)
    (folder / "instructions.jsonl").write_text("\n".join(records) + "\n")
    with pytest.raises(Exception) as error:  # `datasets` wraps what the generator raises
        load("all", folder, tmp_path)
    messages = f"{error.value} {error.value.__cause__}"
    assert re.search(r"instructions.jsonl:4: field 'image'.*outside the dataset root", messages), messages
