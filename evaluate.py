"""Evaluate an EmoVIT (or InstructBLIP) model on an emotion classification split.

    python evaluate.py --model runs/emovit --dataset data/EmoSet-118K --split test --method score \
        --batch_size 16 --output_dir runs/eval-emoset

    accelerate launch --num_processes 8 evaluate.py --model runs/emovit --dataset data/EmoSet-118K --split test \
        --method generate --batch_size 16 --dtype bfloat16 --output_dir runs/eval-emoset-generate

    python evaluate.py configs/eval_emoset.yaml   # the same arguments from one JSON or YAML file

    python evaluate.py --model runs/emovit --dataset data/EmoSet-118K --split test --task reasoning \
        --output_dir runs/eval-reasoning [--judge_model gpt-4o-mini --judge_max_cost 2 --judge_dry_run]

`--dataset` is an EmoSet root (info.json + split files), an ImageFolder (one sub-folder per label, optionally under
split folders), a folder written by `Dataset.save_to_disk` / holding parquet files, or a Hub dataset id (an `image`
column and an `emotion` or `label` column, ClassLabel or string).

Outputs in --output_dir, each written to a temporary file and then renamed, so a crash never leaves half a file:
- metrics.json: accuracy, macro-F1, per-class accuracy, invalid-answer rate, confusion matrix, images/s, the
  arguments; with --prompt_variants N also each instruction's accuracy and their spread. Entries the dataset reader
  leaves out and images that cannot be decoded are counted (`num_skipped`) and listed with their reasons
  (`skipped`); the metrics cover the other images (`num_images`).
- predictions.jsonl: one line per image (and instruction variant): id, label, prediction, correct, and the
  per-label probabilities and the model labels' raw log-likelihoods (score) or the generated text (generate).
- confusion_matrix.png; with `score` also reliability_diagram.png, and metrics.json holds ECE, Brier, NLL and
  one-vs-rest AUROC (definitions in the README and in metrics.json).

Calibration and the model card (README, Evaluation):

    python evaluate.py --model runs/emovit --dataset data/EmoSet-118K --split test --calibrate_on val \
        --save_temperature --update_card runs/emovit --output_dir runs/eval-emoset

fits a temperature on `val`, reports the test metrics before and after it, stores it in runs/emovit/config.json
and adds the results to runs/emovit/README.md's model-index.

--task reasoning explains each image (explain(), --explain_preset free by default) and writes metrics.json (emotion
consistency, attribute grounding, brightness/colourfulness contradictions, the optional LLM judge, each with its
definition) and predictions.jsonl (explanation, named emotions, grounded terms, contradictions, judge scores per
image); the README's "Reasoning quality" section defines every number. The judge's key comes from OPENAI_API_KEY only.

Zero-shot on other label sets (--label_map): the model always answers among its own labels (the instruction must
name all of them); a label map then sends each model label to a dataset label or drops it (null). With `score` the
probabilities of the model labels that map to the same dataset label are summed, and renormalised over the kept
labels; with `generate` the parsed model label is mapped, and an answer naming a dropped label is invalid. Dataset
labels that are themselves model labels are mapped too, so EmoSet's own test split can be scored in binary mode.
Presets (model labels must be EmoSet's 8):
- binary: amusement, awe, contentment, excitement -> positive; anger, disgust, fear, sadness -> negative
  (EmoSet's own two-class split).
- emotion6 (Emotion6: anger, disgust, fear, joy, sadness, surprise): amusement, contentment, excitement -> joy;
  awe -> surprise (awe is the response to something vast and unexpected, and Emotion6 has no other label for
  it); anger, disgust, fear, sadness -> themselves.
- unbiasedemo (UnbiasedEmo: anger, fear, joy, love, sadness, surprise): amusement, excitement -> joy;
  contentment -> love (Mikels' contentment images are largely couples, families and tenderness, which is what
  UnbiasedEmo calls love); awe -> surprise; anger, fear, sadness -> themselves; disgust -> dropped.
- webemo7 (WebEmo's 7 classes): as unbiasedemo, but disgust -> anger (WebEmo's hierarchy files disgust under anger);
  no model label means confusion, so add --skip_uncovered_labels true to leave those images out (counted).
- emotionroi = emotion6 (same six labels); webemo2 = twitter = binary.
Pass a JSON file `{"amusement": "joy", ..., "disgust": null}` naming every model label for any other mapping.

Benchmarks (README "Benchmark datasets"): `--dataset_format artphoto|abstract|emotion6|emotionroi|webemo2|webemo7|
webemo25` reads a benchmark in its published layout; FI, UnbiasedEmo and Twitter I / II are ImageFolders. A suite runs
one model on a list of them and writes one table (suite_results.md, suite_results.json) plus each entry's folder:

    python evaluate.py --model runs/emovit --suite configs/eval_suite.yaml --output_dir runs/eval-suite
"""

import sys


if __name__ == "evaluate":
    # `import evaluate` with the repository root on sys.path found this file: hand the name to the library, which
    # emovit.evaluation imports below (with this folder hidden from sys.path).
    del sys.modules["evaluate"]

import os  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402
from accelerate import PartialState  # noqa: E402
from transformers import HfArgumentParser  # noqa: E402

from emovit.evaluation.arguments import EvalArguments  # noqa: E402
from emovit.evaluation.run import evaluate_model  # noqa: E402
from emovit.evaluation.suite import (  # noqa: E402
    RESULTS_JSON,
    RESULTS_MARKDOWN,
    SuiteArguments,
    format_table,
    run_suite,
)
from emovit_utils.commands import run_command  # noqa: E402


def main(argv=None) -> dict:
    """Runs the evaluation; returns metrics.json's content (on every process of a multi-process launch)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # ---- a suite: one model on every entry of a suite file, then one table of all results
    if any(arg == "--suite" or arg.startswith("--suite=") for arg in argv):
        (suite_args,) = HfArgumentParser(SuiteArguments).parse_args_into_dataclasses(args=argv)
        table = run_suite(suite_args)
        if PartialState().is_main_process:
            print(format_table(table), end="")
            output_dir = Path(suite_args.output_dir)
            print(f"wrote {output_dir / RESULTS_MARKDOWN}, {output_dir / RESULTS_JSON}")
        return table

    # ---- arguments: flags, or one JSON / YAML file holding them
    parser = HfArgumentParser(EvalArguments, description="Evaluate one dataset split, or a suite of them: --model M "
                                                          "--suite FILE --output_dir O (see --suite FILE --help).")
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        (args,) = parse_argument_file(parser, argv[0])
    else:
        (args,) = parser.parse_args_into_dataclasses(args=argv)

    # ---- evaluation: model, data, classification, metrics, report
    metrics = evaluate_model(args)

    # ---- summary (the main process wrote the files)
    if PartialState().is_main_process and args.task == "reasoning":
        print_reasoning_summary(metrics, Path(args.output_dir))
    elif PartialState().is_main_process:
        print(f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
              f"invalid {metrics['invalid_rate']:.4f}, {metrics['images_per_second']:.1f} images/s "
              f"on {metrics['num_images']} images")
        skipped = metrics["skipped"]
        if skipped:
            print(f"skipped {len(skipped)} images (listed with reasons in metrics.json), e.g. {skipped[0]['id']}: "
                  f"{skipped[0]['reason']}")
        if "ece" in metrics:
            auroc = "n/a" if metrics["auroc_macro"] is None else f"{metrics['auroc_macro']:.4f}"
            print(f"ECE {metrics['ece']:.4f}, Brier {metrics['brier']:.4f}, NLL {metrics['nll']:.4f}, "
                  f"macro AUROC {auroc}")
        if "calibrated" in metrics:
            calibrated = metrics["calibrated"]
            print(f"temperature {calibrated['temperature']:.4f} (fitted on {calibrated['split']}): "
                  f"ECE {calibrated['ece']:.4f}, Brier {calibrated['brier']:.4f}, NLL {calibrated['nll']:.4f}"
                  + (f"; stored in {Path(args.model) / 'config.json'}" if args.save_temperature else ""))
            for warning in calibrated["warnings"]:
                print(f"warning: the temperature is unreliable: {warning}")
        output_dir = Path(args.output_dir)
        print(f"wrote {output_dir / 'metrics.json'}, {output_dir / 'predictions.jsonl'}, "
              f"{output_dir / 'confusion_matrix.png'}"
              + (f", {output_dir / 'reliability_diagram.png'}" if "ece" in metrics else ""))
        if args.update_card is not None:
            print(f"added the results to the model-index of {Path(args.update_card) / 'README.md'}")
    return metrics


def parse_argument_file(parser: HfArgumentParser, path: str) -> tuple:
    """The arguments held by one JSON or YAML file; ValueError naming the file when it cannot be read, parsed or
    holds a wrong key or value."""
    parse = parser.parse_json_file if path.endswith(".json") else parser.parse_yaml_file
    try:
        return parse(os.path.abspath(path))
    # TypeError: a required argument (model, dataset, output_dir) is missing from the file.
    except (OSError, ValueError, TypeError, yaml.YAMLError) as e:
        raise ValueError(f"argument file {path}: {e}. Fix the file: it holds one object of evaluate.py's flags "
                         "without the dashes, e.g. {\"model\": ..., \"dataset\": ..., \"output_dir\": ...}.") from e


def print_reasoning_summary(metrics: dict, output_dir: Path) -> None:
    """The reasoning run's headline numbers (definitions in metrics.json), the judge's if asked, and the files."""
    def show(value):
        return "n/a" if value is None else f"{value:.4f}"

    print(f"reasoning ({metrics['preset']}) on {metrics['num_images']} images: consistency "
          f"{show(metrics['consistency'])}, first-named emotion is the label "
          f"{show(metrics['first_mentioned_is_label'])}, "
          f"grounding {show(metrics['grounding'])}, contradiction rate {show(metrics['contradiction_rate'])}, "
          f"{metrics['images_per_second']:.2f} images/s")
    judge = metrics["judge"]
    if judge is not None and judge["dry_run"]:
        print(f"judge dry run: {judge['to_send']} requests to send ({judge['cached']} cached), about "
              f"{judge['estimated_prompt_tokens'] + judge['estimated_completion_tokens']} tokens, "
              f"{judge['estimated_cost_usd']:.4f} USD")
    elif judge is not None:
        print(f"judge {judge['model']}: {judge['judged']} judged, grounding {show(judge['grounding'])}, plausibility "
              f"{show(judge['plausibility'])}, specificity {show(judge['specificity'])}; {judge['malformed']} "
              f"malformed, {judge['failed']} failed, {judge['not_run']} not sent; {judge['api_calls']} calls, "
              f"{judge['cache_hits']} cached, {judge['cost_usd']:.4f} USD")
    if metrics["skipped"]:
        print(f"skipped {len(metrics['skipped'])} images (listed with reasons in metrics.json)")
    print(f"wrote {output_dir / 'metrics.json'}, {output_dir / 'predictions.jsonl'}")


if __name__ == "__main__":
    run_command("evaluate.py", main)
    # A multi-process launch ends cleanly: gloo's/NCCL's threads stop before the interpreter does (left running,
    # they can abort a process at exit after all the work is done).
    PartialState().destroy_process_group()
