"""transformers' ConfigTester over the side's composite configuration."""

import unittest

from ..test_configuration_common import ConfigTester
from . import CONFIG_CLASS
from .test_modeling import ModelTester


class ConfigTest(unittest.TestCase):
    def setUp(self):
        # ConfigTester also loads the model tester's config with custom keywords, as in a model test class.
        self.model_tester = ModelTester(self)
        # The keyword is one the composite config owns (not a sub-config's), so the JSON and save/load round trips
        # check it at the top level.
        self.config_tester = ConfigTester(self, config_class=CONFIG_CLASS, has_text_modality=False, num_query_tokens=4)

    def test_config(self):
        self.config_tester.run_common_tests()
