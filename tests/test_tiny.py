"""The tiny offline model: a folder that depends only on its seed."""

import hashlib
import subprocess
import sys

import pytest

from testing_utils import REPO_ROOT, subprocess_env


def folder_digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.integration
def test_two_processes_write_the_same_tiny_model(tmp_path):
    """Tokenizers, weights and configs are the same in every process: tests that fit the tiny model, and the offline
    default's results, would otherwise change from run to run."""
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-m", "modeling_emovit.tiny", "--output_dir", str(tmp_path / name)],
                       cwd=REPO_ROOT, env=subprocess_env(), check=True, capture_output=True, timeout=300)
    first, second = folder_digest(tmp_path / "a"), folder_digest(tmp_path / "b")
    assert any("qformer_tokenizer" in name for name in first)
    assert first == second
