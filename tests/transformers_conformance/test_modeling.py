"""transformers' ModelTesterMixin, GenerationTesterMixin and PipelineTesterMixin over the side's model classes.

The model tester describes a tiny InstructBLIP-shaped model (ViT, Q-Former, Llama, as EmoVIT's checkpoints are) and
its inputs; the test class names the classes, the pipeline task and the inputs besides `pixel_values` that every
forward needs. Nothing else is overridden: each test is the mixin's own.
"""

import unittest

import torch

from ..generation.test_utils import GenerationTesterMixin
from ..test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor, random_attention_mask
from ..test_pipeline_mixin import PipelineTesterMixin
from . import CONFIG_CLASS, GENERATION_CLASS, MODEL_CLASS


class ModelTester:
    def __init__(
        self,
        parent,
        batch_size=3,
        text_seq_length=7,
        qformer_seq_length=6,
        num_query_tokens=4,
        image_size=30,
        patch_size=6,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        vocab_size=99,
        is_training=True,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.text_seq_length = text_seq_length
        self.qformer_seq_length = qformer_seq_length
        self.num_query_tokens = num_query_tokens
        # The language model reads the query outputs in place of the `<image>` tokens, then the text.
        self.seq_length = num_query_tokens + text_seq_length
        self.image_size = image_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.vocab_size = vocab_size
        self.is_training = is_training
        self.pad_token_id, self.bos_token_id, self.eos_token_id, self.image_token_index = 1, 0, 2, 3
        shape = dict(
            hidden_size=hidden_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            intermediate_size=intermediate_size,
        )
        self.vision_config = dict(shape, image_size=image_size, patch_size=patch_size)
        self.qformer_config = dict(shape, vocab_size=vocab_size, max_position_embeddings=64)
        self.text_config = dict(
            shape,
            model_type="llama",
            vocab_size=vocab_size,
            max_position_embeddings=64,
            pad_token_id=self.pad_token_id,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
        )

    def get_config(self):
        return CONFIG_CLASS(
            vision_config=dict(self.vision_config),
            qformer_config=dict(self.qformer_config),
            text_config=dict(self.text_config),
            num_query_tokens=self.num_query_tokens,
            image_token_index=self.image_token_index,
        )

    def prepare_config_and_inputs_for_common(self):
        batch, special_ids = self.batch_size, self.image_token_index + 1
        text_ids = ids_tensor([batch, self.text_seq_length], self.vocab_size - special_ids) + special_ids
        image_ids = torch.full((batch, self.num_query_tokens), self.image_token_index, dtype=text_ids.dtype)
        input_ids = torch.cat([image_ids, text_ids], dim=1)
        inputs = {
            "pixel_values": floats_tensor([batch, 3, self.image_size, self.image_size]),
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "qformer_input_ids": ids_tensor([batch, self.qformer_seq_length], self.vocab_size),
            "qformer_attention_mask": random_attention_mask([batch, self.qformer_seq_length]),
        }
        return self.get_config(), inputs


# A model that can generate has GenerationTesterMixin in its test class (test_generation_tester_mixin_inheritance
# checks it); the sdist ships none, so here it is the empty stand-in and adds no test.
class ModelTest(ModelTesterMixin, GenerationTesterMixin, PipelineTesterMixin, unittest.TestCase):
    all_model_classes = (MODEL_CLASS, GENERATION_CLASS)
    pipeline_model_mapping = {"image-text-to-text": GENERATION_CLASS}
    # The main input is `pixel_values`; no forward runs without the text and the Q-Former's instruction.
    additional_model_inputs = ["input_ids", "qformer_input_ids"]

    def setUp(self):
        self.model_tester = ModelTester(self)
