# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""Cards and uploads for every folder the project publishes: trained models, converted checkpoints, datasets."""

import os
import re
from pathlib import Path

import yaml

from .files import atomic_write_text


def usage_snippet(repo: str) -> str:
    """How a published EmoVIT model is used, for the cards of trained and converted models: the pipeline one-liner
    first, then the model's own calls."""
    return f"""```python
from transformers import pipeline

classifier = pipeline("visual-emotion-recognition", model="{repo}", trust_remote_code=True)
classifier("photo.jpg", top_k=3)      # [{{"label": "awe", "score": 0.91}}, ...], highest first; all labels by default
classifier("photo.jpg", explain=True)[0]["explanation"]   # why the image evokes its top label
```

In code, with the model and processor:

```python
from transformers import AutoModelForImageTextToText, AutoProcessor
from PIL import Image

model = AutoModelForImageTextToText.from_pretrained("{repo}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)
result = model.classify([Image.open("photo.jpg")], processor, method="score")  # or method="generate"
print(result.labels, result.scores)
result = model.explain([Image.open("photo.jpg")], processor)  # label, scores, explanation, agreement
print(result.labels, result.explanations, result.agreement)
```"""


def write_card(folder: str | os.PathLike, metadata: dict, body: str) -> Path:
    """Writes `folder/README.md`: the Hub's YAML metadata block, then the markdown `body`; whole or not at all."""
    path = Path(folder) / "README.md"
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    atomic_write_text(path, f"---\n{header}---\n\n{body.strip()}\n")
    return path


def model_index(model_name: str, eval_results: list) -> list[dict]:
    """The Hub's `model-index` metadata (`[{name, results: [{task, dataset, metrics}]}]`) for `eval_results`
    (`huggingface_hub.EvalResult`s); results on the same task and dataset (config, split) share one entry."""
    from huggingface_hub.repocard_data import eval_results_to_model_index

    return eval_results_to_model_index(model_name, list(eval_results))


# A card's metadata block: a first line "---", then YAML up to the next line "---". Either line ending is a card's own.
_OPENING = re.compile(r"---[ \t]*(\r?\n)")
_CLOSING = re.compile(r"^---[ \t]*(?:\r?\n|\Z)", re.MULTILINE)
# The model-index key as it starts a line of the metadata block (plain or quoted).
_MODEL_INDEX_KEY = re.compile(r"""(model-index|"model-index"|'model-index')[ \t]*:""")


def _metadata_block(text: str, path: Path) -> tuple[int, int, int, str] | None:
    """Where a card's metadata sits: (start, end) of the YAML between the `---` lines, the offset where the body
    begins after the closing line, and the newline the card uses; None for a card without a metadata block."""
    opening = _OPENING.match(text)
    if opening is None:
        return None
    closing = _CLOSING.search(text, opening.end())
    if closing is None:
        raise ValueError(f"{str(path)!r} opens a YAML metadata block with '---' but never closes it; fix the card.")
    return opening.end(), closing.start(), closing.end(), opening.group(1)


def _parse_metadata(yaml_text: str, path: Path) -> dict:
    try:
        metadata = yaml.safe_load(yaml_text) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"The metadata block of {str(path)!r} is not valid YAML ({e}); fix the card.") from e
    if not isinstance(metadata, dict):
        raise ValueError(f"The metadata block of {str(path)!r} holds a {type(metadata).__name__}, not a mapping.")
    return metadata


def _read_text(path: Path) -> str:
    # Bytes decoded as they are: reading in text mode would turn the card's CRLF line endings into LF.
    return path.read_bytes().decode("utf-8")


def read_card(path: Path) -> tuple[dict, str]:
    """A card's YAML metadata and its markdown body (everything after the metadata block, byte for byte)."""
    text = _read_text(path)
    block = _metadata_block(text, path)
    if block is None:
        return {}, text
    start, end, body_start, newline = block
    body = text[body_start:]
    return _parse_metadata(text[start:end], path), body[len(newline):] if body.startswith(newline) else body


def _model_index_lines(yaml_text: str) -> tuple[int, int] | None:
    """(start, end) in `yaml_text` of the top-level model-index entry: its key line and every line after it that
    is indented, a sequence item or blank/comment inside it (comments and blank lines after its last line belong to
    what follows); None without one."""
    lines = yaml_text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    first = next((i for i, line in enumerate(lines) if _MODEL_INDEX_KEY.match(line)), None)
    if first is None:
        return None
    last = first
    for i in range(first + 1, len(lines)):
        content = lines[i].rstrip("\r\n")
        if not content.strip() or content.startswith("#"):
            continue
        if content[0] not in " \t-":
            break
        last = i
    return offsets[first], offsets[last + 1]


def _updated_card(path: Path, folder: Path, eval_results: list) -> str:
    """The text of `path` (the card of `folder`, which may not exist yet) with `eval_results` merged into its
    model-index; every other byte of an existing card is kept (comments, flow style, line endings, the body)."""
    from huggingface_hub.repocard_data import model_index_to_eval_results

    text = _read_text(path) if path.is_file() else "---\nlibrary_name: transformers\n---\n"
    block = _metadata_block(text, path)
    metadata = {} if block is None else _parse_metadata(text[block[0] : block[1]], path)
    name, results = folder.resolve().name, []
    if metadata.get("model-index"):
        try:
            name, results = model_index_to_eval_results(metadata["model-index"])
        except (KeyError, TypeError) as e:
            raise ValueError(
                f"The model-index of {str(path)!r} cannot be read ({type(e).__name__}: {e}); each result needs "
                "task.type, dataset.type, dataset.name and metrics with type and value. Fix or remove it."
            ) from e
    for new in eval_results:
        same = next((i for i, old in enumerate(results) if old.is_equal_except_value(new)), None)
        if same is None:
            results.append(new)
        else:
            results[same] = new
    index = model_index(name, results)
    newline = "\n" if block is None else block[3]
    entry = yaml.safe_dump({"model-index": index}, sort_keys=False, allow_unicode=True).replace("\n", newline)
    if block is None:  # a card without metadata: a block holding only the model-index goes in front of it
        return f"---{newline}{entry}---{newline}{text}"
    start, end = block[:2]
    lines = _model_index_lines(text[start:end])
    updated = (text[:end] + entry + text[end:] if lines is None
               else text[: start + lines[0]] + entry + text[start + lines[1] :])
    # The splice must read back as the card's metadata with only the model-index changed; a layout it does not
    # follow (a key spread over unindented lines, a repeated key) is refused rather than written wrong.
    check = _metadata_block(updated, path)
    if _parse_metadata(updated[check[0] : check[1]], path) != {**metadata, "model-index": index}:
        raise ValueError(f"The model-index of {str(path)!r} could not be replaced in place: its metadata block is "
                         "laid out in a way this editor does not follow. Put `model-index:` at the start of a line "
                         "with its entries indented below it, or remove it.")
    return updated


def _local_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a local folder; a model card can only be updated in a local copy.")
    return folder


def check_card(folder: str | os.PathLike) -> None:
    """Raises ValueError if `update_card_results(folder, ...)` would fail on the card as it is (not a local folder,
    metadata that is not valid YAML, a model-index it cannot read or replace); writes nothing. A command checks
    the card with this before its long work, so a broken card is reported at once."""
    folder = _local_folder(folder)
    _updated_card(folder / "README.md", folder, [])


def update_card_results(folder: str | os.PathLike, eval_results: list) -> Path:
    """Adds `eval_results` (`huggingface_hub.EvalResult`s) to the `model-index` of `folder/README.md`, whole or
    not at all.

    A result equal to one already there in everything but its value (task, dataset, config, split, metric type,
    name, config and arguments) replaces it in place; the others are appended. Only the model-index entry of the
    metadata is rewritten: every other byte of the card (comments, flow style, line endings, the other keys, the
    body) is kept. Without a README.md, a minimal card is created (the library name, the results).
    """
    folder = _local_folder(folder)
    path = folder / "README.md"
    atomic_write_text(path, _updated_card(path, folder, eval_results))
    return path


def push_folder(folder: str | os.PathLike, repo_id: str, *, repo_type: str = "model", private: bool = False,
                commit_message: str = "Upload with the EmoVIT tools", ignore_patterns=None, api=None) -> str:
    """Creates `repo_id` if needed and uploads `folder` to it; returns the commit URL. `api` is a
    `huggingface_hub.HfApi` (the default) or an object with its `create_repo` / `upload_folder`. Credentials come
    from the Hub client's usual places (`HF_TOKEN`, `hf auth login`), never from this project's files."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id=repo_id, repo_type=repo_type, private=private, exist_ok=True)
    result = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                               commit_message=commit_message, ignore_patterns=ignore_patterns)
    return str(result)


__all__ = ["check_card", "model_index", "push_folder", "read_card", "update_card_results", "usage_snippet", "write_card"]
