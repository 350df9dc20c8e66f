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


__all__ = ["push_folder", "usage_snippet", "write_card"]
