"""train.py as a two-node job, rehearsed on one machine: two `accelerate launch` invocations (machine rank 0 and 1)
meeting on a free loopback port, one CPU process each (gloo), on the tiny model and instruction data prepared once
before either "node" starts. The same through configs/slurm_two_nodes.sbatch with stand-ins for srun and scontrol.

`accelerate launch --cpu --num_machines 2` is not such a job: on CPU that flag takes accelerate's MPI path, and
without mpirun each launch trains alone (world size 1). `--multi_gpu` (torchrun underneath) with train.py's
`--use_cpu` is, so the tests check the world size the run saw, not only that it finished."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


pytestmark = pytest.mark.integration  # two launchers, each starting a process
REPO = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"
TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_flags(tiny_dir, instructions_dir, output_dir):
    # 24 categorical examples, 4 per process and step: 3 steps in the epoch with 2 processes, 6 with one.
    return ["--model_name_or_path", str(tiny_dir), "--dataset", str(instructions_dir), "--output_dir", str(output_dir),
            "--types", "categorical", "--per_device_train_batch_size", "4", "--num_train_epochs", "1",
            "--eval_strategy", "no", "--test_split", "none", "--report_to", "none", "--save_strategy", "no",
            "--logging_steps", "1", "--dataloader_num_workers", "0", "--seed", "0", "--use_cpu"]


def run_together(commands, env, cwd, logs):
    """Starts every command at once (each in its own process group, its output to a file of `logs`) and waits for
    all; if one fails or the time runs out, the others are killed with their children. Returns the exit statuses
    and the outputs."""
    processes = []
    for command, log in zip(commands, logs):
        with open(log, "w") as out:
            processes.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while any(p.poll() is None for p in processes):
            failed = any(p.returncode not in (None, 0) for p in processes)
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return [p.returncode for p in processes], [Path(log).read_text() for log in logs]


def logged_steps(output_dir):
    history = json.loads((Path(output_dir) / "training_log.json").read_text())
    return [entry["step"] for entry in history if "loss" in entry]


@pytest.fixture()
def launch_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_two_nodes_on_loopback_train_one_job_and_only_the_main_node_writes(tiny_dir, instructions_dir, tmp_path,
                                                                          launch_env):
    if not ACCELERATE.exists():
        pytest.skip("accelerate's launcher is not installed next to this Python")
    port = free_port()
    # Separate output folders, so that anything the second node wrote would show.
    outputs = [tmp_path / "node0", tmp_path / "node1"]
    commands = [[str(ACCELERATE), "launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2",
                 "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
                 "train.py", *train_flags(tiny_dir, instructions_dir, outputs[rank])] for rank in (0, 1)]
    started = time.perf_counter()
    codes, logs = run_together(commands, launch_env, REPO, [tmp_path / "node0.log", tmp_path / "node1.log"])
    seconds = time.perf_counter() - started
    assert codes == [0, 0], f"exit statuses {codes}\nnode 0:\n{logs[0][-3000:]}\nnode 1:\n{logs[1][-3000:]}"
    print(f"two-node job on loopback: {seconds:.1f} s")

    for log in logs:  # both nodes loaded the data and trained
        assert "training examples: 24 ({'categorical': 24})" in log
    # one job of world size 2: the epoch took 3 steps of 2 x 4 examples, not 6 of 4
    assert logged_steps(outputs[0]) == [1, 2, 3]
    assert "| batch | 4 per device x 2 device(s) x 1 accumulation |" in (outputs[0] / "README.md").read_text()
    assert (outputs[0] / "model.safetensors").is_file()
    assert f"model: {outputs[0].resolve()}" in logs[0] and "model: " not in logs[1]
    assert not outputs[1].exists() or not any(outputs[1].rglob("*")), sorted(outputs[1].rglob("*"))


def test_the_slurm_script_launch_line_runs_two_nodes_on_loopback(tiny_dir, instructions_dir, tmp_path, launch_env):
    """configs/slurm_two_nodes.sbatch run by bash with SLURM's variables set and stand-ins for `srun` (one task per
    "node", with SLURM_NODEID and SLURM_PROCID) and `scontrol show hostnames` (the loopback address): both tasks
    join one job, which writes one folder on the shared path."""
    if not ACCELERATE.exists():
        pytest.skip("accelerate's launcher is not installed next to this Python")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\necho 127.0.0.1\n")
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env bash\n"
        "while [[ $1 == --* ]]; do shift; done\n"  # srun's own flags
        "pids=()\n"
        "for node in $(seq 0 $((SLURM_NNODES - 1))); do\n"
        "  SLURM_NODEID=$node SLURM_PROCID=$node SLURM_LOCALID=0 \"$@\" > \"$NODE_LOGS/node$node.log\" 2>&1 &\n"
        "  pids+=($!)\n"
        "done\n"
        "status=0\n"
        "for pid in \"${pids[@]}\"; do wait $pid || status=$?; done\n"
        "exit $status\n")
    for name in ("scontrol", "srun"):
        (bin_dir / name).chmod(0o755)
    env = {**launch_env, "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "SLURM_JOB_NODELIST": "node[01-02]", "SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "1",
           "SLURM_SUBMIT_DIR": str(REPO), "MAIN_PORT": str(free_port()), "NODE_LOGS": str(tmp_path)}
    output = tmp_path / "shared-run"
    codes, logs = run_together([["bash", str(REPO / "configs" / "slurm_two_nodes.sbatch"),
                                 *train_flags(tiny_dir, instructions_dir, output)]], env, tmp_path,
                               [tmp_path / "sbatch.log"])
    nodes = [(tmp_path / f"node{rank}.log").read_text() for rank in (0, 1) if (tmp_path / f"node{rank}.log").exists()]
    assert codes == [0], f"exit status {codes}\n{logs[0][-2000:]}\n" + "\n".join(log[-2000:] for log in nodes)
    assert len(nodes) == 2 and all("training examples: 24" in log for log in nodes)
    assert logged_steps(output) == [1, 2, 3]
    assert "| batch | 4 per device x 2 device(s) x 1 accumulation |" in (output / "README.md").read_text()
    assert sum(log.count(f"model: {output.resolve()}") for log in nodes) == 1
