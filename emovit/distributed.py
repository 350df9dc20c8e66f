"""Work shared out over the processes of a launch (`accelerate launch`, `torchrun`; a plain `python` run is one
process doing all of it), as the evaluation and prediction runs do it.

Each process takes a contiguous share of the items (`Accelerator.split_between_processes`: the first processes take
one item more when the count does not divide) and works through it in batches. `gather_object` concatenates the
shares in rank order, so every process gets all rows in the order of the items, each item once, exactly as one
process alone would have produced them.
"""

from collections.abc import Callable, Sequence

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm


def run_in_shares(accelerator: Accelerator, items: Sequence, work: Callable[[list], list], batch_size: int,
                  description: str) -> list:
    """Calls `work` on this process's share of `items`, `batch_size` items at a time, and returns the rows of all
    processes, on every process; each process of the launch must call it.

    `work(batch)` returns the rows of the items in `batch`, in their order, so that the gathered rows follow `items`.
    A tqdm bar (`description`) counts this process's items on the local main process.
    """
    with accelerator.split_between_processes(list(items)) as share:
        share = list(share)
    progress = tqdm(total=len(share), unit="img", desc=description, disable=not accelerator.is_local_main_process)
    rows = []
    for start in range(0, len(share), batch_size):
        batch = share[start : start + batch_size]
        rows += work(batch)
        progress.update(len(batch))
    progress.close()
    return gather_object(rows)


def from_main_process(value=None):
    """`value` as the main process passes it, on every process (the others pass nothing and wait for it)."""
    return broadcast_object_list([value])[0]


def from_every_process(value) -> list:
    """Each process's `value`, in process order, on every process (one entry for a plain run)."""
    return gather_object([value])
