# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""The project's general helpers, below everything else and never saved with a model: whole-file and whole-folder
writes (`files`), append-only JSONL caches (`jsonl_cache`), how commands end on bad input (`commands`), and model and
dataset cards with Hub uploads (`hub`). It imports nothing else of the project."""
