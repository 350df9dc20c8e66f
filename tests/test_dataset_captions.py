"""Captioning on a tiny random BLIP-2 built offline (tokenizer trained here with `tokenizers`)."""

import json
import shutil

import pytest

from dataset_builder.build import BuildOptions, run_build
from dataset_builder.captions import caption_images
from dataset_builder.emoset import read_split

NUM_QUERY_TOKENS = 4


@pytest.fixture(scope="module")
def tiny_blip2(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, PreTrainedTokenizerFast
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    words = Tokenizer(models.BPE(unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words.decoder = decoders.ByteLevel()
    words.train_from_iterator(["a photo of a dog on the grass", "a red ball in a park", "a picture of a sad cat"] * 10,
                              trainers.BpeTrainer(vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>", "<image>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="</s>", bos_token="</s>",
                                        unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    vocab = len(tokenizer)
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=30, patch_size=10),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            encoder_hidden_size=32, vocab_size=vocab),
        text_config=dict(model_type="opt", hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=vocab, word_embed_proj_dim=32, max_position_embeddings=64, pad_token_id=0,
                         bos_token_id=1, eos_token_id=1),
        num_query_tokens=NUM_QUERY_TOKENS, image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(config)
    # Random weights may emit only special tokens; keep them out so each caption has words to check.
    model.generation_config.suppress_tokens = [0, 1, 2, 3]
    path = tmp_path_factory.mktemp("tiny-blip2")
    model.save_pretrained(path)
    Blip2Processor(image_processor=BlipImageProcessorPil(size={"height": 30, "width": 30}), tokenizer=tokenizer,
                   num_query_tokens=NUM_QUERY_TOKENS).save_pretrained(path)
    return path


def test_captions_are_batched_cached_and_reused(tiny_blip2, synthetic_root, tmp_path):
    paths = [item.image_path for item in read_split(synthetic_root, "val").items]
    cache = tmp_path / "captions.jsonl"
    captions = caption_images(paths, str(tiny_blip2), cache, batch_size=3, max_new_tokens=4)
    assert set(captions) == set(paths) and all(c.strip() for c in captions.values())
    assert len(cache.read_text().splitlines()) == len(paths)
    # Cached: the model folder is no longer needed.
    moved = tmp_path / "gone"
    shutil.move(str(tiny_blip2), moved)
    try:
        assert caption_images(paths, str(tiny_blip2), cache) == captions
    finally:
        shutil.move(str(moved), str(tiny_blip2))


def test_unloadable_captioner_says_what_to_do(synthetic_root, tmp_path):
    paths = [read_split(synthetic_root, "val").items[0].image_path]
    with pytest.raises(OSError, match="--captioner none"):
        caption_images(paths, str(tmp_path / "no-such-model"), tmp_path / "c.jsonl")


def test_build_puts_captions_in_records_and_prompts(tiny_blip2, synthetic_root, tmp_path):
    out = tmp_path / "out"
    run_build(BuildOptions(emoset_root=str(synthetic_root), output_dir=str(out), types=("categorical", "conversation"),
                           per_class={"categorical": 1, "conversation": 1}, captioner=str(tiny_blip2),
                           show_progress=False))
    records = [json.loads(line) for line in (out / "instructions.jsonl").read_text().splitlines()]
    assert all(r["caption"] for r in records)
    conversation = [r for r in records if r["type"] == "conversation"]
    # The template writer leads its first answer with the caption.
    assert all(r["conversations"][1]["value"].lower().startswith(r["caption"][:5].lower()) for r in conversation[::3])
    assert (out / "captions.jsonl").is_file()


def test_captioner_reads_images_with_the_shared_opener(tiny_blip2, tmp_path):
    """Images reach the captioner through the project's one opener (high-bit-depth modes scaled to 8 bits, undecodable
    files named): a truncated file fails with its path instead of a bare decoder error."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((30, 30), 32768, dtype=np.uint16)).save(tmp_path / "deep.png")  # mode I;16 reads fine
    Image.fromarray(np.zeros((30, 30, 3), dtype=np.uint8)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    captions = caption_images([str(tmp_path / "deep.png")], str(tiny_blip2), None, max_new_tokens=3)
    assert captions[str(tmp_path / "deep.png")].strip()
    with pytest.raises(ValueError, match=r"cut\.png"):
        caption_images([str(tmp_path / "cut.png")], str(tiny_blip2), None, max_new_tokens=3)
