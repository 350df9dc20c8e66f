"""emovit.training.tiny_base: the offline miniature's base, whose language model is pretrained to write."""

import json
import re

import pytest
import torch

from dataset_builder.lm_corpus import corpus_documents, corpus_texts
from emovit.training.tiny_base import PRETRAINING_FILE, build_pretrained_tiny_base
from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor


@pytest.fixture(scope="module")
def pretrained_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-base")
    record = build_pretrained_tiny_base(folder, seed=0, num_pictures=400, steps=300)
    return folder, record


@pytest.mark.integration  # a whole pretraining run (300 steps)
def test_pretraining_brings_perplexity_down_to_the_corpus(pretrained_base):
    folder, record = pretrained_base
    assert json.loads((folder / PRETRAINING_FILE).read_text()) == record
    assert record["held_out_perplexity_before"] > 100  # random: close to the vocabulary size
    assert record["held_out_perplexity_after"] < 2.0  # the corpus is formulaic: a model that learnt it is sure of it
    assert record["loss"][-1] < record["loss"][0] / 5 and len(record["loss"]) == record["steps"] == 300


@pytest.mark.integration  # a whole pretraining run (300 steps)
def test_the_language_model_writes_corpus_sentences_about_its_context(pretrained_base):
    """Given a description and a question, the pretrained language model (alone, as text) answers in the corpus's
    words and about the described scene; the saved folder loads as an EmoVIT with the Q-Former side untouched."""
    folder, _ = pretrained_base
    model = EmoVitForConditionalGeneration.from_pretrained(folder).eval()
    tokenizer = EmoVitProcessor.from_pretrained(folder).tokenizer
    vocabulary = {w for text in corpus_texts(corpus_documents(400, seed=0)) for w in re.findall(r"[a-z]+", text.lower())}
    context = "A big black insect in a city street. The picture is dark and almost colourless."
    ids = tokenizer(context, add_special_tokens=False)["input_ids"] + tokenizer("Describe what this photo shows.")["input_ids"]
    with torch.no_grad():
        out = model.language_model.generate(torch.tensor([ids]), max_new_tokens=30, do_sample=False,
                                            pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
    words = re.findall(r"[a-z]+", text.lower())
    assert len(words) >= 4 and all(word in vocabulary for word in words), text
    assert "insect" in words or "street" in words, text
    assert torch.count_nonzero(model.query_tokens) > 0  # InstructBLIP's start, not zeros


@pytest.mark.integration
def test_a_short_offline_run_lifts_accuracy_and_consistency_above_the_untrained_base(pretrained_base, tmp_path):
    """The offline default's recipe (all three types, the curriculum, cached features), shortened, on this module's
    base: the held-out score accuracy and the explanations' consistency both rise well above the base's own. A change
    that breaks training or the reasoning path shows here."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from emovit.evaluation.run import evaluate_held_out

    folder, _ = pretrained_base
    output_dir = tmp_path / "run"
    # A base already in place is used as it is (the offline default skips every input it finds).
    shutil.copytree(folder, output_dir / "offline-inputs" / "tiny-base")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "train.py", "--output_dir", str(output_dir), "--offline_images_per_class",
                           "40", "--max_steps", "300", "--eval_strategy", "no", "--logging_steps", "50"],
                          cwd=repo, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    tuned = json.loads((output_dir / "eval-reasoning" / "metrics.json").read_text())
    tuned_accuracy = json.loads((output_dir / "eval" / "metrics.json").read_text())["accuracy"]

    base = tmp_path / "base"
    shutil.copytree(folder, base)
    untrained = evaluate_held_out(base, output_dir / "offline-inputs" / "emoset-synthetic", "test", reasoning=True)
    assert untrained["accuracy_score"] <= 0.3 and tuned_accuracy >= untrained["accuracy_score"] + 0.3, (
        untrained, tuned_accuracy)
    # 64 held-out images; measured: accuracy 0.73 vs 0.125, consistency 0.69 vs 0.23, grounding 0.55 vs 0.36 (the
    # base's language model already describes typical scenes, right by chance for some images)
    assert tuned["consistency"] >= untrained["reasoning_consistency"] + 0.3, (untrained, tuned)
    assert tuned["grounding"] >= untrained["reasoning_grounding"] + 0.1, (untrained, tuned)
    assert tuned["known_word_rate"] >= 0.95, tuned
