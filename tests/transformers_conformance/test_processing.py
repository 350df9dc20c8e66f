"""transformers' ProcessorTesterMixin over the side's processor.

The mixin builds each component by calling its class without arguments unless the test class says how. A tokenizer
needs a vocabulary, and nothing can be downloaded here, so both tokenizers are the tiny ones that
`modeling_emovit.tiny` trains offline.
"""

import unittest

from transformers import BlipImageProcessor

from modeling_emovit.tiny import build_lm_tokenizer, build_qformer_tokenizer

from ..test_processing_common import ProcessorTesterMixin
from . import PROCESSOR_CLASS


class ProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    processor_class = PROCESSOR_CLASS

    @classmethod
    def _setup_image_processor(cls):
        # What `AutoImageProcessor` gives InstructBLIP; named here because the mixin finds it from the test file's
        # name, which is not `test_processing_instructblip.py`.
        return BlipImageProcessor()

    @classmethod
    def _setup_tokenizer(cls):
        return build_lm_tokenizer()

    @classmethod
    def _setup_qformer_tokenizer(cls):
        return build_qformer_tokenizer()

    @staticmethod
    def prepare_processor_dict():
        return {"num_query_tokens": 1}
