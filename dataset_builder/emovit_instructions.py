"""`datasets` builder for a `build` output folder: configs categorical / conversation / reasoning / all.

`datasets` >= 4 no longer runs this file through `load_dataset`; use it directly, or publish the folder
as Parquet with `python -m dataset_builder push` and load that with no remote code:

    from dataset_builder.emovit_instructions import EmovitInstructions
    builder = EmovitInstructions(config_name="reasoning", data_dir="out/")
    builder.download_and_prepare()
    dataset = builder.as_dataset(split="train")

Images are decoded lazily from the EmoSet root recorded in the folder's summary.json.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from modeling_emovit.configuration_emovit import EMOSET_EMOTIONS

from .build_folder import RECORDS_FILE, load_records
from .records import INSTRUCTION_TYPES

CONFIG_NAMES = INSTRUCTION_TYPES + ("all",)

FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "image": datasets.Image(),
    "emotion": datasets.ClassLabel(names=list(EMOSET_EMOTIONS)),
    "type": datasets.Value("string"),
    "conversations": datasets.List({"from": datasets.Value("string"), "value": datasets.Value("string")}),
    "attributes": {
        "brightness": datasets.Value("float64"),
        "colorfulness": datasets.Value("float64"),
        "scene": datasets.Value("string"),
        "object": datasets.List(datasets.Value("string")),
        "facial_expression": datasets.Value("string"),
        "human_action": datasets.Value("string"),
    },
    "attributes_computed": datasets.List(datasets.Value("string")),
    "caption": datasets.Value("string"),
    "generator": datasets.Value("string"),
    "prompt_hash": datasets.Value("string"),
})


def to_example(record: dict, image_path: str) -> dict:
    """A record in the builder's feature layout; missing attributes become None."""
    attributes = record.get("attributes") or {}
    return {
        "id": record["id"],
        "image": image_path,
        "emotion": record["emotion"],
        "type": record["type"],
        "conversations": record["conversations"],
        "attributes": {
            "brightness": attributes.get("brightness"),
            "colorfulness": attributes.get("colorfulness"),
            "scene": attributes.get("scene"),
            "object": attributes.get("object") or [],
            "facial_expression": attributes.get("facial_expression"),
            "human_action": attributes.get("human_action"),
        },
        "attributes_computed": record.get("attributes_computed") or [],
        "caption": record.get("caption") or "",
        "generator": record["generator"],
        "prompt_hash": record["prompt_hash"],
    }


class EmovitInstructions(datasets.GeneratorBasedBuilder):
    """EmoVIT emotion instruction data built from EmoSet by `python -m dataset_builder build`."""

    BUILDER_CONFIGS = [
        datasets.BuilderConfig(name=name, description=f"{name} instruction samples" if name != "all" else "every type")
        for name in CONFIG_NAMES
    ]
    DEFAULT_CONFIG_NAME = "all"

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="Emotion instruction data (categorical, conversation, reasoning) over EmoSet images.",
            features=FEATURES,
            citation="Xie et al., EmoVIT: Revolutionizing Emotion Insights with Visual Instruction Tuning, CVPR 2024.",
        )

    def _split_generators(self, dl_manager):
        data_dir = self.config.data_dir
        if not data_dir or not (Path(data_dir) / RECORDS_FILE).is_file():
            raise FileNotFoundError(
                f"data_dir {data_dir!r} does not hold {RECORDS_FILE}. Pass data_dir=<folder written by "
                "`python -m dataset_builder build --output_dir ...`>."
            )
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"data_dir": data_dir})]

    def _generate_examples(self, data_dir: str):
        # load_records checks every record and keeps each image inside the EmoSet root, as training reads them.
        types = None if self.config.name == "all" else (self.config.name,)
        for record in load_records(data_dir, types=types):
            yield record["id"], to_example(record, record["image"])
