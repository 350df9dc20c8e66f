"""The classes transformers' testers run against, chosen by `EMOVIT_CONFORMANCE_SIDE`.

This folder is not a test module of this repository (tests/conftest.py keeps pytest out of it):
tests/test_transformers_conformance.py copies it to `tests/emovit_conformance/` inside the unpacked transformers source
distribution and runs it there twice, once per side, so that both runs collect the same test ids:
- `stock`: transformers' InstructBLIP classes, the baseline every known failure is checked against;
- `emovit`: EmoVIT's subclasses of them, which must do at least as well.
"""

import os

from transformers import (
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipModel,
    InstructBlipProcessor,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES,
    MODEL_MAPPING_NAMES,
)

from modeling_emovit import EmoVitConfig, EmoVitForConditionalGeneration, EmoVitModel, EmoVitProcessor


SIDES = {
    "stock": (InstructBlipConfig, InstructBlipModel, InstructBlipForConditionalGeneration, InstructBlipProcessor),
    "emovit": (EmoVitConfig, EmoVitModel, EmoVitForConditionalGeneration, EmoVitProcessor),
}

SIDE = os.environ.get("EMOVIT_CONFORMANCE_SIDE", "emovit")
if SIDE not in SIDES:
    raise ValueError(f"EMOVIT_CONFORMANCE_SIDE must be one of {sorted(SIDES)}, got {SIDE!r}.")
CONFIG_CLASS, MODEL_CLASS, GENERATION_CLASS, PROCESSOR_CLASS = SIDES[SIDE]

# transformers' testers choose inputs and code paths by looking a class's name up in the Auto tables of the models
# transformers ships (a model in MODEL_MAPPING_NAMES is a base model and is not trained, one in
# MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES gets labels, ...). `AutoModel.register` does not write to those tables,
# so EmoVIT's classes are listed where InstructBLIP's are, as they would be if EmoVIT shipped inside transformers.
if SIDE == "emovit":
    emovit_names = {stock.__name__: ours.__name__ for stock, ours in zip(SIDES["stock"], SIDES["emovit"])}
    for table in (MODEL_MAPPING_NAMES, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
                  MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES):
        table[EmoVitConfig.model_type] = emovit_names[table["instructblip"]]
