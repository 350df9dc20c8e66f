# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""A tiny random EmoVIT, built offline: the model tests, the offline demo and CI run on.

    python -m modeling_emovit.tiny --output_dir runs/tiny-emovit
    python -m modeling_emovit.tiny --output_dir runs/tiny-emovit-t5 --language_model t5

writes a normal `from_pretrained` folder (model, processor, both tokenizers) in a second. The language model is a
Llama (decoder-only, as Vicuna) by default, or a T5 (encoder-decoder, as FlanT5) with `language_model="t5"`. Nothing
comes from the Hub: the tokenizers are trained here with `tokenizers` on the project's own prompts, and every weight
is random.

Two choices make this random model *trainable* on the Q-Former side alone (the offline default reaches 100 % with them):
- the frozen language model is initialised with std `lm_init_std` instead of the usual 0.02: 0.2 for the Llama, 0.05
  for the T5. At 0.02 a random Llama behind its RMSNorms is nearly a constant function: soft prompts hardly move its
  logits, so no Q-Former can steer it. At 0.2 its output depends strongly on its input, as a pretrained LM's does.
  T5 does not scale its attention scores by 1/sqrt(d), so at 0.2 its softmaxes saturate and a few Q-Former steps
  raise the loss as often as they lower it; at 0.05 they lower it for every seed tried.
- the frozen ViT is wide (hidden 256) and initialised with std 0.02 (`InstructBlipVisionConfig`'s default
  `initializer_range` of 1e-10 would make every patch look the same).
The query tokens start as InstructBLIP training starts them, normal(0, 0.02), not at zero.
"""

import argparse
import string
from collections import Counter
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertTokenizer, BlipImageProcessorPil, LlamaConfig, PreTrainedTokenizerFast, T5Config

from .configuration_emovit import EMOSET_EMOTIONS, EmoVitConfig
from .modeling_emovit import EmoVitForConditionalGeneration
from .processing_emovit import (
    CATEGORICAL_INSTRUCTION_VARIANTS,
    REASONING_QUESTION,
    EmoVitProcessor,
    format_answer,
    format_categorical_instruction,
)


IMAGE_TOKEN = "<image>"
# The language models the tiny preset can be built with (a decoder-only Llama or an encoder-decoder T5), each with
# the std its random weights are drawn with (see the module docstring).
TINY_LANGUAGE_MODELS = {"llama": 0.2, "t5": 0.05}

# Words the offline template backend and the synthetic sample write about (colours, shapes, attribute names), so
# the tiny tokenizers split them into few pieces. Any other text still tokenises: the alphabet covers ASCII.
_EXTRA_WORDS = (
    "brightness colorfulness scene object facial expression human action caption question answer image picture "
    "photo viewer feel feeling mood because the a an of in on with and is are this that it its looks shows "
    "dark bright light dim vivid colorful muted pale black white red orange yellow green blue purple pink brown "
    "gray circle square triangle star heart cross stripes dots wave spiral ring diamond sky sea park street room "
    "person people face smile happy sad angry fear surprise disgust running sitting standing playing crying "
    "laughing dancing what why how which does evoke evokes emotion emotions positive negative "
)


def _corpus(labels, texts=()) -> list[str]:
    lines = [format_categorical_instruction(labels, template) for template in CATEGORICAL_INSTRUCTION_VARIANTS]
    lines += [format_answer(label) for label in labels]
    lines += [REASONING_QUESTION, _EXTRA_WORDS, string.ascii_letters + string.digits + string.punctuation]
    # Repeat the instruction and answers so BPE merges them into a few tokens each.
    return lines * 20 + list(texts)


def build_lm_tokenizer(labels=EMOSET_EMOTIONS, vocab_size: int = 600, texts=(),
                       language_model: str = "llama") -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE tokenizer with `</s>` as EOS, `<pad>` and `<image>`. Llama's layout (`<s>` prepended)
    by default; with `language_model="t5"` T5's (no BOS, `</s>` appended, ids `<pad>` 0, `</s>` 1, `<unk>` 2)."""
    _check_language_model(language_model)
    special_tokens = ["<unk>", "<s>", "</s>", "<pad>"] if language_model == "llama" else ["<pad>", "</s>", "<unk>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=list(string.printable.strip()) + ["▁"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(labels, texts), trainer=trainer)
    if language_model == "llama":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
        )
        bos_token = "<s>"
    else:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
        )
        bos_token = None
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos_token, eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    wrapped.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    wrapped.image_token = IMAGE_TOKEN
    return wrapped


def _check_language_model(language_model: str) -> None:
    if language_model not in TINY_LANGUAGE_MODELS:
        raise ValueError(
            f"Unknown tiny language model {language_model!r}; use one of {list(TINY_LANGUAGE_MODELS)}."
        )


def build_qformer_tokenizer(labels=EMOSET_EMOTIONS, vocab_size: int = 400, texts=()) -> BertTokenizer:
    """A lower-casing WordPiece tokenizer in BERT's format, as the Q-Former uses: the special tokens, every printable
    character alone and as a `##` continuation (so any ASCII text tokenises), then the corpus's most frequent words.

    The vocabulary is counted here rather than trained with `tokenizers`' WordPiece trainer, which breaks ties
    between equally frequent merges in hash order: its vocabulary, and so the tiny model's Q-Former token ids, would
    change from one process to the next.
    """
    split = pre_tokenizers.BertPreTokenizer()
    counts = Counter(word for line in _corpus(labels, texts) for word, _ in split.pre_tokenize_str(line.lower()))
    characters = sorted(set(string.printable.strip().lower()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + characters + [f"##{c}" for c in characters]
    words = sorted((w for w in counts if w not in vocab), key=lambda w: (-counts[w], w))
    vocab += words[: max(0, vocab_size - len(vocab))]
    return BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)


def tiny_config(
    lm_vocab_size: int,
    qformer_vocab_size: int,
    image_token_index: int,
    emotion_labels=EMOSET_EMOTIONS,
    image_size: int = 32,
    vision_hidden_size: int = 256,
    hidden_size: int = 64,
    num_query_tokens: int = 8,
    pad_token_id: int = 3,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
    language_model: str = "llama",
) -> EmoVitConfig:
    """The tiny preset's configuration. `bos_token_id` is unused by a T5 language model, which has no BOS."""
    _check_language_model(language_model)
    vision_config = dict(
        hidden_size=vision_hidden_size,
        intermediate_size=2 * vision_hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=8,
        initializer_range=0.02,
    )
    qformer_config = dict(
        vocab_size=qformer_vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        cross_attention_frequency=1,
        max_position_embeddings=256,
    )
    if language_model == "llama":
        text_config = LlamaConfig(
            vocab_size=lm_vocab_size,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=512,
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=False,
        )
    else:
        # FlanT5's choices: gated-GELU feed-forward blocks, and `tie_word_embeddings=False`, which in transformers 5
        # selects T5 v1.1's unscaled decoder output (T5Config then ties the head to the embeddings all the same, so
        # the tiny T5's head is its embedding matrix). The decoder starts from the pad token, as T5's does.
        text_config = T5Config(
            vocab_size=lm_vocab_size,
            d_model=hidden_size,
            d_kv=hidden_size // 4,
            d_ff=2 * hidden_size,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            feed_forward_proj="gated-gelu",
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
            decoder_start_token_id=pad_token_id,
            tie_word_embeddings=False,
        )
    return EmoVitConfig(
        vision_config=vision_config,
        qformer_config=qformer_config,
        text_config=text_config.to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=image_token_index,
        emotion_labels=list(emotion_labels),
    )


def build_tiny_emovit(
    emotion_labels=EMOSET_EMOTIONS,
    seed: int = 0,
    lm_init_std: float | None = None,
    vision_hidden_size: int = 256,
    image_size: int = 32,
    texts=(),
    lm_vocab_size: int = 600,
    qformer_vocab_size: int = 400,
    language_model: str = "llama",
):
    """Returns `(model, processor)` of a tiny random EmoVIT. `texts` join the project's prompts in the text the
    tokenizers are trained on (the vocabularies then hold their words). `language_model` is `"llama"` (decoder-only)
    or `"t5"` (encoder-decoder); `lm_init_std` None takes that language model's default std."""
    _check_language_model(language_model)
    lm_init_std = TINY_LANGUAGE_MODELS[language_model] if lm_init_std is None else lm_init_std
    torch.manual_seed(seed)
    tokenizer = build_lm_tokenizer(emotion_labels, lm_vocab_size, texts, language_model=language_model)
    qformer_tokenizer = build_qformer_tokenizer(emotion_labels, qformer_vocab_size, texts)
    config = tiny_config(
        lm_vocab_size=len(tokenizer),
        qformer_vocab_size=len(qformer_tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        emotion_labels=emotion_labels,
        image_size=image_size,
        vision_hidden_size=vision_hidden_size,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        language_model=language_model,
    )
    model = EmoVitForConditionalGeneration(config)
    with torch.no_grad():
        model.query_tokens.normal_(mean=0.0, std=config.qformer_config.initializer_range)
        for module in model.language_model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(mean=0.0, std=lm_init_std)
    model.eval()
    image_processor = BlipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    processor = EmoVitProcessor(
        image_processor,
        tokenizer,
        qformer_tokenizer,
        num_query_tokens=config.num_query_tokens,
        emotion_labels=list(config.emotion_labels),
        use_decoder_only_language_model=config.use_decoder_only_language_model,
    )
    return model, processor


def save_tiny_emovit(output_dir, **kwargs):
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model, processor = build_tiny_emovit(**kwargs)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return model, processor


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write a tiny random EmoVIT (model + processor) built offline.")
    parser.add_argument("--output_dir", required=True, help="Folder to write; loads with from_pretrained.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm_init_std", type=float, default=None,
                        help="Std of the frozen random language model (default: 0.2 for llama, 0.05 for t5).")
    parser.add_argument("--language_model", choices=TINY_LANGUAGE_MODELS, default="llama",
                        help="llama: decoder-only, as Vicuna; t5: encoder-decoder, as FlanT5.")
    args = parser.parse_args(argv)
    model, _ = save_tiny_emovit(args.output_dir, seed=args.seed, lm_init_std=args.lm_init_std,
                                language_model=args.language_model)
    print(f"Tiny EmoVIT ({model.num_parameters():,} parameters) written to {args.output_dir}")


if __name__ == "__main__":
    main()
