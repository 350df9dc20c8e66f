"""bench/bench_memory.py on the tiny geometry: every setting and task is measured (each in a process of its own), the
JSON holds positive numbers and their ratios to float32, and the weights as loaded shrink from float32 to bfloat16 to
8-bit to 4-bit. The numbers themselves are the benchmark's to report, not the test's."""

import json

import pytest

from testing_utils import run_script


pytestmark = pytest.mark.integration  # the script measures every setting in a process of its own
SETTINGS = ("float32", "bfloat16", "8bit", "4bit")
MEASURED = ("weights_mb", "load_s", "loaded_mb", "peak_mb", "run_s")


def test_tiny_run_measures_every_setting_with_ratios_to_float32(tmp_path):
    output = tmp_path / "memory.json"
    done = run_script("bench/bench_memory", ["--tiny", "--batch_size", "2", "--output", output])
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())

    assert list(results["settings"]) == list(SETTINGS)
    assert results["parameters"]["total"] == sum(v for k, v in results["parameters"].items() if k != "total")
    for setting, tasks in results["settings"].items():
        assert list(tasks) == ["inference", "training"]
        for task, entry in tasks.items():
            assert all(entry[key] > 0 for key in MEASURED), (setting, task, entry)
            # The run's peak holds the loaded model and whatever the run allocates on top.
            assert entry["peak_mb"] >= entry["loaded_mb"] * 0.9, (setting, task, entry)
        assert tasks["training"]["loss"] > 0
    assert all(value == 1.0 for task in results["ratios_to_float32"]["float32"].values() for value in task.values())

    weights = [results["settings"][setting]["inference"]["weights_mb"] for setting in SETTINGS]
    assert weights == sorted(weights, reverse=True) and len(set(weights)) == len(weights), weights
    ratios = results["ratios_to_float32"]
    assert ratios["bfloat16"]["inference"]["weights_mb"] == pytest.approx(0.5, abs=0.01)
    assert ratios["4bit"]["inference"]["weights_mb"] == pytest.approx(weights[3] / weights[0], abs=1e-3)
    assert "| inference | 4bit |" in done.stdout and f"wrote {output}" in done.stdout
