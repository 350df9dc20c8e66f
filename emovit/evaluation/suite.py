"""A suite of evaluations: one model on a list of (dataset, format, split, label map, ...) entries, run one after
another, each into its own folder as a single evaluation writes it, then one table of all results
(`suite_results.md` and `suite_results.json`, a row per entry).

The suite file (YAML or JSON) is a list of entries, or a mapping with `defaults` (applied to every entry) and
`entries`. An entry holds `name` (its output folder and table row), `dataset`, and any other evaluation argument
(`dataset_format`, `split`, `label_map`, `method`, `skip_uncovered_labels`, `batch_size`, ...), but not `model` or
`output_dir`, which the suite sets. Relative dataset paths are read from the suite file's folder. Every dataset path is
checked before any work: a missing one stops the suite with the list of all missing ones, or, with `skip_missing`,
becomes a table row that says so. So are the output folders: neither `output_dir` nor an entry's folder in it may be
the model, the suite file, a label map or a dataset, or lie inside a dataset.
"""

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from accelerate import PartialState

from emovit_utils.files import atomic_write_text, check_output_path

from .arguments import EvalArguments
from .report import markdown_table
from .run import evaluate_model


logger = logging.getLogger(__name__)

# Keys an entry may not set: the suite decides them for every entry.
SUITE_OWNED = ("model", "output_dir")
ENTRY_KEYS = ("name",) + tuple(f.name for f in dataclasses.fields(EvalArguments) if f.name not in SUITE_OWNED)
# Columns every row has, then metrics.json's scalars shown when some entry reports them (calibration, KL, ...).
DESCRIPTION_COLUMNS = ("name", "dataset_format", "split", "label_map", "method")
METRIC_COLUMNS = ("num_images", "num_skipped", "accuracy", "macro_f1")
BASE_COLUMNS = DESCRIPTION_COLUMNS + METRIC_COLUMNS
OPTIONAL_COLUMNS = ("invalid_rate", "ece", "brier", "nll", "auroc_macro", "kl_divergence")
RESULTS_JSON, RESULTS_MARKDOWN = "suite_results.json", "suite_results.md"


@dataclass
class SuiteArguments:
    model: str = field(metadata={"help": "EmoVIT or InstructBLIP folder, or Hub id, evaluated on every entry."})
    suite: str = field(metadata={"help": "YAML/JSON suite file: a list of entries (name, dataset, dataset_format, "
                                         "split, label_map, method, ...) or {defaults: {...}, entries: [...]}."})
    output_dir: str = field(metadata={"help": "Each entry writes into output_dir/<name>; the table goes here."})
    skip_missing: bool = field(default=False, metadata={
        "help": "Report entries whose dataset path does not exist as skipped rows instead of stopping."})
    batch_size: int | None = field(default=None, metadata={"help": "Default batch size for entries that set none."})
    dtype: str | None = field(default=None, metadata={"help": "Default weights dtype for entries that set none."})
    quantization: str | None = field(
        default=None, metadata={"help": "Default --quantization (4bit, 8bit) for entries that set none."}
    )
    max_images: int | None = field(default=None, metadata={"help": "Default image cap for entries that set none."})


def read_suite(path: str | Path) -> list[dict]:
    """The entries of suite file `path`, each with the defaults applied and its dataset path made absolute.

    Raises ValueError naming the file, the entry and the key for a malformed suite."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--suite {str(path)!r} does not exist; pass a YAML or JSON suite file.")
    try:
        content = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        raise ValueError(f"Suite file {path} is not valid YAML/JSON ({e}).") from e
    defaults = {}
    if isinstance(content, dict):
        unknown = set(content) - {"defaults", "entries"}
        if unknown:
            raise ValueError(f"Suite file {path}: top-level keys {sorted(unknown)} are not 'defaults' or 'entries'.")
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
        names.add(entry["name"])
        entry["dataset"] = str((path.parent / entry["dataset"]).resolve())
        entries.append(entry)
    return entries


def run_suite(args: SuiteArguments) -> dict:
    """Runs every entry of `args.suite` on `args.model`; returns (and on the main process writes) the table as
    `{"model", "suite", "rows"}`."""
    entries = read_suite(args.suite)
    datasets = [entry["dataset"] for entry in entries]
    label_maps = [entry["label_map"] for entry in entries if isinstance(entry.get("label_map"), str)]
    check_output_path("--output_dir", args.output_dir, [args.model, args.suite, *datasets, *label_maps],
                      read_folders=datasets, folder=True)
    missing = [entry for entry in entries if not Path(entry["dataset"]).exists()]
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
        if entry in missing:
            continue
        settings = {key: value for key, value in entry.items() if key != "name"}
        try:
            arguments_of[entry["name"]] = EvalArguments(model=args.model, output_dir=str(output_dir / entry["name"]),
                                                        **{**overrides, **settings})
        except ValueError as e:
            raise ValueError(f"Suite file {args.suite}, entry {position} ({entry['name']!r}): {e}") from e
    rows = []
    for entry in entries:
        settings = {key: value for key, value in entry.items() if key != "name"}
        row = {"name": entry["name"], "dataset": entry["dataset"]}
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
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output_dir / RESULTS_JSON, json.dumps(table, indent=2))
        atomic_write_text(output_dir / RESULTS_MARKDOWN, format_table(table))
    return table


def _entry_columns(settings: dict) -> dict:
    """The entry's description columns, with EvalArguments' defaults for what it leaves unset."""
    defaults = {f.name: f.default for f in dataclasses.fields(EvalArguments) if f.default is not dataclasses.MISSING}
    return {key: settings.get(key, defaults.get(key)) for key in ("dataset_format", "split", "label_map", "method")}


def format_table(table: dict) -> str:
    """The suite's markdown table: a row per entry, the base columns, then the optional metrics some entry has."""
    rows = table["rows"]
    optional = [key for key in OPTIONAL_COLUMNS if any(row.get(key) is not None for row in rows)]
    columns = list(BASE_COLUMNS) + optional + ["status"]
    return f"Model: `{table['model']}`; suite: `{table['suite']}`\n\n" + markdown_table(rows, columns, decimals=4)
