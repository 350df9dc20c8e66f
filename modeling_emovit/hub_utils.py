# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""Cards and uploads for every folder the project publishes: trained models, converted checkpoints, datasets.

In the model package, beside the converter that uses it, because the model package can import nothing else of the
project; training and dataset publishing import it from here.
"""

import os
from pathlib import Path

import yaml

from .io_utils import atomic_write_text


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


def read_card(path: Path) -> tuple[dict, str]:
    """A card's YAML metadata and its markdown body (everything after the metadata block, byte for byte)."""
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---", 4)
    if end < 0:
        raise ValueError(f"{str(path)!r} opens a YAML metadata block with '---' but never closes it; fix the card.")
    try:
        metadata = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"The metadata block of {str(path)!r} is not valid YAML ({e}); fix the card.") from e
    if not isinstance(metadata, dict):
        raise ValueError(f"The metadata block of {str(path)!r} holds a {type(metadata).__name__}, not a mapping.")
    body = text[end + 4 :]
    return metadata, body[1:] if body.startswith("\n") else body


def update_card_results(folder: str | os.PathLike, eval_results: list) -> Path:
    """Adds `eval_results` (`huggingface_hub.EvalResult`s) to the `model-index` of `folder/README.md`, whole or
    not at all.

    A result equal to one already there in everything but its value (task, dataset, config, split, metric type,
    name, config and arguments) replaces it in place; the others are appended. Every other metadata key and the
    body are kept as they are. Without a README.md, a minimal card is created (the library name, the results).
    """
    from huggingface_hub.repocard_data import model_index_to_eval_results

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a local folder; a model card can only be updated in a local copy.")
    path = folder / "README.md"
    metadata, body = read_card(path) if path.is_file() else ({"library_name": "transformers"}, "")
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
    metadata["model-index"] = model_index(name, results)
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    atomic_write_text(path, f"---\n{header}---\n{body}" if body else f"---\n{header}---\n")
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


__all__ = ["model_index", "push_folder", "read_card", "update_card_results", "usage_snippet", "write_card"]
