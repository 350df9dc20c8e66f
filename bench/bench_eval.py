"""Evaluation throughput: images/s for `score` vs `generate` on the tiny random EmoVIT.

    python bench/bench_eval.py --images 200 --batch_size 16 --repeats 5

Builds the tiny model and a synthetic EmoSet sample in a temporary folder, runs the evaluation evaluate.py runs
(`emovit.evaluation.run.evaluate_model`) on the test split once per method to warm up, then `--repeats` times each,
alternating, and prints the median images/s of each method (the whole loop: image decoding, preprocessing, the
model, bookkeeping; not model loading or output writing) and the ratio. The tiny model's generate answers are never
in format, so generate always runs its full token budget, as an untrained real model would; a trained model stops
at EOS and is faster than this.
"""

import argparse
import contextlib
import io
import statistics
import tempfile
from pathlib import Path

import torch

from dataset_builder.synthetic import SPLIT_FRACTIONS, write_synthetic_emoset
from emovit.evaluation.arguments import EvalArguments
from emovit.evaluation.run import evaluate_model
from modeling_emovit.tiny import save_tiny_emovit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="Test-split images (rounded to a multiple of 8).")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    test_fraction = dict(SPLIT_FRACTIONS)["test"]
    per_class = max(1, round(args.images / 8))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_tiny_emovit(tmp / "model", seed=0)
        # The sample puts `test_fraction` of each class in the test split.
        write_synthetic_emoset(tmp / "data", images_per_class=max(3, round(per_class / test_fraction)), seed=0)
        arguments = {
            method: EvalArguments(model=str(tmp / "model"), dataset=str(tmp / "data"), split="test", method=method,
                                  batch_size=args.batch_size, output_dir=str(tmp / method))
            for method in ("score", "generate")
        }
        # Alternate the methods so that load from other processes on the machine hits both alike; the first
        # round warms up and is not counted.
        runs = {method: [] for method in arguments}
        for _ in range(1 + args.repeats):
            for method, eval_arguments in arguments.items():
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    metrics = evaluate_model(eval_arguments)
                runs[method].append(metrics["images_per_second"])
        median = {method: statistics.median(values[1:]) for method, values in runs.items()}
        for method, values in runs.items():
            print(f"{method:>8}: {median[method]:7.1f} images/s (median of {args.repeats}; runs "
                  f"{', '.join(f'{r:.1f}' for r in values[1:])}) on {metrics['num_images']} images, "
                  f"batch {args.batch_size}, {metrics['device']}, {torch.get_num_threads()} threads")
        print(f"score / generate: {median['score'] / median['generate']:.2f}x")


if __name__ == "__main__":
    main()
