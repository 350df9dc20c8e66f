"""Evaluate an EmoVIT (or InstructBLIP) model on an emotion classification split, a suite of benchmarks, or the
quality of its explanations.

    python evaluate.py --model runs/emovit --dataset data/EmoSet-118K --split test --method score \
        --batch_size 16 --output_dir runs/eval-emoset

    accelerate launch --num_processes 8 evaluate.py --model runs/emovit --dataset data/EmoSet-118K --split test \
        --method generate --batch_size 16 --dtype bfloat16 --output_dir runs/eval-emoset-generate

    python evaluate.py --model runs/emovit --dataset data/EmoSet-118K --split test --dtype bfloat16 \
        --quantization 4bit --output_dir runs/eval-emoset-4bit   # 4-bit frozen towers

    python evaluate.py configs/eval_emoset.yaml   # the same arguments from one JSON or YAML file

    python evaluate.py --model runs/emovit --dataset data/EmoSet-118K --split test --calibrate_on val \
        --save_temperature --update_card runs/emovit --output_dir runs/eval-emoset

    python evaluate.py --model runs/emovit --dataset data/EmoSet-118K --split test --task reasoning \
        --output_dir runs/eval-reasoning [--judge_model gpt-4o-mini --judge_max_cost 2 --judge_dry_run]

    python evaluate.py --model runs/emovit --dataset data/EmoSet-118K --split test --task reasoning \
        --references out/emovit-test-answers --output_dir runs/eval-reasoning-references   # BLEU-4, ROUGE-L

    python evaluate.py --model runs/emovit --suite configs/eval_suite.yaml --output_dir runs/eval-suite

It writes metrics.json, predictions.jsonl and plots into --output_dir (each file whole or not at all). The datasets
it reads, its label maps for zero-shot evaluation, calibration and every metric are described in docs/evaluation.md.
"""

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path


def load_evaluate_library() -> None:
    """Puts the `evaluate` library in `sys.modules` in place of this file.

    This script's name is the library's: wherever the checkout's root is on sys.path (`python train.py`,
    `python -c` in the checkout, PYTHONPATH=.), `import evaluate` finds this file first. Imported under that name,
    it loads the library from the rest of sys.path and hands the name over, so every `import evaluate` gets the
    library. Nothing else in the project needs to know."""
    here = os.path.dirname(os.path.abspath(__file__))
    search_path = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("evaluate", search_path)
    if spec is None:
        raise ImportError("The `evaluate` library is not installed (this checkout's evaluate.py is a script, not the "
                          "library): pip install evaluate")
    library = importlib.util.module_from_spec(spec)
    sys.modules["evaluate"] = library
    spec.loader.exec_module(library)


if __name__ == "evaluate":
    load_evaluate_library()


def main(argv=None) -> dict:
    """Runs the evaluation; returns metrics.json's content (on every process of a multi-process launch)."""
    # Imported here, not at the top: this file is also what `import evaluate` finds where the checkout is on
    # sys.path, and then it only hands the name on (above); the evaluation library imports `evaluate` itself.
    from accelerate import PartialState
    from transformers import HfArgumentParser

    from emovit.evaluation.arguments import EvalArguments
    from emovit.evaluation.run import evaluate_model
    from emovit.evaluation.suite import RESULTS_JSON, RESULTS_MARKDOWN, SuiteArguments, format_table, run_suite
    from emovit_utils.commands import is_argument_file, read_argument_file

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
    if is_argument_file(argv):
        (args,) = read_argument_file(parser, argv[0], "evaluate.py")
    else:
        (args,) = parser.parse_args_into_dataclasses(args=argv)

    # ---- evaluation: model, data, classification, metrics, report
    metrics = evaluate_model(args)

    # ---- summary (the main process wrote the files)
    if PartialState().is_main_process:
        if args.task == "reasoning":
            print_reasoning_summary(metrics, Path(args.output_dir))
        else:
            print_classification_summary(metrics, args)
    return metrics


def print_classification_summary(metrics: dict, args) -> None:
    """The classification run's headline numbers, calibration if computed, and the files written."""
    print(f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
          f"weighted F1 {metrics['weighted_f1']:.4f}, "
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
        kept = {row["threshold"]: row for row in metrics["selective"]}
        print(f"AURC {metrics['aurc']:.4f}; coverage at confidence >= 0.5: {kept[0.5]['coverage']:.4f}, "
              f">= 0.9: {kept[0.9]['coverage']:.4f}")
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
          + (f", {output_dir / 'reliability_diagram.png'}, {output_dir / 'risk_coverage.png'}"
             if "ece" in metrics else ""))
    if args.update_card is not None:
        print(f"added the results to the model-index of {Path(args.update_card) / 'README.md'}")


def print_reasoning_summary(metrics: dict, output_dir: Path) -> None:
    """The reasoning run's headline numbers (definitions in metrics.json), the judge's if asked, and the files."""
    def show(value):
        return "n/a" if value is None else f"{value:.4f}"

    print(f"reasoning ({metrics['preset']}) on {metrics['num_images']} images: consistency "
          f"{show(metrics['consistency'])}, first-named emotion is the label "
          f"{show(metrics['first_mentioned_is_label'])}, "
          f"grounding {show(metrics['grounding'])}, contradiction rate {show(metrics['contradiction_rate'])}, "
          f"{metrics['images_per_second']:.2f} images/s")
    references = metrics["references"]
    if references is not None:
        bert = references["bertscore"]
        print(f"against references ({references['images_with_reference']} images, "
              f"{references['images_without_reference']} without one): BLEU-4 {show(references['bleu4'])}, "
              f"ROUGE-L {show(references['rouge_l'])}"
              + (f", BERTScore F1 {show(bert['f1'])} (P {show(bert['precision'])}, R {show(bert['recall'])}, "
                 f"layer {bert['layer']})" if bert is not None else ""))
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
    from accelerate import PartialState

    from emovit_utils.commands import run_command

    run_command("evaluate.py", main)
    # A multi-process launch ends cleanly: gloo's/NCCL's threads stop before the interpreter does (left running,
    # they can abort a process at exit after all the work is done).
    PartialState().destroy_process_group()
