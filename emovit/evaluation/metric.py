"""The emotion-classification metric shipped in metrics/emotion_classification: where `evaluate.load` finds it, and
its numpy functions (`negative_log_likelihood`, `calibration_metrics`, `one_vs_rest_auroc`, ...) for the library.

The metric stays one self-contained file, as a metric script on the Hub is, and the library uses that file's
functions instead of its own copies, so a number the library optimises (the temperature fit's NLL) is the number
metrics.json reports.
"""

import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType


# The metric module ships with the repository (Hub metrics cannot be fetched offline) and is loaded by path.
METRIC_PATH = str(Path(__file__).resolve().parents[2] / "metrics" / "emotion_classification")


@cache
def metric_functions() -> ModuleType:
    """The metric file as a module, loaded once, on first use (it imports the `evaluate` library, which only a
    computation of metrics needs)."""
    path = Path(METRIC_PATH) / "emotion_classification.py"
    spec = importlib.util.spec_from_file_location("emotion_classification", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
