"""ablation.py through its command line, on a very small offline sample: every variant is trained and evaluated on
the same inputs, and the tables hold each one's measured numbers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_the_ablation_trains_each_variant_on_the_same_inputs_and_writes_its_tables(tmp_path):
    output_dir = tmp_path / "ablation"
    done = subprocess.run(
        [sys.executable, "ablation.py", "--output_dir", str(output_dir), "--variants", "categorical;categorical,reasoning",
         "--prompt_variants", "2", "--offline_images_per_class", "6", "--offline_lm_steps", "2",
         "--", "--max_steps", "2", "--eval_strategy", "no", "--logging_steps", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    summary = json.loads((output_dir / "ablation.json").read_text())
    rows = summary["variants"]
    assert [row["variant"] for row in rows] == ["categorical", "categorical+reasoning"]

    for row in rows:
        folder = output_dir / row["variant"]
        eval_metrics = json.loads((folder / "eval" / "metrics.json").read_text())
        explained = json.loads((folder / "eval-reasoning" / "metrics.json").read_text())
        # the table holds the variant's own measured numbers, read from its folders
        assert row["score accuracy"] == eval_metrics["accuracy"]
        assert row["consistency"] == explained["consistency"]
        # both variants were evaluated on the one sample the ablation built
        assert eval_metrics["arguments"]["dataset"] == str(output_dir / "offline-inputs" / "emoset-synthetic")
        # each trained on its own types only
        data_section = (folder / "README.md").read_text().split("## Data")[1].split("## Training")[0]
        assert ("reasoning:" in data_section) == ("reasoning" in row["types"]), data_section

    prompts = summary["prompt_sensitivity"]
    assert [sorted(k for k in row if k.startswith("instruction")) for row in prompts] == [
        ["instruction 1", "instruction 2"]] * 2
    table = (output_dir / "ablation.md").read_text()
    assert "python ablation.py --output_dir" in table
    assert table.count("| categorical+reasoning |") == 2 and table.count("| categorical |") == 2
