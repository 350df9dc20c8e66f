"""EmoVitProcessor: InstructBLIP's processor plus EmoVIT's prompts."""

import json

from modeling_emovit import EmoVitProcessor


def test_save_leaves_the_processor_as_a_reload_gives_it(tiny_processor, tmp_path):
    before = tiny_processor.to_dict()
    tiny_processor.save_pretrained(tmp_path)
    reloaded = EmoVitProcessor.from_pretrained(tmp_path)
    assert tiny_processor.to_dict() == before == reloaded.to_dict()
    # the saved file still carries what trust_remote_code needs
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"]["AutoProcessor"].endswith("EmoVitProcessor")
