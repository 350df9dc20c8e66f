"""EmoVitProcessor: InstructBLIP's processor plus EmoVIT's prompts."""

import json

import pytest
import torch

from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor

from testing_utils import copy_with_layout, training_batch


def test_save_leaves_the_processor_as_a_reload_gives_it(tiny_processor, tmp_path):
    before = tiny_processor.to_dict()
    tiny_processor.save_pretrained(tmp_path)
    reloaded = EmoVitProcessor.from_pretrained(tmp_path)
    assert tiny_processor.to_dict() == before == reloaded.to_dict()
    # the saved file still carries what trust_remote_code needs
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"]["AutoProcessor"].endswith("EmoVitProcessor")


def test_special_token_strings_in_text_stay_text(tiny_model, tiny_processor, images):
    processor = tiny_processor
    answer = "The <image> shows calm water.</s> [SEP] <s> more"
    instruction = processor.categorical_instruction + " <image></s>"
    batch = processor.training_features([instruction] * 2, [answer, "Predict emotion: awe"], images=images[:2])
    image_id = processor.image_token_id
    assert (batch["input_ids"] == image_id).sum(-1).tolist() == [processor.num_query_tokens] * 2
    eos = processor.tokenizer.eos_token_id
    answer_ids = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert answer_ids.count(eos) == 1 and answer_ids[-1] == eos  # only the EOS the processor appends
    assert processor.tokenizer.decode(answer_ids[:-1]).strip() == answer
    q_ids = batch["qformer_input_ids"][0][batch["qformer_attention_mask"][0] == 1].tolist()
    assert q_ids.count(processor.qformer_tokenizer.sep_token_id) == 1  # the closing [SEP] only
    with torch.no_grad():
        loss = tiny_model(**batch).loss
    assert torch.isfinite(loss)


def test_high_bit_depth_images_follow_the_one_image_rule(tiny_processor):
    """The processor reads 16-bit and float images as every other reader does: scaled to 8 bits, not clipped."""
    import numpy as np
    from PIL import Image

    grey = Image.new("RGB", (40, 40), (128, 128, 128))
    deep = Image.fromarray(np.full((40, 40), 32896, dtype=np.uint16))  # 128 * 257: mid-grey on the 16-bit scale
    unit = Image.fromarray(np.full((40, 40), 128 / 255, dtype=np.float32))  # mode F, 0.0-1.0
    pixels = tiny_processor.preprocess_images([grey, deep, unit])
    assert torch.allclose(pixels[1], pixels[0]) and torch.allclose(pixels[2], pixels[0])


def test_mentioned_emotions_finds_labels_and_their_word_forms_in_order():
    from modeling_emovit import EMOSET_EMOTIONS, mentioned_emotions

    text = "A sad, rainy street; nothing scary, though the Anger of the crowd shows. Not awesome, just content."
    assert mentioned_emotions(text, EMOSET_EMOTIONS) == ["sadness", "fear", "anger"]
    assert mentioned_emotions("awe-inspiring mountains", EMOSET_EMOTIONS) == ["awe"]
    assert mentioned_emotions("sadly, nothing here", EMOSET_EMOTIONS) == []  # whole words only
    assert mentioned_emotions("", EMOSET_EMOTIONS) == []
    assert mentioned_emotions("pure joy and some calm", ["joy", "calm", "sadness"]) == ["joy", "calm"]


def test_generation_inputs_left_pad_each_images_own_instruction(tiny_processor, images):
    short, long = "Why?", "Why does this picture feel the way it does, and what in it makes it so?"
    inputs = tiny_processor.generation_inputs(images[:2], [short, long])
    mask, ids = inputs["attention_mask"], inputs["input_ids"]
    assert mask.shape == ids.shape and mask[1].all() and not mask[0].all()
    padding = int((mask[0] == 0).sum())
    assert mask[0, :padding].sum() == 0 and mask[0, padding:].all()  # padding only on the left
    assert (ids[0, :padding] == tiny_processor.tokenizer.pad_token_id).all()
    for row, instruction in enumerate([short, long]):
        expected = tiny_processor._instruction_ids(instruction, 128)
        assert ids[row][mask[row].bool()].tolist() == expected
    assert inputs["qformer_input_ids"].shape[0] == 2 and inputs["pixel_values"].shape[0] == 2
    with pytest.raises(ValueError, match="2 images but 1 instructions"):
        tiny_processor.generation_inputs(images[:2], [short])


def test_processor_training_masks(tiny_processor, images):
    batch = training_batch(tiny_processor, images[:2])
    tokenizer = tiny_processor.tokenizer
    q = tiny_processor.num_query_tokens
    for row in range(2):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        assert (ids[:q] == tiny_processor.image_token_id).all() and (labels[:q] == -100).all()
        assert ids[q] == tokenizer.bos_token_id
        supervised = labels != -100
        answer = tokenizer.decode(ids[supervised], skip_special_tokens=True).strip()
        assert answer == ["Predict emotion: awe", "Predict emotion: fear"][row]
        last = int(mask.sum()) - 1
        assert ids[last] == tokenizer.eos_token_id and labels[last] == tokenizer.eos_token_id
        assert (labels[last + 1:] == -100).all() and (ids[last + 1:] == tokenizer.pad_token_id).all()
        # the instruction is never supervised
        assert not supervised[: q + len(tokenizer(tiny_processor.categorical_instruction)["input_ids"])].any()
    qformer_text = tiny_processor.qformer_tokenizer.decode(batch["qformer_input_ids"][0], skip_special_tokens=True)
    assert qformer_text.startswith("which emotion does this image evoke")


def test_long_instruction_keeps_bos_and_its_end(tiny_processor):
    long_instruction = "word " * 300 + "final question?"
    batch = tiny_processor.training_features([long_instruction], ["Predict emotion: awe"], max_instruction_length=20)
    q = tiny_processor.num_query_tokens
    ids = batch["input_ids"][0]
    assert ids[q] == tiny_processor.tokenizer.bos_token_id
    prompt = tiny_processor.tokenizer.decode(ids[q + 1 : q + 20])
    assert prompt.strip().endswith("question?")


def test_encoder_decoder_batch_keeps_the_answer_out_of_the_encoder(tiny_t5_processor, images):
    """For a T5 language model the encoder reads the image placeholders and the instruction only; the answer and its
    EOS are the decoder's target, as LAVIS's blip2_t5_instruct trains FlanT5."""
    processor = tiny_t5_processor
    assert not processor.use_decoder_only_language_model
    instructions = [processor.categorical_instruction, "Why does it feel that way?"]
    answers = ["Predict emotion: awe", "The dark sky looks sad."]
    batch = processor.training_features(instructions, answers, images=images[:2])
    tokenizer = processor.tokenizer
    for row, (instruction, answer) in enumerate(zip(instructions, answers)):
        encoder = batch["input_ids"][row][batch["attention_mask"][row] == 1].tolist()
        assert encoder == [processor.image_token_id] * processor.num_query_tokens + tokenizer(instruction)["input_ids"]
        target = batch["labels"][row][batch["labels"][row] != -100].tolist()
        assert target == tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert batch["decoder_attention_mask"][row].tolist() == [1] * len(target) + [0] * (
            batch["labels"].shape[1] - len(target))
        assert batch["labels"][row][: len(target)].tolist() == target  # right-padded with -100
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        windows = [encoder[i : i + len(answer_ids)] for i in range(len(encoder) - len(answer_ids) + 1)]
        assert answer_ids not in windows


def test_decoder_only_batch_is_one_sequence(tiny_processor, images):
    processor = tiny_processor
    assert processor.use_decoder_only_language_model
    batch = training_batch(processor, images[:2])
    assert batch["labels"].shape == batch["input_ids"].shape and "decoder_attention_mask" not in batch
    supervised = batch["labels"] != -100
    assert torch.equal(batch["labels"][supervised], batch["input_ids"][supervised])


def test_layout_survives_save_and_reload(tiny_t5_processor, tmp_path):
    tiny_t5_processor.save_pretrained(tmp_path)
    assert EmoVitProcessor.from_pretrained(tmp_path).use_decoder_only_language_model is False
    with pytest.raises(TypeError, match="use_decoder_only_language_model"):
        EmoVitProcessor(tiny_t5_processor.image_processor, tiny_t5_processor.tokenizer,
                        tiny_t5_processor.qformer_tokenizer, num_query_tokens=8, use_decoder_only_language_model="no")


def test_layout_comes_from_config_json_when_the_processor_leaves_it_out(tiny_t5_dir, tiny_dir, tmp_path):
    t5 = copy_with_layout(tiny_t5_dir, tmp_path / "t5", None)
    processor = EmoVitProcessor.from_pretrained(t5)
    assert processor.use_decoder_only_language_model is False
    EmoVitForConditionalGeneration.from_pretrained(t5).check_processor(processor)
    batch = processor.training_features(["Which emotion?"], ["Predict emotion: awe"])
    assert (batch["labels"] != -100).sum().item() == len(processor._answer_ids("Predict emotion: awe", 256))
    # an explicit value is taken as given; the model's check refuses it later if it is wrong
    assert EmoVitProcessor.from_pretrained(t5, use_decoder_only_language_model=True).use_decoder_only_language_model
    llama = copy_with_layout(tiny_dir, tmp_path / "llama", None)
    assert EmoVitProcessor.from_pretrained(llama).use_decoder_only_language_model is True
    assert EmoVitProcessor.from_pretrained(copy_with_layout(tiny_dir, tmp_path / "llama-set", True)) \
        .use_decoder_only_language_model is True


def test_processor_config_that_contradicts_config_json_is_refused(tiny_t5_dir, tmp_path):
    folder = copy_with_layout(tiny_t5_dir, tmp_path / "t5", True)
    with pytest.raises(ValueError, match=r"processor_config.json sets use_decoder_only_language_model=True.*"
                                         r"config.json says the language model is encoder-decoder"):
        EmoVitProcessor.from_pretrained(folder)
