"""bench/gpu_check.sh, the script a lent GPU machine runs, checked on CPU: its bash parses, and on the tiny geometry
(GPU_CHECK_TINY=1) it writes one JSON named after the device with every part's outcome: the one-device benchmark,
the same geometry loaded in 4-bit with its memory targets (bitsandbytes' CPU path; no GPU, so no peak and no verdict),
the DDP and FSDP-2 step on two processes standing in for two GPUs (GPU_CHECK_NPROC=2, gloo) or the reason it was
skipped, and DeepSpeed's step or the reason it was skipped. The numbers themselves come from a GPU."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.sh"
pytestmark = pytest.mark.integration  # it launches the script, torchrun and the benchmark
# Without a GPU, accelerate gives DeepSpeed no process group: the script leaves that part to the tests.
NO_GPU_DEEPSPEED = "no GPU: DeepSpeed on CPU is checked by tests/test_training_distributed.py"


def run_check(tmp_path, processes):
    results, out = tmp_path / "results", tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_TINY": "1", "GPU_CHECK_NPROC": str(processes), "GPU_CHECK_RESULTS": str(results),
           "OUT": str(out), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (report_path,) = results.glob("gpu_check-*.json")
    assert re.fullmatch(r"gpu_check-cpu-\d{8}-\d{4}\.json", report_path.name), report_path.name
    assert (out / report_path.name).read_text() == report_path.read_text()  # the copy for the device tool
    assert f"wrote {report_path}" in done.stdout
    return json.loads(report_path.read_text())


def check_four_bit_part(report):
    part = report["single_gpu_4bit"]
    assert part["passed"] and part["seconds"] <= part["limit_s"], part
    results = part["results"]
    assert results["quantization"] == "4bit" and results["geometry"] == "tiny" and results["save_s"] >= 0
    for task, speed in (("inference", "images_per_s"), ("training", "step_s")):
        runs = results[task]["runs"]
        assert [run["batch_size"] for run in runs] == [1, 8], runs
        assert all(run[speed] > 0 and "peak_mb" in run for run in runs), runs
        assert results[task]["load_s"] >= 0 and "load_peak_mb" in results[task]
    assert all(run["loss"] > 0 for run in results["training"]["runs"])
    # Peak GPU memory is only measured on a GPU: the targets are there, their verdict is not.
    assert results["targets"] == {
        "inference": {"batch_size": 1, "target_mb": 8192, "peak_mb": None, "passed": None},
        "training": {"batch_size": 1, "target_mb": 12288, "peak_mb": None, "passed": None},
    }


def test_the_script_parses():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_two_processes_run_the_ddp_and_fsdp_step_and_every_part_is_in_one_file(tmp_path):
    report = run_check(tmp_path, 2)
    assert report["device"] == "cpu" and report["gpu_count"] == 2
    single = report["single_gpu"]
    assert single["passed"] and single["results"]["geometry"] == "tiny"
    assert [e["batch_size"] for e in single["results"]["train"]] == [1, 8, 16, 1, 8, 16]
    assert all(e["samples_per_s"] > 0 and e["loss"] > 0 for e in single["results"]["train"])
    assert [e["method"] for e in single["results"]["eval"]] == ["score", "generate"]
    check_four_bit_part(report)
    losses = []
    for mode in ("ddp", "fsdp"):
        part = report["multi_gpu"][mode]
        assert part["passed"] and part["exit_status"] == 0 and part["seconds"] <= part["limit_s"], part
        step = part["results"]["distributed"]
        assert step["mode"] == mode and step["world_size"] == 2 and step["per_device_batch_size"] == 8
        assert step["step_s"] > 0 and step["samples_per_s"] > 0
        losses.append(step["loss"])
    # Same seeds, same batches, gradients averaged over the two processes either way: the same training.
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)
    assert report["deepspeed_zero2"] == {"skipped": NO_GPU_DEEPSPEED}


def test_one_device_skips_the_multi_gpu_step_and_says_why(tmp_path):
    report = run_check(tmp_path, 1)
    assert report["single_gpu"]["passed"]
    check_four_bit_part(report)
    assert report["multi_gpu"] == {"skipped": "1 GPU(s) on this machine; the DDP/FSDP step needs at least 2"}
    assert report["deepspeed_zero2"] == {"skipped": NO_GPU_DEEPSPEED}
