"""emovit.training.tiny_base: the offline miniature's base, whose language model is pretrained to write."""

import json
import re

import pytest
import torch

from dataset_builder.lm_corpus import corpus_documents, corpus_texts
from emovit.training.tiny_base import (
    PRETRAINING_FILE,
    build_pretrained_tiny_base,
    document_ids,
    perplexity,
    seq2seq_document_ids,
)
from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor
from modeling_emovit.tiny import build_tiny_emovit


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


def test_pretraining_documents_are_laid_out_as_the_processor_lays_out_training_batches():
    """Without a context, a document is exactly the processor's training example minus the image placeholders: one
    sequence for the Llama, encoder input and decoder target for the T5. The T5's encoder reads the context first,
    where the query outputs will stand."""
    document = {"context": "", "instruction": "Why does it feel calm?", "answer": "The sea is pale blue."}
    for language_model in ("llama", "t5"):
        _, processor = build_tiny_emovit(language_model=language_model)
        batch = processor.training_features([document["instruction"]], [document["answer"]])
        placeholders = processor.num_query_tokens
        if language_model == "llama":
            assert document_ids(processor.tokenizer, document) == batch["input_ids"][0, placeholders:].tolist()
        else:
            encoder, target = seq2seq_document_ids(processor.tokenizer, document)
            assert encoder == batch["input_ids"][0, placeholders:].tolist()
            assert target == batch["labels"][0].tolist() and target[-1] == processor.tokenizer.eos_token_id
            with_context = seq2seq_document_ids(processor.tokenizer, {**document, "context": "A dark room."})
            assert with_context[0][-len(encoder):] == encoder and len(with_context[0]) > len(encoder)
            assert with_context[1] == target


def test_seq2seq_perplexity_counts_the_answer_tokens_only():
    """A T5's perplexity is taken over the decoder targets: the mean of the loss the model reports over exactly those
    tokens, whatever the encoder's padding."""
    model, processor = build_tiny_emovit(language_model="t5")
    tokenizer = processor.tokenizer
    documents = [{"context": "A red circle.", "instruction": "What is drawn?", "answer": "A circle."},
                 {"context": "", "instruction": "Which emotion does it evoke, and why?",
                  "answer": "Awe, as the sky is vast."}]
    rows = [seq2seq_document_ids(tokenizer, document) for document in documents]
    with torch.no_grad():
        summed = sum(model.language_model(input_ids=torch.tensor([encoder]), labels=torch.tensor([target])).loss.item()
                     * len(target) for encoder, target in rows)
    expected = float(torch.tensor(summed / sum(len(target) for _, target in rows)).exp())
    assert perplexity(model.language_model, rows, tokenizer.pad_token_id) == pytest.approx(expected, rel=1e-4)


@pytest.mark.integration  # a whole pretraining run (300 steps)
def test_the_t5_base_learns_to_answer_as_seq2seq(tmp_path):
    """The encoder-decoder form: the T5's perplexity on held-out answers falls from random to nearly sure, and given
    a description and a question in its encoder it answers in the corpus's words about the described scene."""
    record = build_pretrained_tiny_base(tmp_path, seed=0, num_pictures=400, steps=300, language_model="t5")
    assert record["language_model"] == "t5" and json.loads((tmp_path / PRETRAINING_FILE).read_text()) == record
    assert record["held_out_perplexity_before"] > 100 and record["held_out_perplexity_after"] < 2.5, record
    model = EmoVitForConditionalGeneration.from_pretrained(tmp_path).eval()
    processor = EmoVitProcessor.from_pretrained(tmp_path)
    assert model.config.text_config.model_type == "t5" and not processor.use_decoder_only_language_model
    tokenizer = processor.tokenizer
    texts = corpus_texts(corpus_documents(400, seed=0))
    vocabulary = {word for text in texts for word in re.findall(r"[a-z]+", text.lower())}
    encoder, _ = seq2seq_document_ids(tokenizer, {"context": "A big black insect in a city street. The picture is dark "
                                                             "and almost colourless.",
                                                  "instruction": "Describe what this photo shows.", "answer": ""})
    with torch.no_grad():
        out = model.language_model.generate(torch.tensor([encoder]), max_new_tokens=30, do_sample=False)
    words = re.findall(r"[a-z]+", tokenizer.decode(out[0], skip_special_tokens=True).lower())
    assert len(words) >= 4 and all(word in vocabulary for word in words), words
    assert "insect" in words or "street" in words, words
