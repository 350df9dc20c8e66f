"""The offline miniature's base model: a tiny InstructBLIP whose language model has been taught to write.

EmoVIT starts from InstructBLIP, whose Vicuna already writes fluent, sensible text; only the Q-Former side is then
tuned. A random tiny language model cannot stand in for that: it writes noise, so the reasoning path of the offline
run could never be judged. So the tiny base is built in two steps:

1. a tiny EmoVIT (`modeling_emovit.tiny`) whose tokenizers are trained on the corpus below;
2. its language model pretrained as a causal LM on `dataset_builder.lm_corpus`: documents that pair a description
   of a drawn scene with an instruction and its answer, so it writes the corpus's sentences and lets what comes
   first (a description here, the Q-Former's query outputs later) decide what it writes.

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


def document_ids(tokenizer, document: dict) -> list[int]:
    """`context <s> instruction answer </s>` as token ids, the instruction and answer tokenised as the processor
    tokenises them for training (so the language model meets the same ids in both)."""
    context = tokenizer(document["context"], add_special_tokens=False)["input_ids"] if document["context"] else []
    instruction = tokenizer(document["instruction"], add_special_tokens=True)["input_ids"]
    answer = tokenizer(document["answer"], add_special_tokens=False)["input_ids"]
    return context + instruction + answer + [tokenizer.eos_token_id]


def _batch(rows: list[list[int]], pad_id: int) -> dict:
    longest = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), longest), pad_id)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for k, row in enumerate(rows):
        input_ids[k, : len(row)] = torch.tensor(row)
        attention_mask[k, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "labels": input_ids.masked_fill(attention_mask == 0, -100)}


@torch.no_grad()
def perplexity(language_model, rows: list[list[int]], pad_id: int, batch_size: int = 64) -> float:
    """Per-token perplexity of `language_model` on the token-id `rows`."""
    language_model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = _batch(rows[start : start + batch_size], pad_id)
        tokens = int((batch["labels"][:, 1:] != -100).sum())
        total += language_model(**batch).loss.item() * tokens
        count += tokens
    return math.exp(total / count)


def pretrain_language_model(language_model, rows: list[list[int]], pad_id: int, steps: int, batch_size: int = 32,
                            learning_rate: float = 1e-2, seed: int = 0) -> list[float]:
    """Trains `language_model` as a causal LM on random batches of the token-id `rows` (AdamW, one-cycle schedule);
    returns the loss of every step."""
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
                               image_size: int = 64) -> dict:
    """Writes the tiny base (model, processor and `lm_pretraining.json`, its record) into `output_dir`; returns the
    record: corpus size, steps, the loss curve, held-out perplexity before and after, and the time taken."""
    start = time.perf_counter()
    documents = corpus_documents(num_pictures, seed)
    model, processor = build_tiny_emovit(seed=seed, lm_init_std=0.02, image_size=image_size,
                                         texts=corpus_texts(documents), lm_vocab_size=1000, qformer_vocab_size=600)
    tokenizer = processor.tokenizer
    rows = [document_ids(tokenizer, document) for document in documents]
    held_out, train = rows[: len(rows) // 20], rows[len(rows) // 20 :]  # documents are shuffled
    before = perplexity(model.language_model, held_out, tokenizer.pad_token_id)
    torch.manual_seed(seed)
    losses = pretrain_language_model(model.language_model, train, tokenizer.pad_token_id, steps, seed=seed)
    after = perplexity(model.language_model, held_out, tokenizer.pad_token_id)
    record = {"documents": len(documents), "pictures": num_pictures, "train_documents": len(train),
              "held_out_documents": len(held_out), "steps": steps, "held_out_perplexity_before": round(before, 3),
              "held_out_perplexity_after": round(after, 3), "loss": losses,
              "seconds": round(time.perf_counter() - start, 1)}
    logger.info("[tiny base] language model pretrained in %.1f s: held-out perplexity %.2f -> %.3f",
                record["seconds"], before, after)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    atomic_write_text(output_dir / PRETRAINING_FILE, json.dumps(record, indent=1))
    return record
