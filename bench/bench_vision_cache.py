"""Vision-feature cache build time: one process vs two processes that each encode half of the images.

    python bench/bench_vision_cache.py --images 256 --image_size 128 --repeats 3

Writes a tiny random EmoVIT whose vision tower sees `--image_size` px images in 8 px patches (128 px: 257 tokens per
image, as EVA ViT-g at 224 px in 14 px patches) and `--images` synthetic PNG files into a temporary folder, then
times `VisionCache.build` under `torchrun --nproc_per_node 1` and `--nproc_per_node 2`, alternating, `--repeats`
times each, every time into a new cache folder. Every process runs with OMP_NUM_THREADS=1, so two processes use two
cores where one uses one: the ratio is what sharding gains when each process has its own device or core. The time is
the build alone on the main process (from a barrier before it to its return: image decoding, preprocessing, the
tower, the writes, the final rename), not the interpreter's and torch's start-up; the launch's whole wall time is
printed next to it, and the CPU time of the busiest process (what the build's wall time would be on otherwise idle
cores; it is much less sensitive than wall time to other work on a shared machine). Prints the median of each and
the ratios.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(model_dir: str, image_dir: str, folder: str):
    from accelerate import PartialState

    from emovit.training.vision_cache import VisionCache
    from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor

    model = EmoVitForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = EmoVitProcessor.from_pretrained(model_dir)
    examples = [{"image": str(p), "image_key": p.name} for p in sorted(Path(image_dir).glob("*.png"))]
    state = PartialState(cpu=True)
    state.wait_for_everyone()
    started, cpu_started = time.perf_counter(), time.process_time()
    cache = VisionCache.build(model, processor, examples, Path(folder), batch_size=16)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    cpu_seconds = [cpu]
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        cpu_seconds = gather_object([cpu])
    if state.is_main_process:
        print("RESULT " + json.dumps({"processes": state.num_processes, "seconds": seconds, "cpu": cpu_seconds,
                                      "rows": int(cache.array.shape[0]), "encoded_here": cache.encoded}), flush=True)
    state.destroy_process_group()


def launch(processes: int, model_dir: Path, image_dir: Path, folder: Path) -> tuple[dict, float]:
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    started = time.perf_counter()
    done = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", str(processes), __file__, "--worker",
                           str(model_dir), str(image_dir), str(folder)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the {processes}-process build failed:\n{done.stderr[-3000:]}")
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line[len("RESULT "):])
    assert result["processes"] == processes, result  # a launch that silently ran lone processes would be no test
    return result, wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=128, help="The vision tower's input size (8 px patches).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "IMAGES", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(*args.worker)

    import numpy as np
    from PIL import Image

    from modeling_emovit.tiny import save_tiny_emovit

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_tiny_emovit(tmp / "model", seed=0, image_size=args.image_size)
        (tmp / "images").mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            pixels = rng.integers(0, 256, (args.image_size + 20, args.image_size + 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp / "images" / f"img{i:05d}.png")
        runs = {1: [], 2: []}
        for repeat in range(args.repeats):
            for processes in (1, 2):
                result, wall = launch(processes, tmp / "model", tmp / "images", tmp / f"cache-{processes}-{repeat}")
                assert result["rows"] == args.images, result
                runs[processes].append((result["seconds"], wall, max(result["cpu"])))
                print(f"repeat {repeat}: {processes} process(es): build {result['seconds']:.2f} s, CPU time per "
                      f"process {[round(c, 2) for c in result['cpu']]} s (the main process encoded "
                      f"{result['encoded_here']}), launch wall {wall:.2f} s", flush=True)
        first = np.load(next((tmp / "cache-1-0").glob("*/features.npy")))
        second = np.load(next((tmp / "cache-2-0").glob("*/features.npy")))
        build = {n: statistics.median(r[0] for r in runs[n]) for n in runs}
        wall = {n: statistics.median(r[1] for r in runs[n]) for n in runs}
        cpu = {n: statistics.median(r[2] for r in runs[n]) for n in runs}
        print(f"{args.images} images at {args.image_size} px, median of {args.repeats}, OMP_NUM_THREADS=1 per process")
        print(f"build: 1 process {build[1]:.2f} s, 2 processes {build[2]:.2f} s, speed-up {build[1] / build[2]:.2f}x")
        print(f"launch wall (with start-up): 1 process {wall[1]:.2f} s, 2 processes {wall[2]:.2f} s, "
              f"speed-up {wall[1] / wall[2]:.2f}x")
        print(f"CPU time of the busiest process (the wall time on idle cores): 1 process {cpu[1]:.2f} s, "
              f"2 processes {cpu[2]:.2f} s, speed-up {cpu[1] / cpu[2]:.2f}x")
        print(f"max abs difference of the features, 2 processes vs 1: {np.abs(first - second).max():.2e}")


if __name__ == "__main__":
    main()
