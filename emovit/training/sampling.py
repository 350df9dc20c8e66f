"""Sample orders: EmoVIT's curriculum over instruction types, and the `(epoch, index)` keys that make augmentation
reproducible across resumes."""

import random

from torch.utils.data import Sampler

from dataset_builder import INSTRUCTION_TYPES, parse_types


def parse_curriculum(curriculum: str, present_types) -> list[str] | None:
    """None for 'mixed'; else the type order of a comma-separated `--curriculum`, which must name distinct types
    and cover every type in `present_types` (the types the data holds)."""
    if curriculum == "mixed":
        return None
    try:
        order = list(parse_types(curriculum, "--curriculum", distinct=True))
    except ValueError as e:
        raise ValueError(f"{e}. Or use 'mixed' or an order of distinct types from {list(INSTRUCTION_TYPES)}.") from e
    left_out = sorted(set(present_types) - set(order))
    if left_out:
        raise ValueError(f"--curriculum {curriculum!r} leaves out the types {left_out} that the data "
                         "holds; list them or narrow --types.")
    return order


class AugmentationKeySampler(Sampler):
    """Yields `(epoch, index)` for each index of `sampler`, so that the collator can draw each example's random crop
    and flip from (seed, epoch, index) alone. The augmentation then depends on nothing a checkpoint does not already
    restore (the epoch and the sample order), so a resumed run augments exactly as an uninterrupted one; it also
    holds with several loader workers and with the batches the loader prepares ahead of the step being saved, which
    a generator carried from batch to batch would not."""

    def __init__(self, sampler):
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch):
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        for index in self.sampler:
            yield (self.epoch, index)


class CurriculumSampler(Sampler):
    """Each epoch: every example of the first type (shuffled), then of the second, and so on (EmoVIT's progressive
    order: categorical before conversation before reasoning). The shuffle is seeded by seed + epoch."""

    def __init__(self, types: list[str], order: list[str], seed: int):
        self.groups = [[i for i, t in enumerate(types) if t == stage] for stage in order]
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return sum(len(group) for group in self.groups)

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        for group in self.groups:
            yield from rng.sample(group, len(group))
