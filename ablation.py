"""Which instruction types make EmoVIT better, and on which base model? Trains one variant per list of types on the
same inputs and seed, then writes one table of classification and reasoning metrics per variant, and one of its
accuracy under each wording of the categorical instruction.

    python ablation.py --output_dir runs/ablation        # the offline miniature (CPU, a few minutes per variant)

    python ablation.py --output_dir runs/ablation-emoset --model_name_or_path Salesforce/instructblip-vicuna-7b \
        --dataset data/emovit-instructions --launcher "accelerate launch --num_processes 8" \
        -- --per_device_train_batch_size 8 --bf16 --cache_vision_features --num_train_epochs 1

With --base_models, every variant is trained on each base model, and the tables get one row per (base model, variant)
with the base model and its language model's kind in front: the paper's backbone comparison (Vicuna-7B, Vicuna-13B,
FlanT5-XL). `tiny` and `tiny-t5` name the offline miniature's two tiny bases (Llama, T5), trained on the same data:

    python ablation.py --output_dir runs/ablation-backbones --base_models tiny,tiny-t5 \
        --variants "categorical,conversation,reasoning"

    python ablation.py --output_dir runs/ablation-backbones-emoset --dataset data/emovit-instructions \
        --base_models Salesforce/instructblip-vicuna-7b,Salesforce/instructblip-flan-t5-xl \
        --variants "categorical,conversation,reasoning" --launcher "accelerate launch --num_processes 8" \
        -- --per_device_train_batch_size 8 --bf16 --cache_vision_features --num_train_epochs 1

Variants (default): categorical only; categorical then conversation; categorical, conversation, then reasoning (the
paper's progressive order). Each is `train.py --types T --curriculum T --test_reasoning` with the flags after `--`
(the offline default's flags when neither --model_name_or_path nor --dataset is given, on inputs built once), so every
variant gets the same steps and seed, and is evaluated on the test split by score, generate and its explanations
(`evaluate.py --task reasoning`); then `evaluate.py --prompt_variants 5` measures its instruction sensitivity.
Writes OUTPUT_DIR/ablation.md (the command, both tables) and ablation.json; each variant's folder (OUTPUT_DIR/VARIANT,
or OUTPUT_DIR/BASE/VARIANT with --base_models) keeps its model and evaluation files.
"""

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from emovit.evaluation.ablation import PROMPTS_FOLDER, prompt_row, variant_row
from emovit.evaluation.report import markdown_table
from emovit.training.arguments import OFFLINE_DEFAULT_ARGS
from emovit.training.offline import build_offline_default
from emovit_utils.commands import run_command
from emovit_utils.files import atomic_write_text


HERE = Path(__file__).resolve().parent
# --base_models names of the offline miniature's tiny bases, and the language model each is built with.
OFFLINE_BASES = {"tiny": "llama", "tiny-t5": "t5"}


@dataclass
class AblationArguments:
    output_dir: str = field(default="runs/ablation", metadata={"help": "One folder per variant, and the tables."})
    variants: str = field(
        default="categorical;categorical,conversation;categorical,conversation,reasoning",
        metadata={"help": "Variants separated by ';', each a comma-separated list of instruction types (trained in "
                          "that order)."},
    )
    model_name_or_path: str | None = field(default=None, metadata={"help": "Base model (None: the offline tiny base)."})
    base_models: str | None = field(
        default=None,
        metadata={"help": "Base models to compare, comma-separated: folders / Hub ids (with --dataset), or the offline "
                          f"tiny bases {', '.join(OFFLINE_BASES)} (without --dataset). Every variant is trained on "
                          "each. None: the one base of --model_name_or_path."},
    )
    dataset: str | None = field(default=None, metadata={"help": "Instruction data (None: the offline synthetic data)."})
    prompt_variants: int = field(default=5, metadata={"help": "Instruction wordings for the sensitivity table."})
    launcher: str = field(default="python", metadata={"help": "What runs train.py and evaluate.py: 'python' (this "
                                                              "interpreter) or a launcher such as 'accelerate launch'."})
    seed: int = field(default=42)
    offline_images_per_class: int = field(default=150, metadata={"help": "Offline default only."})
    offline_lm_steps: int = field(default=400, metadata={"help": "Offline default only."})


def run(launcher: str, script: str, arguments: list[str]) -> float:
    """Runs `script` with `arguments` under `launcher`; returns its wall time. A failure stops the ablation."""
    command = ([sys.executable] if launcher == "python" else shlex.split(launcher)) + [str(HERE / script)] + arguments
    print("$ " + shlex.join(command), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command)
    if done.returncode != 0:
        raise ValueError(f"{script} exited with status {done.returncode} (its output is above); the ablation stops.")
    return time.perf_counter() - started


def base_model_names(args: AblationArguments) -> list[str]:
    """The --base_models list, checked: no name twice (nor two whose folders, their last path parts, would be one),
    no --model_name_or_path beside it, and either all offline tiny bases (without --dataset) or none (with it)."""
    names = [name.strip() for name in args.base_models.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--base_models {args.base_models!r} names no base model; separate them with ','.")
    folders = [Path(name).name for name in names]
    if len(set(folders)) != len(folders):
        raise ValueError(f"--base_models {args.base_models!r}: two base models would share the folder named by their "
                         f"last path part ({folders}); name each base once, or copy one to a folder of another name.")
    if args.model_name_or_path is not None:
        raise ValueError(f"--model_name_or_path {args.model_name_or_path!r} and --base_models {args.base_models!r} "
                         "both name the base model; put every base in --base_models and drop --model_name_or_path.")
    offline = [name in OFFLINE_BASES for name in names]
    if any(offline) and (args.dataset is not None or not all(offline)):
        raise ValueError(f"--base_models {args.base_models!r}: the tiny bases ({', '.join(OFFLINE_BASES)}) train on "
                         "the offline miniature's own data, so they go without --dataset and without other base "
                         "models; run them and real base models as two ablations.")
    if not any(offline) and args.dataset is None:
        raise ValueError(f"--base_models {args.base_models!r} names base models without --dataset; pass the "
                         f"instruction data to train them on, or compare the tiny bases ({', '.join(OFFLINE_BASES)}).")
    return names


def inputs(args: AblationArguments, model: str | None, output_dir: Path) -> list[str]:
    """train.py's flags for the model and the data: the offline default's (building its inputs under OUTPUT_DIR once,
    the tiny base of `model`'s kind beside the shared data) when no real model or dataset is given."""
    if args.dataset is None and (model is None or model in OFFLINE_BASES):
        language_model = OFFLINE_BASES.get(model, "llama")  # no model at all: the offline default's own base
        dataset, built = build_offline_default(output_dir / "offline-inputs", args.offline_images_per_class, args.seed,
                                               args.offline_lm_steps, language_model)
        return OFFLINE_DEFAULT_ARGS[2:] + ["--dataset", dataset, "--model_name_or_path", built]  # all but --output_dir
    return [flag for name, value in (("model_name_or_path", model), ("dataset", args.dataset)) if value is not None
            for flag in (f"--{name}", value)]


def main(argv: list[str]) -> dict:
    # The ablation's own flags, then `--` and the flags every train.py run gets.
    own, passed = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    (args,) = HfArgumentParser(AblationArguments).parse_args_into_dataclasses(args=own)
    variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    if not variants:
        raise ValueError(f"--variants {args.variants!r} names no variant; separate type lists with ';'.")
    output_dir = Path(args.output_dir)

    # ---- inputs: the same for every variant (the offline ones built once, here); one run list per base model
    shared = ["--seed", str(args.seed)]
    if args.base_models is None:
        bases = {None: inputs(args, args.model_name_or_path, output_dir) + shared}
    else:
        bases = {name: inputs(args, name, output_dir) + shared for name in base_model_names(args)}

    # ---- one training (with its held-out evaluations) and one sensitivity run per base model and variant
    rows, prompt_rows = [], []
    for base_model, base in bases.items():
        for types in variants:
            name = "+".join(t.strip() for t in types.split(","))
            folder = output_dir / name if base_model is None else output_dir / Path(base_model).name / name
            seconds = run(args.launcher, "train.py", base + passed + ["--types", types, "--curriculum", types,
                                                                      "--test_reasoning", "--output_dir", str(folder)])
            rows.append(variant_row(name, types, folder, seconds, base_model))
            eval_root = json.loads((folder / "eval" / "metrics.json").read_text())["arguments"]["dataset"]
            run(args.launcher, "evaluate.py", ["--model", str(folder), "--dataset", eval_root, "--split", "test",
                                               "--prompt_variants", str(args.prompt_variants),
                                               "--output_dir", str(folder / PROMPTS_FOLDER)])
            prompt_rows.append(prompt_row(name, folder, base_model))

    # ---- the tables
    command = "python ablation.py " + shlex.join(argv)
    compared = "Instruction types" if args.base_models is None else "Base models and instruction types"
    text = (f"Command: `{command}`\n\n{compared} (test split; train time is the whole train.py run):\n\n"
            f"{markdown_table(rows, decimals=3)}\nInstruction sensitivity (score accuracy under each categorical "
            f"instruction wording, `--prompt_variants {args.prompt_variants}`):\n\n"
            f"{markdown_table(prompt_rows, decimals=3)}")
    atomic_write_text(output_dir / "ablation.md", text)
    atomic_write_text(output_dir / "ablation.json", json.dumps({"command": command, "variants": rows,
                                                                "prompt_sensitivity": prompt_rows}, indent=1))
    print(text + f"\nwrote {output_dir / 'ablation.md'}, {output_dir / 'ablation.json'}")
    return {"variants": rows, "prompt_sensitivity": prompt_rows}


if __name__ == "__main__":
    run_command("ablation.py", main, sys.argv[1:])
