"""ablation.py through its command line, on a very small offline sample: every variant is trained and evaluated on
the same inputs, and the tables hold each one's measured numbers; with --base_models, once per base model. The rows
themselves (emovit.evaluation.ablation) are read from folders written here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emovit.evaluation.ablation import PROMPTS_FOLDER, prompt_row, variant_row

from testing_utils import run_script


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


def write_variant_folder(folder, model_type):
    for source, metrics in (("eval", {"accuracy": 0.5, "macro_f1": 0.4}), ("eval-reasoning", {"consistency": 0.7}),
                            (PROMPTS_FOLDER, {"prompt_variants": [{"accuracy": 0.5}, {"accuracy": 0.3}],
                                              "prompt_accuracy_spread": 0.2})):
        (folder / source).mkdir(parents=True)
        (folder / source / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.json").write_text(json.dumps({"text_config": {"model_type": model_type}}))


def test_rows_name_their_base_model_and_its_language_model_only_when_bases_are_compared(tmp_path):
    write_variant_folder(tmp_path, "t5")
    single = variant_row("categorical", "categorical", tmp_path, 12.3)
    assert list(single)[:3] == ["variant", "types", "train loss"] and "base model" not in single
    compared = variant_row("categorical", "categorical", tmp_path, 12.3, base_model="tiny-t5")
    assert list(compared)[:3] == ["base model", "language model", "variant"]
    assert compared["base model"] == "tiny-t5" and compared["language model"] == "t5"
    assert {k: v for k, v in compared.items() if k not in ("base model", "language model")} == single
    assert single["score accuracy"] == 0.5 and single["consistency"] == 0.7 and single["generate accuracy"] is None
    prompts = prompt_row("categorical", tmp_path, base_model="tiny-t5")
    assert list(prompts)[:3] == ["base model", "language model", "variant"] and prompts["spread"] == 0.2
    assert prompts["mean"] == pytest.approx(0.4) and "base model" not in prompt_row("categorical", tmp_path)


@pytest.mark.parametrize("argv, named", [
    (["--base_models", "tiny,runs/my-base"], "the tiny bases"),
    (["--base_models", "tiny-t5", "--dataset", "data/emovit"], "without --dataset"),
    (["--base_models", "tiny", "--model_name_or_path", "runs/base"], "--model_name_or_path 'runs/base'"),
    (["--base_models", "runs/base"], "without --dataset"),
    (["--base_models", "a/base,b/base", "--dataset", "data/emovit"], "share the folder"),
    (["--base_models", " , "], "names no base model"),
])
def test_base_models_that_cannot_be_compared_are_refused_before_anything_is_built(tmp_path, argv, named):
    done = run_script("ablation", ["--output_dir", str(tmp_path / "ablation"), *argv])
    assert done.returncode == 1 and named in done.stderr and "--base_models" in done.stderr, done.stderr
    assert not (tmp_path / "ablation").exists()


@pytest.mark.integration
def test_the_backbone_ablation_trains_every_variant_on_each_tiny_base(tmp_path):
    """--base_models tiny,tiny-t5: one row per base model, each trained on its own kind of language model from the
    same offline data, in its own folder; the tables carry both."""
    output_dir = tmp_path / "ablation"
    done = subprocess.run(
        [sys.executable, "ablation.py", "--output_dir", str(output_dir), "--base_models", "tiny,tiny-t5",
         "--variants", "categorical", "--prompt_variants", "2", "--offline_images_per_class", "6",
         "--offline_lm_steps", "2", "--", "--max_steps", "2", "--eval_strategy", "no", "--logging_steps", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    summary = json.loads((output_dir / "ablation.json").read_text())
    rows = summary["variants"]
    assert [(row["base model"], row["language model"], row["variant"]) for row in rows] == [
        ("tiny", "llama", "categorical"), ("tiny-t5", "t5", "categorical")]
    for row, base in zip(rows, ("tiny-base", "tiny-base-t5")):
        folder = output_dir / row["base model"] / "categorical"
        config = json.loads((folder / "config.json").read_text())
        assert config["text_config"]["model_type"] == row["language model"]
        eval_metrics = json.loads((folder / "eval" / "metrics.json").read_text())
        assert row["score accuracy"] == eval_metrics["accuracy"]
        assert eval_metrics["arguments"]["dataset"] == str(output_dir / "offline-inputs" / "emoset-synthetic")
        assert f"offline-inputs/{base}`" in (folder / "README.md").read_text()  # trained from its own tiny base
    assert [(row["base model"], row["variant"]) for row in summary["prompt_sensitivity"]] == [
        ("tiny", "categorical"), ("tiny-t5", "categorical")]
    table = (output_dir / "ablation.md").read_text()
    assert "Base models and instruction types" in table and "| base model | language model | variant |" in table
    assert table.count("| tiny | llama | categorical |") == 2 and table.count("| tiny-t5 | t5 | categorical |") == 2
