"""Captioning on a tiny random BLIP-2 built offline (tokenizer trained here with `tokenizers`), in one process and
sharded over two (torchrun, gloo on the CPU)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_builder.build import BuildOptions, FolderLockedError, hold_folder_lock, run_build
from dataset_builder.captions import caption_images, caption_images_sharded, merge_caption_shards, shard_path
from dataset_builder.emoset import read_split

from testing_utils import subprocess_env


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
                           image_size=30, patch_size=10, initializer_range=1.0),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            encoder_hidden_size=32, vocab_size=vocab, initializer_range=1.0),
        text_config=dict(model_type="opt", hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=vocab, word_embed_proj_dim=32, max_position_embeddings=64, pad_token_id=0,
                         bos_token_id=1, eos_token_id=1, init_std=1.0),
        num_query_tokens=NUM_QUERY_TOKENS, image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    # Wide initial weights so that different images get different captions, which the equality checks need.
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


# ---- sharded captioning: `python -m dataset_builder caption`, alone and under torchrun with 2 processes

REPO = Path(__file__).resolve().parents[1]


def caption_command(root, out, model, processes=1, batch_size=3):
    """`dataset_builder caption` over the 32 train images of `root` (4 per emotion), in one process or under torchrun;
    returns the finished process."""
    arguments = ["-m", "dataset_builder", "--log_level", "WARNING", "caption", "--emoset_root", str(root), "--output_dir",
                 str(out), "--captioner", str(model), "--per_class", "categorical=4,conversation=0,reasoning=0",
                 "--caption_batch_size", str(batch_size), "--no_progress"]
    if processes == 1:
        command = [sys.executable, *arguments]
    else:
        torchrun = Path(sys.executable).parent / "torchrun"
        if not torchrun.exists():
            pytest.skip("torchrun is not installed next to this Python")
        command = [str(torchrun), "--standalone", "--nproc_per_node", str(processes), *arguments]
    return subprocess.run(command, cwd=REPO, env=subprocess_env(HF_HUB_OFFLINE="1"), capture_output=True, text=True,
                          timeout=300)


def run_caption(root, out, model, processes=1, batch_size=3):
    """The printed JSON report of a `caption_command` that succeeded."""
    done = caption_command(root, out, model, processes, batch_size)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"processes"') == 1  # only the main process reports
    return json.loads(done.stdout[done.stdout.index("{") : done.stdout.index("}") + 1])


def cache_lines(folder):
    return [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process_captions(tiny_blip2, synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("captions-1")
    report = run_caption(synthetic_root, out, tiny_blip2)
    assert report == {**report, "images": 32, "cached": 0, "captioned": 32, "skipped": 0, "processes": 1}
    return out


def test_captions_do_not_depend_on_batch_composition(tiny_blip2, synthetic_root):
    """Greedy captions of an image are the same alone and inside a batch of others: the images carry no padding, so
    sharding (which changes the batches on resume) cannot change a caption."""
    paths = [item.image_path for item in read_split(synthetic_root, "train").items][:12]
    alone = caption_images(paths, str(tiny_blip2), None, batch_size=1)
    batched = caption_images(paths, str(tiny_blip2), None, batch_size=5)
    assert alone == batched
    assert len(set(alone.values())) >= 3  # the images do get different captions, so the equality means something


@pytest.mark.integration
def test_two_processes_write_the_cache_of_one_and_build_reuses_it(tiny_blip2, synthetic_root, one_process_captions,
                                                                  tmp_path):
    """torchrun with 2 CPU processes: 11 batches of 3 dealt out 6 + 5, each process appends to its own shard, the main
    process merges them; the merged cache is byte for byte the one-process one and no shard is left. A build with
    the same --captioner then takes every caption from that cache: the model folder is not needed any more."""
    out = tmp_path / "out"
    report = run_caption(synthetic_root, out, tiny_blip2, processes=2)
    assert report == {**report, "images": 32, "cached": 0, "captioned": 32, "skipped": 0, "processes": 2}
    assert (out / "captions.jsonl").read_bytes() == (one_process_captions / "captions.jsonl").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == [".build.lock", "captions.jsonl"]
    captions = {line["image"]: line["caption"] for line in cache_lines(out)}

    moved = tmp_path / "model-elsewhere"
    shutil.move(str(tiny_blip2), moved)
    try:
        run_build(BuildOptions(emoset_root=str(synthetic_root), output_dir=str(out), types=("categorical",),
                               per_class={"categorical": 4}, captioner=str(tiny_blip2), show_progress=False))
    finally:
        shutil.move(str(moved), str(tiny_blip2))
    records = [json.loads(line) for line in (out / "instructions.jsonl").read_text().splitlines()]
    assert len(records) == 32
    assert all(r["caption"] == captions[str(synthetic_root / r["image"])] for r in records)


@pytest.mark.integration
def test_a_rerun_after_a_kill_captions_only_what_is_missing(tiny_blip2, synthetic_root, one_process_captions, tmp_path):
    """What a killed run leaves: 5 captions merged, 4 in rank 0's shard ending in a torn line, 2 in the shard of a rank
    that the next launch does not have. A 2-process rerun captions the other 21, merges everything and removes the
    shards; the captions are the one-process run's."""
    reference = cache_lines(one_process_captions)
    out = tmp_path / "out"
    out.mkdir()
    lines = [json.dumps(entry) + "\n" for entry in reference]
    (out / "captions.jsonl").write_text("".join(lines[:5]))
    shard_path(out / "captions.jsonl", 0).write_text("".join(lines[5:9]) + lines[9][:40])
    shard_path(out / "captions.jsonl", 3).write_text("".join(lines[20:22]))
    report = run_caption(synthetic_root, out, tiny_blip2, processes=2)
    assert report == {**report, "images": 32, "cached": 11, "captioned": 21, "skipped": 0, "processes": 2}
    merged = cache_lines(out)
    assert len(merged) == 32 and merged[:5] == reference[:5]
    assert {e["image"]: e["caption"] for e in merged} == {e["image"]: e["caption"] for e in reference}
    assert not list(out.glob("captions.rank*.jsonl"))
    # Nothing is missing now: a rerun does not even need the model folder.
    shutil.move(str(tiny_blip2), tmp_path / "model-elsewhere")
    try:
        assert run_caption(synthetic_root, out, tiny_blip2)["cached"] == 32
    finally:
        shutil.move(str(tmp_path / "model-elsewhere"), str(tiny_blip2))


def test_sharded_run_reports_unreadable_images_and_captions_the_rest(tiny_blip2, tmp_path):
    """A file that does not decode is a counted skip with its path in the reason; it gets no cache line, so a rerun
    tries it again."""
    import numpy as np
    from PIL import Image

    for name in ("a.png", "b.png"):
        Image.fromarray(np.random.default_rng(len(name) + ord(name[0])).integers(0, 255, (30, 30, 3), dtype=np.uint8)
                        ).save(tmp_path / name)
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    paths = [str(tmp_path / name) for name in ("cut.png", "b.png", "a.png")]
    result = caption_images_sharded(paths, str(tiny_blip2), tmp_path / "out" / "captions.jsonl", batch_size=2,
                                    show_progress=False)
    assert (result.cached, result.captioned, result.processes) == (0, 2, 1)
    assert [s["image"] for s in result.skipped] == [paths[0]] and "cut.png" in result.skipped[0]["reason"]
    assert sorted(result.captions) == sorted(paths[1:])
    assert sorted(e["image"] for e in cache_lines(tmp_path / "out")) == sorted(paths[1:])


def test_sharded_run_refuses_a_folder_another_build_holds(tiny_blip2, tmp_path):
    out = tmp_path / "out"
    with hold_folder_lock(out):
        with pytest.raises(FolderLockedError, match="in use by another build"):
            caption_images_sharded([], str(tiny_blip2), out / "captions.jsonl", folder_lock=hold_folder_lock(out))


@pytest.mark.integration
def test_two_processes_stop_together_on_a_folder_another_build_holds(tiny_blip2, synthetic_root, tmp_path):
    """The main process fails to take the lock and tells the other one: both exit, one error line, no shard."""
    out = tmp_path / "out"
    with hold_folder_lock(out):
        done = caption_command(synthetic_root, out, tiny_blip2, processes=2)
    assert done.returncode != 0
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        f"error: --output_dir {out} is in use by another build (process {os.getpid()}; lock file {out / '.build.lock'})."
        " Two builds into one folder would pay for every request twice: wait for that one to finish, or build into "
        "another --output_dir."]
    assert sorted(p.name for p in out.iterdir()) == [".build.lock"]


def test_merging_shards_twice_adds_nothing_twice(tmp_path):
    """The cache's own entries keep their order, the shards' new ones follow sorted by image; a merge interrupted before
    the shards were removed is simply done again."""
    cache = tmp_path / "captions.jsonl"
    entry = lambda key, image: {"key": key, "image": image, "caption": f"caption of {image}"}  # noqa: E731
    cache.write_text(json.dumps(entry("k2", "z.jpg")) + "\n")
    shard_path(cache, 1).write_text(json.dumps(entry("k3", "b.jpg")) + "\n" + json.dumps(entry("k2", "z.jpg")) + "\n")
    shard_path(cache, 0).write_text(json.dumps(entry("k1", "a.jpg")) + "\n")
    kept = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert merge_caption_shards(cache) == 2
    expected = [entry("k2", "z.jpg"), entry("k1", "a.jpg"), entry("k3", "b.jpg")]
    assert cache_lines(tmp_path) == expected and sorted(p.name for p in tmp_path.iterdir()) == ["captions.jsonl"]
    for name, text in kept.items():  # as if the process died between the rewrite and removing the shards
        if name != "captions.jsonl":
            (tmp_path / name).write_text(text)
    assert merge_caption_shards(cache) == 0 and cache_lines(tmp_path) == expected
