"""EmoSet -> EmoVIT instruction data. Run `python -m dataset_builder --help` for the commands.

Reusable entry points for train.py / evaluate.py:
- `read_split(root, split)`: the (image path, emotion) items of a split of an EmoSet root or ImageFolder;
- `load_records(output_dir, types=None)`: the records of a build output folder with absolute image paths.
"""

from .emoset import ImageItem, Skip, SplitListing, read_split
from .records import load_records

__all__ = ["ImageItem", "Skip", "SplitListing", "load_records", "read_split"]
