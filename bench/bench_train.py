"""Training throughput and peak memory: this project's train.py settings vs the official EmoVIT settings, same
model and data, one run each, in separate processes (so peak memory is each run's own).

    python bench/bench_train.py [--model DIR] [--dataset DIR] [--steps 60]

Without --model/--dataset it uses the tiny offline preset and a synthetic EmoSet sample it builds in a temp folder.
"ours": batch 32, cached vision features (bf16 autocast on GPU). "official": batch 1, no caching, fp32 on CPU /
fp16 autocast on GPU (FT.yaml). Prints samples/s, peak process memory (RSS; GPU memory: bench/gpu_bench.py) and
the ratios.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs `python train.py ARGS` as a child of a fresh process, so that RUSAGE_CHILDREN is that run's own peak memory.
CHILD = r"""
import json, resource, subprocess, sys
script, args = sys.argv[1], json.loads(sys.argv[2])
done = subprocess.run([sys.executable, script, *args], stdout=subprocess.DEVNULL)
if done.returncode:
    sys.exit(done.returncode)
history = json.load(open(args[args.index("--output_dir") + 1] + "/training_log.json"))
summary = [e for e in history if "train_samples_per_second" in e][-1]
print("BENCH " + json.dumps({"samples_per_s": summary["train_samples_per_second"],
                              "train_runtime_s": summary["train_runtime"],
                              "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                              "peak_kind": "process RSS"}))
"""


def run(label, args):
    done = subprocess.run([sys.executable, "-c", CHILD, str(REPO / "train.py"), json.dumps(args)],
                          capture_output=True, text=True, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{label} run failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][6:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps for our settings")
    parser.add_argument("--official_steps", type=int, default=300, help="optimizer steps at batch 1")
    args = parser.parse_args()
    import torch

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    if args.model is None or args.dataset is None:
        from emovit.training.offline import build_offline_default

        args.dataset, args.model = build_offline_default(work / "inputs", images_per_class=60, seed=0)
    common = ["--model_name_or_path", args.model, "--dataset", args.dataset, "--types", "categorical",
              "--eval_strategy", "no", "--test_split", "none", "--save_strategy", "no", "--report_to", "none",
              "--logging_steps", "10", "--dataloader_num_workers", "0"]
    gpu = torch.cuda.is_available()
    ours = run("ours", common + ["--output_dir", str(work / "ours"), "--per_device_train_batch_size", "32",
                                 "--max_steps", str(args.steps), "--cache_vision_features"]
               + (["--bf16"] if gpu else []))
    official = run("official", common + ["--output_dir", str(work / "official"), "--per_device_train_batch_size", "1",
                                         "--max_steps", str(args.official_steps)] + (["--fp16"] if gpu else []))
    device = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device}; model: {args.model}")
    for label, result in (("ours (batch 32, cached features)", ours), ("official (batch 1, no cache)", official)):
        print(f"{label:36s} {result['samples_per_s']:9.1f} samples/s   peak {result['peak_mb']:8.0f} MB "
              f"({result['peak_kind']})")
    print(f"throughput ratio ours/official: {ours['samples_per_s'] / official['samples_per_s']:.1f}x; "
          f"peak memory ratio: {ours['peak_mb'] / official['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
