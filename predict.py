"""Predict the emotion your own images evoke: one JSONL line per image, and a summary.

    python predict.py --model runs/emovit-offline photos/ 'more/**/*.jpg' extra.png --output predictions.jsonl

    python predict.py --model runs/emovit-offline photos/ --explain --preset label --top_k 3 --output explained.jsonl

    python predict.py --model runs/emovit-offline photos/ --method generate --output - | head   # lines to stdout

    accelerate launch --num_processes 8 predict.py --model runs/emovit --dtype bfloat16 --batch_size 32 photos/

    python predict.py --model runs/emovit --dtype bfloat16 --quantization 4bit photos/   # 4-bit frozen towers

    python predict.py configs/predict.yaml   # the same arguments (with `paths: [...]`) from one JSON or YAML file

PATHs are image files, folders (searched recursively) and glob patterns (quote them; `**` crosses folders), in any
mix, before or after the flags. Each PATH must yield an image: a missing path, an empty folder or a pattern matching
nothing stops the run before the model loads. Inside folders, files are taken by extension (jpg, jpeg, png, bmp, gif,
webp, tif, tiff); the others are counted in the summary.

Output (`--output`, default predictions.jsonl; `-` for stdout), written whole at the end (temporary file + rename);
an output that is one of the images, a file of the model folder, or an image (by name or content) is refused:
one line per image found, in sorted path order, whatever the number of processes:
    {"path", "label", "scores": [{"label", "score"}, ...]}   scores sorted high to low, --top_k of them (default all)
    + "text" with --method generate; + "explanation", "mentioned", "agreement" with --explain
    {"path", "error"}   an image that could not be read (not an image, truncated, empty, over --max_image_pixels,
                        a link to nothing, a named pipe or a device: never opened) or that the processor refuses
                        (1x1); counted and listed in the summary, never fatal
The summary (label counts, predicted / skipped with reasons, images/s) is printed at the end; the exit status is 1
when no image could be predicted.
"""

import dataclasses
import json
import sys

from accelerate import PartialState
from transformers import HfArgumentParser

from emovit.inference.arguments import PredictArguments
from emovit.inference.files import check_output, find_images
from emovit.inference.loading import check_max_new_tokens, read_config
from emovit.inference.predict import predict_images, write_predictions
from emovit_utils.commands import is_argument_file, read_argument_file, run_command


# Words HfArgumentParser reads as a boolean flag's value (`--explain true`).
BOOL_WORDS = {"yes", "no", "true", "false", "y", "n", "t", "f", "1", "0"}


def parse_arguments(argv: list[str]) -> PredictArguments:
    """Flags and PATHs, or one JSON / YAML file; anything unknown is a usage error (exit status 2)."""
    parser = HfArgumentParser(PredictArguments, usage="predict.py --model MODEL [flags] PATH [PATH ...]")
    try:
        if is_argument_file(argv):
            (args,) = read_argument_file(parser, argv[0], "predict.py")
            return args
        # A boolean flag takes an optional value, so `--explain photos/` would read the folder as that value: a bare
        # boolean flag gets its `true` written out.
        bool_flags = {f"--{f.name}" for f in dataclasses.fields(PredictArguments) if f.type is bool}
        spelled = []
        for i, arg in enumerate(argv):
            spelled.append(arg)
            if arg in bool_flags and (i + 1 == len(argv) or argv[i + 1].lower() not in BOOL_WORDS):
                spelled.append("true")
        args, rest = parser.parse_args_into_dataclasses(args=spelled, return_remaining_strings=True)
    except ValueError as e:  # a value that __post_init__ refuses
        parser.error(str(e))
    unknown = [arg for arg in rest if arg.startswith("-")]
    if unknown:
        parser.error(f"unknown flag(s) {' '.join(unknown)}; `python predict.py --help` lists the flags (a PATH that "
                     "starts with '-' can be written as ./-name).")
    args.paths += rest  # the strings that are not flags are the PATHs
    return args


def main(argv=None) -> None:
    args = parse_arguments(sys.argv[1:] if argv is None else list(argv))
    check_max_new_tokens(read_config(args.model), args.max_new_tokens)  # the model's config only, no weights yet

    # ---- images and the output: every PATH checked, and the output kept off them, before the model loads
    files = find_images(args.paths)
    check_output(args.output, files, args.model)

    # ---- prediction on every process; the main process gets all lines
    lines, summary = predict_images(args, files)
    if not PartialState().is_main_process:
        return

    # ---- output and summary
    out = sys.stderr if args.output == "-" else sys.stdout
    if args.output == "-":
        sys.stdout.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    else:
        write_predictions(args.output, lines)
    print_summary(summary, args, out)
    if summary["num_predicted"] == 0:
        sys.exit(f"predict.py: error: none of the {summary['num_images']} images could be predicted (reasons above).")


def print_summary(summary: dict, args: PredictArguments, out) -> None:
    print(f"predicted {summary['num_predicted']} of {summary['num_images']} images "
          f"({summary['num_skipped']} skipped) in {summary['seconds']:.1f} s: "
          f"{summary['images_per_second']:.2f} images/s on {summary['num_processes']} process(es)", file=out)
    counts = ", ".join(f"{label} {count}" for label, count in summary["label_counts"].items())
    print(f"labels: {counts or 'none'}" + (f"; invalid answers {summary['num_invalid']}"
                                          if args.method == "generate" else ""), file=out)
    if "agreement_counts" in summary:
        print("explanations: " + ", ".join(f"{k} {v}" for k, v in summary["agreement_counts"].items()), file=out)
        if summary["names_other"]:
            print(f"explanations naming another emotion than their label (\"agreement\": \"names_other\"): "
                  f"{', '.join(summary['names_other'][:5])}{' ...' if len(summary['names_other']) > 5 else ''}",
                  file=out)
    if summary["skipped"]:
        print(f"skipped {summary['num_skipped']} images (lines with \"error\" in the output):", file=out)
        for line in summary["skipped"][:10]:
            print(f"  {line['path']}: {line['error']}", file=out)
        if summary["num_skipped"] > 10:
            print(f"  ... and {summary['num_skipped'] - 10} more", file=out)
    if summary["not_images"]:
        print(f"passed over {len(summary['not_images'])} files that are not images by extension, e.g. "
              f"{summary['not_images'][0]}", file=out)
    if args.output != "-":
        print(f"wrote {args.output}", file=out)


if __name__ == "__main__":
    run_command("predict.py", main)  # bad input (a PATH, the output, the model folder): one line saying what to do
    PartialState().destroy_process_group()  # a launch ends cleanly (see evaluate.py)
