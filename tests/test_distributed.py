"""emovit.distributed: work in contiguous shares, batch by batch, with every row back in item order on every
process; a value of the main process sent to all."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate import Accelerator

from emovit.distributed import from_main_process, run_in_shares

from testing_utils import subprocess_env


def test_one_process_works_through_all_items_in_batches():
    batches = []

    def work(batch):
        batches.append(batch)
        return [{"item": item, "double": 2 * item} for item in batch]

    rows = run_in_shares(Accelerator(), range(7), work, 3, "test")
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert rows == [{"item": item, "double": 2 * item} for item in range(7)]
    assert run_in_shares(Accelerator(), [], work, 3, "test") == [] and len(batches) == 3
    assert from_main_process({"accuracy": 0.5}) == {"accuracy": 0.5}


@pytest.mark.integration
def test_two_processes_take_contiguous_shares_and_get_every_row_in_order(tmp_path):
    """torchrun with 2 CPU processes (gloo) on 5 items in batches of 2: shares of 3 and 2 items, a row per item and
    one row more for item 3, all back in item order on both processes, the main process's value on both, and each
    process's value, in process order, on both."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    (tmp_path / "launch.py").write_text(
        "import json, os\n"
        "import torch.distributed\n"
        "from accelerate import Accelerator\n"
        "from emovit.distributed import from_every_process, from_main_process, run_in_shares\n"
        "accelerator = Accelerator()\n"
        "rank = accelerator.process_index\n"
        "work = lambda batch: [row for item in batch for row in [{'item': item, 'rank': rank, 'batch': batch}]\n"
        "                      + ([{'item': item, 'extra': True}] if item == 3 else [])]\n"
        "rows = run_in_shares(accelerator, range(5), work, 2, 'test')\n"
        "value = from_main_process({'from': rank} if accelerator.is_main_process else None)\n"
        "every = from_every_process({'rank': rank})\n"
        # a file per process: two processes printing to one pipe can interleave their lines
        "open(f'result-{rank}.json', 'w').write(json.dumps({'rank': rank, 'rows': rows, 'value': value, "
        "'every': every}))\n"
        "torch.distributed.destroy_process_group()\n"
    )
    env = subprocess_env(ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    done = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(tmp_path / "launch.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads((tmp_path / f"result-{rank}.json").read_text()) for rank in (0, 1)]
    expected = [{"item": 0, "rank": 0, "batch": [0, 1]}, {"item": 1, "rank": 0, "batch": [0, 1]},
                {"item": 2, "rank": 0, "batch": [2]}, {"item": 3, "rank": 1, "batch": [3, 4]},
                {"item": 3, "extra": True}, {"item": 4, "rank": 1, "batch": [3, 4]}]
    assert [result["rank"] for result in results] == [0, 1]
    assert all(result["rows"] == expected and result["value"] == {"from": 0} for result in results)
    assert all(result["every"] == [{"rank": 0}, {"rank": 1}] for result in results)


def test_a_plain_run_is_one_process_that_sees_its_own_values():
    """Without a launcher the helpers need no process group: one entry per process, the main process's value."""
    from emovit.distributed import from_every_process

    Accelerator()
    assert from_every_process({"rank": 0}) == [{"rank": 0}]
    assert from_main_process("main's") == "main's"
