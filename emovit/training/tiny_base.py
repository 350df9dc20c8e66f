"""The offline miniature's base model: a tiny InstructBLIP whose language model has been taught to write.

EmoVIT starts from InstructBLIP, whose Vicuna already writes fluent, sensible text; only the Q-Former side is then
tuned. A random tiny language model cannot stand in for that: it writes noise, so the reasoning path of the offline
run could never be judged. So the tiny base is built in two steps:

1. a tiny EmoVIT (`modeling_emovit.tiny`) whose tokenizers are trained on the corpus below;
2. its language model pretrained on `dataset_builder.lm_corpus`: documents that pair a description of a drawn scene
   with an instruction and its answer, so it writes the corpus's sentences and lets what comes first (a description
   here, the Q-Former's query outputs later) decide what it writes.

The language model is a Llama (decoder-only, as Vicuna), pretrained as a causal LM on whole documents, or with
`language_model="t5"` a T5 (encoder-decoder, as FlanT5), pretrained as seq2seq: the encoder reads the description and
the instruction, the decoder writes the answer. Each is laid out as the processor lays out its training batches.

The ViT stays random (a wide one, initialised with std 0.02: its patches still tell colours and shapes apart), the
Q-Former and the query tokens stay as InstructBLIP training starts them; the EmoVIT recipe on top is unchanged.
"""

import json
import logging
import math
import random
import time
from pathlib import Path

import torch

from dataset_builder.lm_corpus import corpus_documents, corpus_texts
from emovit_utils.files import atomic_write_text
from modeling_emovit.tiny import build_tiny_emovit


logger = logging.getLogger(__name__)

PRETRAINING_FILE = "lm_pretraining.json"
# The peak learning rate of each language model's pretraining. The T5 needs a lower one than the Llama: at 1e-2 (and
# 5e-3) it learns the answers' wording but not to read the encoder's context through cross-attention (held-out
# categorical answers from their description at chance), which leaves the Q-Former nothing to steer; at 3e-3 it reads
# it (43-46 of 48 right for seeds 0, 1, 42) and its answer perplexity is lower too. At 1e-3, 400 steps are too few.
PRETRAINING_LEARNING_RATES = {"llama": 1e-2, "t5": 3e-3}


def document_ids(tokenizer, document: dict) -> list[int]:
    """`context <s> instruction answer </s>` as token ids, the instruction and answer tokenised as the processor
    tokenises them for training (so the language model meets the same ids in both)."""
    context = tokenizer(document["context"], add_special_tokens=False)["input_ids"] if document["context"] else []
    instruction = tokenizer(document["instruction"], add_special_tokens=True)["input_ids"]
    answer = tokenizer(document["answer"], add_special_tokens=False)["input_ids"]
    return context + instruction + answer + [tokenizer.eos_token_id]


def seq2seq_document_ids(tokenizer, document: dict) -> tuple[list[int], list[int]]:
    """An encoder-decoder language model's `(encoder ids, decoder target)`: `context instruction </s>` and
    `answer </s>`, tokenised as the processor tokenises them for an encoder-decoder batch (the context stands where the
    query outputs will stand)."""
    context = tokenizer(document["context"], add_special_tokens=False)["input_ids"] if document["context"] else []
    instruction = tokenizer(document["instruction"], add_special_tokens=True)["input_ids"]
    answer = tokenizer(document["answer"], add_special_tokens=False)["input_ids"]
    return context + instruction, answer + [tokenizer.eos_token_id]


def _padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(row) for row in rows)
    ids = torch.full((len(rows), longest), pad_id)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for k, row in enumerate(rows):
        ids[k, : len(row)] = torch.tensor(row)
        mask[k, : len(row)] = 1
    return ids, mask


def _batch(rows: list, pad_id: int) -> dict:
    """A right-padded batch of causal-LM rows (token-id lists), or of seq2seq rows ((encoder ids, target) pairs); the
    loss covers every token of a causal row and the whole target of a seq2seq one."""
    if isinstance(rows[0], tuple):
        input_ids, attention_mask = _padded([encoder for encoder, _ in rows], pad_id)
        targets, target_mask = _padded([target for _, target in rows], pad_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "labels": targets.masked_fill(target_mask == 0, -100), "decoder_attention_mask": target_mask}
    input_ids, attention_mask = _padded(rows, pad_id)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "labels": input_ids.masked_fill(attention_mask == 0, -100)}


def _predicted_tokens(batch: dict) -> int:
    """How many tokens the batch's loss averages over: a causal LM predicts every label but the first of each row,
    a seq2seq one every target token."""
    labels = batch["labels"] if "decoder_attention_mask" in batch else batch["labels"][:, 1:]
    return int((labels != -100).sum())


@torch.no_grad()
def perplexity(language_model, rows: list, pad_id: int, batch_size: int = 64) -> float:
    """Per-token perplexity of `language_model` on the `rows` (see `_batch`): over whole documents for a causal LM,
    over the answers for a seq2seq one."""
    language_model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = _batch(rows[start : start + batch_size], pad_id)
        tokens = _predicted_tokens(batch)
        total += language_model(**batch).loss.item() * tokens
        count += tokens
    return math.exp(total / count)


def pretrain_language_model(language_model, rows: list, pad_id: int, steps: int, batch_size: int = 32,
                            learning_rate: float = 1e-2, seed: int = 0) -> list[float]:
    """Trains `language_model` on random batches of the `rows` (see `_batch`: as a causal LM or as seq2seq) with
    AdamW and a one-cycle schedule; returns the loss of every step."""
    generator = random.Random(seed)
    language_model.train()
    optimizer = torch.optim.AdamW(language_model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.05)
    losses = []
    for step in range(steps):
        loss = language_model(**_batch(generator.sample(rows, batch_size), pad_id)).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        if step % 100 == 0:
            logger.info("[tiny base] language model step %d/%d: loss %.4f", step, steps, losses[-1])
    language_model.eval()
    return losses


def build_pretrained_tiny_base(output_dir: str | Path, seed: int = 0, num_pictures: int = 3000, steps: int = 400,
                               image_size: int = 64, language_model: str = "llama",
                               learning_rate: float | None = None) -> dict:
    """Writes the tiny base (model, processor and `lm_pretraining.json`, its record) into `output_dir`; returns the
    record: the language model, corpus size, steps, the loss curve, held-out perplexity before and after (over whole
    documents for the Llama, over the answers for the T5) and the time taken. `learning_rate` None: the language
    model's own (`PRETRAINING_LEARNING_RATES`)."""
    start = time.perf_counter()
    learning_rate = PRETRAINING_LEARNING_RATES[language_model] if learning_rate is None else learning_rate
    documents = corpus_documents(num_pictures, seed)
    model, processor = build_tiny_emovit(seed=seed, lm_init_std=0.02, image_size=image_size,
                                         texts=corpus_texts(documents), lm_vocab_size=1000, qformer_vocab_size=600,
                                         language_model=language_model)
    tokenizer = processor.tokenizer
    ids = document_ids if model.config.use_decoder_only_language_model else seq2seq_document_ids
    rows = [ids(tokenizer, document) for document in documents]
    held_out, train = rows[: len(rows) // 20], rows[len(rows) // 20 :]  # documents are shuffled
    before = perplexity(model.language_model, held_out, tokenizer.pad_token_id)
    torch.manual_seed(seed)
    losses = pretrain_language_model(model.language_model, train, tokenizer.pad_token_id, steps,
                                     learning_rate=learning_rate, seed=seed)
    after = perplexity(model.language_model, held_out, tokenizer.pad_token_id)
    record = {"language_model": language_model, "documents": len(documents), "pictures": num_pictures,
              "train_documents": len(train), "held_out_documents": len(held_out), "steps": steps,
              "learning_rate": learning_rate, "held_out_perplexity_before": round(before, 3), "held_out_perplexity_after": round(after, 3),
              "loss": losses, "seconds": round(time.perf_counter() - start, 1)}
    logger.info("[tiny base] language model pretrained in %.1f s: held-out perplexity %.2f -> %.3f",
                record["seconds"], before, after)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    atomic_write_text(output_dir / PRETRAINING_FILE, json.dumps(record, indent=1))
    return record
