"""Publishing: a build output folder -> a Hub-ready folder of Parquet files with a dataset card -> the Hub.

Two steps, so the first can be checked offline: `export_parquet_folder` writes `<config>/train-*.parquet`
(images embedded as bytes) and a README.md whose YAML `configs:` lets `load_dataset(repo, "reasoning")`
work without remote code; `upload_folder` hands that folder to an `HfApi`-like object.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import datasets
from datasets.table import embed_table_storage

from emovit_utils.files import FOLDER_MARKER, atomic_write_folder, atomic_write_text
from emovit_utils.hub import push_folder, write_card

from .build_folder import load_records, read_summary
from .emovit_instructions import CONFIG_NAMES, EmovitInstructions
from .prompts import prompt_texts
from .quality import plot_quality


QUALITY_PLOT_FILE = "quality.png"
# What the export folder's marker says wrote it: a later export replaces only a folder that says so.
EXPORT_KIND = "dataset_builder Hub export"

logger = logging.getLogger(__name__)

LICENCE_NOTE = (
    "The images and attribute annotations come from EmoSet (Yang et al., ICCV 2023) and stay under EmoSet's own "
    "terms of use, which limit them to non-commercial research; this repository does not relicense them. Check "
    "those terms, and that you may redistribute the images, before making a copy of this dataset public. The "
    "instruction text was written by the generator named below."
)


def _card(summary: dict, counts: dict[str, int]) -> tuple[dict, str]:
    """The dataset card's metadata (with the `configs:` that let `load_dataset(repo, name)` find each config's
    Parquet files) and its markdown body."""
    configs = [{"config_name": name, "data_files": [{"split": "train", "path": f"{name}/train-*.parquet"}],
                **({"default": True} if name == "all" else {})} for name in counts]
    metadata = {"license": "other", "task_categories": ["image-text-to-text", "image-classification"],
                "language": ["en"], "pretty_name": "EmoVIT emotion instructions", "configs": configs}
    prompts = prompt_texts(summary.get("response_format_used") or "text")
    hashes = summary.get("prompt_hashes", {})
    rows = "\n".join(f"| {name} | {counts[name]} |" for name in counts)
    generators = "\n".join(f"- {kind}: `{gen}`" for kind, gen in summary.get("generator", {}).items())
    prompt_sections = "\n\n".join(
        f"### {kind} (hash `{hashes[kind]}`)\n\n```text\n{prompts[kind]}\n```" for kind in hashes if kind in prompts
    )
    failed = len(summary.get("failed", []))
    skipped = len(summary.get("skipped", []))
    quality = _quality_section(summary.get("quality") or {})
    return metadata, f"""# EmoVIT emotion instructions

Visual instruction data for emotion understanding, built from EmoSet with `python -m dataset_builder build`
(EmoVIT recipe: categorical instructions without an LLM, conversation and reasoning samples written from
a caption and the image's attributes). One row per question/answer pair.

```python
from datasets import load_dataset
reasoning = load_dataset("<this repo>", "reasoning", split="train")
```

## Counts

| config | rows |
|---|---|
{rows}

Failed LLM requests or replies: {failed}. Skipped input images: {skipped}. Details are in the build's
summary.json.
{quality}
## Generators

{generators}

Captioner: `{summary.get("captioner", "none")}`. Records written by the `template` generator come from
fixed sentence templates, not an LLM.

## Prompts

Each record's `prompt_hash` names the prompt that produced it.

{prompt_sections}

## Fields

`id`, `image`, `emotion` (ClassLabel in EmoSet order), `type`, `conversations` (`from` human/gpt),
`attributes` (EmoSet attributes; `attributes_computed` lists those computed from pixels), `caption`,
`generator`, `prompt_hash`.

## Licence

{LICENCE_NOTE}
"""


def _quality_section(report: dict) -> str:
    """The card's quality section (a table per type and the plot), or nothing for a folder without a report."""
    if not report:
        return ""
    rows = []
    for kind, per_emotion in report["records_per_type_and_emotion"].items():
        words = report["answer_words"][kind]
        distinct = report["question_distinct_n"][kind]
        removed = report["duplicates_removed"].get(kind)
        replies = report["replies"].get(kind)
        rows.append(" | ".join([
            f"| {kind}", str(sum(per_emotion.values())), f"{words['min']} / {words['median']:g} / {words['p90']} / {words['max']}",
            " / ".join("-" if distinct[f"distinct_{n}"] is None else f"{distinct[f'distinct_{n}']:.3f}" for n in (1, 2, 3)),
            f"{removed['exact']} / {removed['near']}" if removed else "-",
            f"{replies['malformed_rate']:.1%} of {replies['replies']}" if replies else "-",
            f"{replies['leak_filter_hits']}" if replies else "-"]) + " |")
    table = "\n".join(rows)
    return f"""
## Quality

| type | records | answer words (min / median / p90 / max) | question distinct-1 / 2 / 3 | duplicates removed (exact / near) | malformed replies | leak filter hits |
|---|---|---|---|---|---|---|
{table}

Duplicates: {report["dedup_rule"]}. Records per emotion, all numbers and examples of the removed pairs are under
`quality` in summary.json. Malformed replies were asked again once; the leak filter refuses replies that talk about
the caption or attributes instead of the image.

![Quality report]({QUALITY_PLOT_FILE})
"""


def export_parquet_folder(dataset_dir: str | os.PathLike, export_dir: str | os.PathLike,
                          cache_dir: str | None = None) -> dict[str, int]:
    """Writes the Hub folder; returns rows per config. Replaces `export_dir` only once it is complete, and only when
    it is new, empty or an earlier export left as it was written; the current folder, `dataset_dir` and the folders
    above it are refused (ValueError, before any work; see `atomic_write_folder`)."""
    summary = read_summary(dataset_dir)
    # Every record checked first, so a damaged line is named with its file and line number (inside the `datasets`
    # builder the same error arrives wrapped in a DatasetGenerationError).
    load_records(dataset_dir)
    counts = {}

    def write(staging: Path):
        with tempfile.TemporaryDirectory() as tmp_cache:
            wanted = [t for t, n in summary["records_per_type"].items() if n > 0]
            # A config without rows would make load_dataset fail, so types the build skipped are left out.
            for name in [c for c in CONFIG_NAMES if c in wanted or c == "all"]:
                builder = EmovitInstructions(config_name=name, data_dir=str(dataset_dir), cache_dir=cache_dir or tmp_cache)
                builder.download_and_prepare()
                dataset = builder.as_dataset(split="train")
                # Parquet on the Hub must carry the image bytes, not paths into a local EmoSet copy.
                dataset = dataset.with_format("arrow").map(embed_table_storage, batched=True, keep_in_memory=True)
                (staging / name).mkdir(parents=True)
                dataset.with_format(None).to_parquet(str(staging / name / "train-00000-of-00001.parquet"))
                counts[name] = len(dataset)
        write_card(staging, *_card(summary, counts))
        if summary.get("quality"):
            plot_quality(summary["quality"], staging / QUALITY_PLOT_FILE)
        public_summary = {k: v for k, v in summary.items() if k not in ("emoset_root",)}
        public_summary["args"] = {k: v for k, v in summary.get("args", {}).items() if k not in ("emoset_root", "output_dir")}
        atomic_write_text(staging / "summary.json", json.dumps(public_summary, indent=2))

    atomic_write_folder(export_dir, write, kind=EXPORT_KIND, protected=[dataset_dir], what="--export_dir")
    logger.info("exported %s to %s", counts, export_dir)
    return counts


def upload_folder(api, export_dir: str | os.PathLike, repo_id: str, private: bool = False,
                  commit_message: str = "Upload EmoVIT instruction data") -> str:
    """Creates the dataset repo if needed and uploads the folder (without the marker of the folder writer). `api` is
    a `huggingface_hub.HfApi`."""
    return push_folder(export_dir, repo_id, repo_type="dataset", private=private, commit_message=commit_message,
                       ignore_patterns=[FOLDER_MARKER], api=api)


def check_loadable(export_dir: str | os.PathLike, config_name: str, expected_rows: int) -> None:
    """Loads one config of an exported folder the way a Hub user would, to fail before uploading."""
    # A private cache: `datasets` can otherwise serve a stale copy cached for another folder of the same name.
    with tempfile.TemporaryDirectory() as cache_dir:
        rows = len(datasets.load_dataset(str(export_dir), config_name, split="train", cache_dir=cache_dir))
    if rows != expected_rows:
        raise RuntimeError(f"{export_dir}: config {config_name!r} loads {rows} rows, expected {expected_rows}; "
                           "the export is broken, do not upload it.")
