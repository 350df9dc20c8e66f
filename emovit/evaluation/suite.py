"""A suite of evaluations: one model on a list of (dataset, format, split, label map, ...) entries, run one after
another, each into its own folder as a single evaluation writes it, then one table of all results
(`suite_results.md` and `suite_results.json`, a row per entry).

The suite file (YAML or JSON) is a list of entries, or a mapping with `defaults` (applied to every entry) and
`entries`. An entry holds `name` (its output folder and table row), `dataset`, and any other evaluation argument
(`dataset_format`, `split`, `label_map`, `method`, `skip_uncovered_labels`, `batch_size`, ...), but not `model` or
`output_dir`, which the suite sets. Relative dataset paths are read from the suite file's folder. Every dataset path is
checked before any work: a missing one stops the suite with the list of all missing ones, or, with `skip_missing`,
becomes a table row that says so. So are the output folders: neither `output_dir` nor an entry's folder in it may be
the model, the suite file, a label map or a dataset, or lie inside a dataset. An entry with `skip: <reason>` is not
evaluated (its dataset is not checked) and becomes a row that gives the reason: a task of a benchmark's grouping that
the model cannot express stays visible in the table instead of silently missing.

The mapping may also hold `groups`: group name -> list of entry names (an entry may be in several groups or in none).
Each group adds a row to the table's group section: the mean over its evaluated tasks of accuracy and macro-F1 (and
weighted F1 where the entries report it), and ECE (10 equal-width bins of the top-1 probability), Brier and AUROC of
confidence against correctness computed over the group's pooled predictions, as VECBench reports its groups. Pooled,
not a mean of per-task values: a group is judged with one confidence threshold across its tasks, so its calibration
is that of the confidences it pools, and pooling keeps small tasks (a few hundred images) from swinging a 10-bin ECE.
"""

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from accelerate import PartialState

from emovit_utils.files import atomic_write_text, check_output_path

from .arguments import EvalArguments
from .metric import metric_functions
from .report import markdown_table
from .run import evaluate_model


logger = logging.getLogger(__name__)

# Keys an entry may not set: the suite decides them for every entry.
SUITE_OWNED = ("model", "output_dir")
ENTRY_KEYS = ("name", "skip") + tuple(f.name for f in dataclasses.fields(EvalArguments) if f.name not in SUITE_OWNED)
# Columns every row has, then metrics.json's scalars shown when some entry reports them (calibration, KL, ...).
DESCRIPTION_COLUMNS = ("name", "dataset_format", "split", "label_map", "method")
METRIC_COLUMNS = ("num_images", "num_skipped", "accuracy", "macro_f1")
BASE_COLUMNS = DESCRIPTION_COLUMNS + METRIC_COLUMNS
OPTIONAL_COLUMNS = ("weighted_f1", "invalid_rate", "ece", "brier", "nll", "auroc_macro", "kl_divergence")
RESULTS_JSON, RESULTS_MARKDOWN = "suite_results.json", "suite_results.md"
# Group rows: task means, then the pooled calibration; VECBench bins its ECE in 10, not the metric's default 15.
GROUP_MEANS = ("accuracy", "macro_f1", "weighted_f1")
GROUP_COLUMNS = ("group", "tasks", "num_tasks_evaluated", "num_images", "accuracy_mean", "macro_f1_mean",
                 "weighted_f1_mean", "ece_10", "brier", "auroc_correct", "aurc", "status")
# The selective-prediction table: one row per group and threshold, from each group row's "selective".
SELECTIVE_COLUMNS = ("group", "threshold", "coverage", "num_kept", "accuracy", "macro_f1", "weighted_f1")
GROUP_ECE_BINS = 10
GROUP_DEFINITIONS = {
    "accuracy_mean": "mean over the group's evaluated tasks of each task's accuracy (every task weighs the same)",
    "macro_f1_mean": "mean over the group's evaluated tasks of each task's macro-F1",
    "weighted_f1_mean": "mean over the group's evaluated tasks of each task's weighted F1 (when every task has it)",
    "ece_10": "expected calibration error over the group's pooled predictions (training instruction): 10 equal-width "
              "bins of the top-1 probability, each bin's share of images times |accuracy - mean confidence|",
    "brier": "mean over the group's pooled images of the sum over the task's labels of (p - 1[label])^2",
    "auroc_correct": "area under the ROC curve of the top-1 probability separating the group's right answers from its "
                     "wrong ones, over the pooled images (null when all are right or all wrong)",
    "aurc": "area under the risk-coverage curve of the pooled images: the mean over k = 1..n of the error rate of the "
            "k images of highest top-1 probability (ties share their errors)",
    "selective": "per confidence threshold 0.1-0.9, the pooled images whose top-1 probability reaches it: coverage "
                 "(their share), their accuracy, and their macro and weighted F1 over the group's labels pooled by "
                 "name (null when none is kept)",
}


@dataclass
class SuiteArguments:
    model: str = field(metadata={"help": "EmoVIT or InstructBLIP folder, or Hub id, evaluated on every entry."})
    suite: str = field(metadata={"help": "YAML/JSON suite file: a list of entries (name, dataset, dataset_format, "
                                         "split, label_map, method, skip, ...) or {defaults: {...}, entries: [...], "
                                         "groups: {name: [entry names]}}."})
    output_dir: str = field(metadata={"help": "Each entry writes into output_dir/<name>; the table goes here."})
    skip_missing: bool = field(default=False, metadata={
        "help": "Report entries whose dataset path does not exist as skipped rows instead of stopping."})
    batch_size: int | None = field(default=None, metadata={"help": "Default batch size for entries that set none."})
    dtype: str | None = field(default=None, metadata={"help": "Default weights dtype for entries that set none."})
    quantization: str | None = field(
        default=None, metadata={"help": "Default --quantization (4bit, 8bit) for entries that set none."}
    )
    max_images: int | None = field(default=None, metadata={"help": "Default image cap for entries that set none."})


def _suite_content(path: Path):
    """The parsed suite file, its top-level keys checked."""
    if not path.is_file():
        raise FileNotFoundError(f"--suite {str(path)!r} does not exist; pass a YAML or JSON suite file.")
    try:
        content = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        raise ValueError(f"Suite file {path} is not valid YAML/JSON ({e}).") from e
    if isinstance(content, dict):
        unknown = set(content) - {"defaults", "entries", "groups"}
        if unknown:
            raise ValueError(f"Suite file {path}: top-level keys {sorted(unknown)} are not 'defaults', 'entries' or "
                             "'groups'.")
    return content


def read_suite(path: str | Path) -> list[dict]:
    """The entries of suite file `path`, each with the defaults applied and its dataset path made absolute.

    Raises ValueError naming the file, the entry and the key for a malformed suite."""
    path = Path(path)
    content = _suite_content(path)
    defaults = {}
    if isinstance(content, dict):
        defaults, content = content.get("defaults") or {}, content.get("entries")
        if not isinstance(defaults, dict):
            raise ValueError(f"Suite file {path}: 'defaults' is a {type(defaults).__name__}; it must be a mapping.")
    if not isinstance(content, list) or not content:
        raise ValueError(f"Suite file {path} holds no entries; it must be a non-empty list of entries (or a mapping "
                         "with 'entries').")
    entries, names = [], set()
    for position, raw in enumerate(content):
        where = f"Suite file {path}, entry {position}"
        if not isinstance(raw, dict):
            raise ValueError(f"{where} is {raw!r}; each entry must be a mapping with at least name and dataset.")
        entry = {**defaults, **raw}
        owned = [key for key in entry if key in SUITE_OWNED]
        unknown = [key for key in entry if key not in ENTRY_KEYS and key not in SUITE_OWNED]
        if owned or unknown:
            raise ValueError(f"{where} ({entry.get('name')!r}): keys {owned + unknown} are not allowed; model and "
                             f"output_dir come from the command line, and an entry may set {list(ENTRY_KEYS)}.")
        for key in ("name", "dataset"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ValueError(f"{where}: {key!r} is {entry.get(key)!r}; every entry needs a non-empty string.")
        if entry["name"] in names or "/" in entry["name"] or entry["name"] in (".", ".."):
            raise ValueError(f"{where}: name {entry['name']!r} is repeated or is not a plain folder name; names "
                             "must be unique folder names.")
        if "skip" in entry and (not isinstance(entry["skip"], str) or not entry["skip"].strip()):
            raise ValueError(f"{where} ({entry['name']!r}): 'skip' is {entry['skip']!r}; give the reason the entry "
                             "is not evaluated as a non-empty string, or remove the key.")
        names.add(entry["name"])
        entry["dataset"] = str((path.parent / entry["dataset"]).resolve())
        entries.append(entry)
    return entries


def read_groups(path: str | Path, entries: list[dict]) -> dict[str, list[str]]:
    """The `groups` of suite file `path` (group name -> entry names, in the file's order); {} without any.

    Raises ValueError naming the file and group for a group that is not a non-empty list of `entries`' names."""
    path = Path(path)
    content = _suite_content(path)
    groups = content.get("groups") if isinstance(content, dict) else None
    if groups is None:
        return {}
    if not isinstance(groups, dict) or not groups:
        raise ValueError(f"Suite file {path}: 'groups' is {groups!r}; it must be a non-empty mapping of group name "
                         "to a list of entry names, e.g. {sentiment: [fi-2, webemo-2]}.")
    names = [entry["name"] for entry in entries]
    checked = {}
    for group, members in groups.items():
        where = f"Suite file {path}, group {group!r}"
        if not isinstance(group, str) or not group.strip():
            raise ValueError(f"{where}: a group name must be a non-empty string.")
        if not isinstance(members, list) or not members:
            raise ValueError(f"{where} is {members!r}; a group must list at least one entry name. Add its entries "
                             "or remove the group.")
        unknown = [member for member in members if member not in names]
        if unknown:
            raise ValueError(f"{where}: {unknown} are not entry names of this suite ({names}). Fix the spelling or "
                             "add those entries.")
        if len(set(members)) != len(members):
            raise ValueError(f"{where} lists an entry more than once ({members}); list each entry once.")
        checked[group] = list(members)
    return checked


def run_suite(args: SuiteArguments) -> dict:
    """Runs every entry of `args.suite` on `args.model`; returns (and on the main process writes) the table as
    `{"model", "suite", "rows"}`, plus `groups` and `group_definitions` on the main process when the file has groups
    (their rows read the predictions the main process wrote)."""
    entries = read_suite(args.suite)
    groups = read_groups(args.suite, entries)
    datasets = [entry["dataset"] for entry in entries if "skip" not in entry]
    label_maps = [entry["label_map"] for entry in entries if isinstance(entry.get("label_map"), str)]
    check_output_path("--output_dir", args.output_dir, [args.model, args.suite, *datasets, *label_maps],
                      read_folders=datasets, folder=True)
    missing = [entry for entry in entries if "skip" not in entry and not Path(entry["dataset"]).exists()]
    if missing and not args.skip_missing:
        listing = "; ".join(f"{entry['name']}: {entry['dataset']}" for entry in missing)
        raise FileNotFoundError(f"Suite {args.suite}: {len(missing)} of {len(entries)} dataset paths do not exist "
                                f"({listing}). Edit the paths in the suite file, remove those entries, or pass "
                                "--skip_missing true to report them as skipped rows.")
    overrides = {key: getattr(args, key) for key in ("batch_size", "dtype", "quantization", "max_images")
                 if getattr(args, key) is not None}
    output_dir = Path(args.output_dir)
    # Every entry's arguments are checked (its output folder among them) before the first evaluation starts, so a
    # wrong value in the last entry does not surface after all the others have been evaluated.
    arguments_of = {}
    for position, entry in enumerate(entries):
        if entry in missing or "skip" in entry:
            continue
        settings = {key: value for key, value in entry.items() if key not in ("name", "skip")}
        try:
            arguments_of[entry["name"]] = EvalArguments(model=args.model, output_dir=str(output_dir / entry["name"]),
                                                        **{**overrides, **settings})
        except ValueError as e:
            raise ValueError(f"Suite file {args.suite}, entry {position} ({entry['name']!r}): {e}") from e
    rows = []
    for entry in entries:
        settings = {key: value for key, value in entry.items() if key not in ("name", "skip")}
        row = {"name": entry["name"], "dataset": entry["dataset"]}
        if "skip" in entry:
            rows.append({**row, **_entry_columns(settings), "status": f"skipped: {entry['skip']}"})
            logger.warning("suite entry %s skipped: %s", entry["name"], entry["skip"])
            continue
        if entry in missing:
            rows.append({**row, **_entry_columns(settings), "status": "skipped: dataset path does not exist"})
            logger.warning("suite entry %s skipped: %s does not exist", entry["name"], entry["dataset"])
            continue
        arguments = arguments_of[entry["name"]]
        logger.info("suite entry %s: %s", entry["name"], entry["dataset"])
        metrics = evaluate_model(arguments)
        rows.append({**row, **_entry_columns(dataclasses.asdict(arguments)), "status": "evaluated",
                     **{key: metrics[key] for key in METRIC_COLUMNS + OPTIONAL_COLUMNS if key in metrics}})
    table = {"model": args.model, "suite": str(Path(args.suite).resolve()), "rows": rows}
    if PartialState().is_main_process:
        # The group rows read the entries' predictions.jsonl, which only the main process wrote.
        if groups:
            table["groups"] = [group_row(name, members, rows, output_dir) for name, members in groups.items()]
            table["group_definitions"] = GROUP_DEFINITIONS
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output_dir / RESULTS_JSON, json.dumps(table, indent=2))
        atomic_write_text(output_dir / RESULTS_MARKDOWN, format_table(table))
    return table


def _entry_columns(settings: dict) -> dict:
    """The entry's description columns, with EvalArguments' defaults for what it leaves unset."""
    defaults = {f.name: f.default for f in dataclasses.fields(EvalArguments) if f.default is not dataclasses.MISSING}
    return {key: settings.get(key, defaults.get(key)) for key in ("dataset_format", "split", "label_map", "method")}


def group_row(name: str, members: list[str], rows: list[dict], output_dir: Path) -> dict:
    """The table's row for group `name`: the means of the `GROUP_MEANS` over its evaluated entries (`rows`) and the
    calibration (`GROUP_DEFINITIONS`) of their pooled predictions, read from `output_dir/<entry>/predictions.jsonl`.
    Calibration needs every evaluated entry's probabilities (`method: score`); otherwise it is None."""
    by_name = {row["name"]: row for row in rows}
    evaluated = [member for member in members if by_name[member]["status"] == "evaluated"]
    left_out = [member for member in members if member not in evaluated]
    row = {"group": name, "tasks": ", ".join(members), "num_tasks_evaluated": len(evaluated),
           "num_images": sum(by_name[member]["num_images"] for member in evaluated)}
    for key in GROUP_MEANS:
        values = [by_name[member].get(key) for member in evaluated]
        row[f"{key}_mean"] = sum(values) / len(values) if values and None not in values else None
    row.update(pooled_calibration([output_dir / member / "predictions.jsonl" for member in evaluated]))
    if not evaluated:
        row["status"] = "no task evaluated"
    elif left_out:
        row["status"] = f"{len(evaluated)} of {len(members)} tasks; not evaluated: {', '.join(left_out)} (see rows)"
    else:
        row["status"] = "evaluated"
    return row


def pooled_calibration(prediction_files: list[Path]) -> dict:
    """ECE (10 bins), Brier and AUROC of confidence against correctness, and selective prediction (accuracy, F1 and
    coverage at each confidence threshold, AURC) over the training instruction's lines of every file in
    `prediction_files` pooled; None each when there are none or a file has no probabilities.

    Labels are pooled by name: each line's probabilities go into the columns of the group's labels (the union of
    every task's, in order of first appearance), 0 for labels its task lacks. The top-1 probability, the answer and
    each image's Brier term stay what they were, and a binary task's "positive" stays apart from an emotion task's
    labels in the pooled F1."""
    empty = {"ece_10": None, "brier": None, "auroc_correct": None, "aurc": None, "selective": None}
    lines = []
    for path in prediction_files:
        for text in path.read_text().splitlines():
            line = json.loads(text)
            if line.get("prompt_variant", 0) != 0:
                continue
            if "scores" not in line:
                return empty
            lines.append(line)
    if not lines:
        return empty
    labels = list(dict.fromkeys(label for line in lines for label in line["scores"]))
    column = {label: k for k, label in enumerate(labels)}
    probabilities = np.zeros((len(lines), len(labels)), dtype=np.float64)
    for i, line in enumerate(lines):
        for label, probability in line["scores"].items():
            probabilities[i, column[label]] = probability
    references = np.array([column[line["label"]] for line in lines])
    functions = metric_functions()
    calibration = functions.calibration_metrics(probabilities, references, len(labels), num_bins=GROUP_ECE_BINS)
    confidence, predictions = probabilities.max(axis=1), probabilities.argmax(axis=1)
    selective = functions.selective_metrics(confidence, predictions, references, len(labels))
    return {"ece_10": calibration["ece"], "brier": calibration["brier"],
            "auroc_correct": functions.one_vs_rest_auroc(confidence, predictions == references),
            "aurc": selective["aurc"], "selective": selective["selective"]}


def format_table(table: dict) -> str:
    """The suite's markdown table: a row per entry, the base columns, then the optional metrics some entry has; with
    groups, a second table of a row per group."""
    rows = table["rows"]
    optional = [key for key in OPTIONAL_COLUMNS if any(row.get(key) is not None for row in rows)]
    columns = list(BASE_COLUMNS) + optional + ["status"]
    text = f"Model: `{table['model']}`; suite: `{table['suite']}`\n\n" + markdown_table(rows, columns, decimals=4)
    if table.get("groups"):
        groups = table["groups"]
        columns = [key for key in GROUP_COLUMNS
                   if key != "weighted_f1_mean" or any(group.get(key) is not None for group in groups)]
        text += ("\nGroups (task means; ECE over 10 bins, Brier and AUROC of confidence vs correctness on the pooled "
                 "predictions):\n\n" + markdown_table(groups, columns, decimals=4))
        selective = [{"group": group["group"], **threshold}
                     for group in groups for threshold in group["selective"] or []]
        if selective:
            text += ("\nSelective prediction (pooled predictions of each group whose top-1 probability is at least the "
                     "threshold; accuracy and F1 empty where none is kept):\n\n"
                     + markdown_table(selective, list(SELECTIVE_COLUMNS), decimals=4))
    return text
