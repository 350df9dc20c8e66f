"""EmoSet -> EmoVIT instruction data. Run `python -m dataset_builder --help` for the commands.

Entry points for training and evaluation:
- `read_split(root, split)`: the (image path, emotion) items of a split of an EmoSet root or ImageFolder;
- `load_records(output_dir, types=None)`: the records of a build output folder with absolute image paths, and
  `read_summary(output_dir)` its summary.json;
- `import_official_json(path, kind, root=...)`: the records of an official EmoVIT (LLaVA-style) JSON;
- `training_record_problem(record)`: why a record from elsewhere (e.g. a Hub dataset) cannot be trained on;
- `INSTRUCTION_TYPES` and `parse_types(text, flag)`: the instruction types and the parser of comma lists of them.
"""

from .records import INSTRUCTION_TYPES, Record, parse_types, training_record_problem
from .build_folder import load_records, read_summary
from .emoset import ImageItem, Skip, SplitListing, read_split
from .official import import_official_json

__all__ = ["INSTRUCTION_TYPES", "ImageItem", "Record", "Skip", "SplitListing", "import_official_json", "load_records",
           "parse_types", "read_split", "read_summary", "training_record_problem"]
