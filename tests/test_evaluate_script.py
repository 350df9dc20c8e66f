"""evaluate.py's main(argv) in this process (`--help`, calibration with the card, a suite, input errors, a refused
judge) and under torchrun with 2 and 3 processes. The evaluation itself is tested on the library
(tests/test_evaluation_*.py); the `evaluate` name in tests/test_evaluate_name.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testing_utils import run_script


REPO = Path(__file__).resolve().parents[1]


def accuracy_of(lines):
    return sum(line["prediction"] == line["label"] for line in lines) / len(lines)


def test_help_lists_the_flags():
    done = run_script("evaluate", ["--help"])
    assert done.returncode == 0, done.stderr
    for flag in ("--model", "--dataset", "--method", "--label_map", "--prompt_variants", "--dtype"):
        assert flag in done.stdout
    for flag in ("--output_dir", "--split", "--batch_size", "--max_images"):
        assert flag in done.stdout


@pytest.mark.integration
def test_two_processes_from_a_json_file_split_gather_and_write_once(tmp_path, eval_score_run, tiny_dir,
                                                                    eval_emoset_dir):
    """torchrun with 2 CPU processes (gloo), arguments from one JSON file: an uneven split (4 + 3 images) gathered
    back in dataset order, metrics over all of them, one set of outputs, one summary."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    out = tmp_path / "out"
    config = {"model": str(tiny_dir), "dataset": str(eval_emoset_dir), "output_dir": str(out), "batch_size": 3,
              "max_images": 7}
    (tmp_path / "eval.json").write_text(json.dumps(config))
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(REPO / "evaluate.py"),
               str(tmp_path / "eval.json")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # only the main process writes
    assert done.stdout.count("accuracy ") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}" in done.stdout
    assert f"wrote {out / 'metrics.json'}, {out / 'predictions.jsonl'}, {out / 'confusion_matrix.png'}" in done.stdout
    assert sorted(os.listdir(out)) == ["confusion_matrix.png", "metrics.json", "predictions.jsonl",
                                      "reliability_diagram.png", "risk_coverage.png"]
    assert metrics["num_processes"] == 2 and metrics["num_images"] == 7
    assert metrics["arguments"]["batch_size"] == 3 and metrics["arguments"]["method"] == "score"
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    _, expected, _ = eval_score_run
    assert [line["id"] for line in lines] == [line["id"] for line in expected[:7]]
    assert [line["prediction"] for line in lines] == [line["prediction"] for line in expected[:7]]
    for line, single in zip(lines, expected[:7]):
        assert line["scores"] == pytest.approx(single["scores"], abs=1e-6)
    assert metrics["accuracy"] == pytest.approx(accuracy_of(lines))


@pytest.mark.integration
def test_more_processes_than_images_gather_each_image_once(tmp_path, eval_score_run, tiny_dir, eval_emoset_dir):
    """torchrun with 3 CPU processes on 2 images: the shares are 1, 1 and 0 images; the process without a share
    still joins every gather, and the outputs hold each image once, in dataset order, written once."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    out = tmp_path / "out"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "3", str(REPO / "evaluate.py"), "--model",
               str(tiny_dir), "--dataset", str(eval_emoset_dir), "--output_dir", str(out), "--max_images", "2",
               "--batch_size", "2"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1 and done.stdout.count("accuracy ") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 3 and metrics["num_images"] == 2 and metrics["num_skipped"] == 0
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    _, expected, _ = eval_score_run
    assert [line["id"] for line in lines] == [line["id"] for line in expected[:2]]
    for line, single in zip(lines, expected[:2]):
        assert line["prediction"] == single["prediction"]
        assert line["scores"] == pytest.approx(single["scores"], abs=1e-6)
    assert sum(map(sum, metrics["confusion_matrix"])) == 2  # each image counted once in the metrics


# ----------------------------------------------------------------------------------- calibration and the card


def test_calibrate_store_and_update_the_card_from_the_command_line(tmp_path, tiny_dir, eval_emoset_dir):
    import shutil

    from huggingface_hub import ModelCard

    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    (model / "README.md").write_text("---\nlicense: bsd-3-clause\n---\n\n# Tiny\n\nNotes.\n")
    out = tmp_path / "out"
    command = ["--model", str(model), "--dataset", str(eval_emoset_dir),
               "--max_images", "8", "--batch_size", "4", "--calibrate_on", "val", "--save_temperature",
               "--save_unreliable_temperature", "--update_card", str(model), "--output_dir", str(out)]
    done = run_script("evaluate", command, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    calibrated = metrics["calibrated"]
    assert f"ECE {metrics['ece']:.4f}, Brier {metrics['brier']:.4f}, NLL {metrics['nll']:.4f}" in done.stdout
    assert f"temperature {calibrated['temperature']:.4f} (fitted on val)" in done.stdout
    assert f"stored in {model / 'config.json'}" in done.stdout and (out / "reliability_diagram.png").is_file()
    assert f"weighted F1 {metrics['weighted_f1']:.4f}" in done.stdout
    assert f"AURC {metrics['aurc']:.4f}; coverage at confidence >= 0.5" in done.stdout
    assert {"selective", "aurc", "risk_coverage"} <= set(metrics) and {"selective", "aurc"} <= set(calibrated)
    assert len(metrics["selective"]) == 9 and (out / "risk_coverage.png").is_file()
    assert "warning: the temperature is unreliable: it is fitted on 8 images" in done.stdout
    assert json.loads((model / "config.json").read_text())["score_temperature"] == calibrated["temperature"]
    card = ModelCard.load(model / "README.md")
    assert card.data.license == "bsd-3-clause" and card.text.strip() == "# Tiny\n\nNotes."
    by_metric = {(r.metric_config, r.metric_type): r for r in card.data.eval_results}
    assert by_metric[("score", "accuracy")].metric_value == float(f"{metrics['accuracy']:.4g}")
    assert by_metric[("score-calibrated", "ece")].metric_value == float(f"{calibrated['ece']:.4g}")
    assert all((r.dataset_type, r.dataset_split, r.dataset_args) == (eval_emoset_dir.name, "test", {"max_images": 8})
               for r in card.data.eval_results)

    refused = run_script("evaluate", [*command[:-2], "--output_dir", str(tmp_path / "generate"), "--method",
                                      "generate"], cwd=tmp_path)
    assert refused.returncode != 0 and "--calibrate_on 'val' needs --method score" in refused.stderr
    assert not (tmp_path / "generate").exists()


# ----------------------------------------------------------------------------------------------------- reasoning


def test_reasoning_with_references_prints_bleu_and_rouge(tmp_path, tiny_dir, eval_emoset_dir):
    """--references from the command line: the summary line shows BLEU-4 and ROUGE-L as metrics.json has them, and
    how many images had no reference."""
    entries = json.loads((eval_emoset_dir / "test.json").read_text())
    references = tmp_path / "references.jsonl"
    references.write_text("".join(json.dumps({"image": entry[1], "reference": "A calm scene in soft light."}) + "\n"
                                  for entry in entries[:2]))
    out = tmp_path / "out"
    done = run_script("evaluate", ["--model", str(tiny_dir), "--dataset", str(eval_emoset_dir), "--task", "reasoning",
                                   "--max_images", "3", "--batch_size", "3", "--max_new_tokens", "8", "--references",
                                   str(references), "--output_dir", str(out)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads((out / "metrics.json").read_text())["references"]
    assert (f"against references (2 images, 1 without one): BLEU-4 {scores['bleu4']:.4f}, "
            f"ROUGE-L {scores['rouge_l']:.4f}") in done.stdout
    assert "1 of 3 explained images have no reference" in done.stdout



@pytest.mark.integration
def test_reasoning_under_two_processes_with_the_judge_keeps_the_key_out_of_every_file(tmp_path, tiny_dir,
                                                                                      eval_emoset_dir, llmock):
    """`--task reasoning` through the command line under torchrun with 2 CPU processes: each explains its share
    (2 + 2 images), the main process alone judges (against llmock on loopback) and writes; explanations equal
    `explain()`'s on the same batches, and the API key from the environment reaches no file or output."""
    from llmock.scenarios import Reply

    from emovit.evaluation.data import load_eval_data
    from modeling_emovit import EmoVitForConditionalGeneration, EmoVitProcessor

    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    llmock.add(Reply(text='{"grounding": 2, "plausibility": 1, "specificity": 1, "rationale": "Noise."}', times=None))
    out = tmp_path / "out"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(REPO / "evaluate.py"), "--model",
               str(tiny_dir), "--dataset", str(eval_emoset_dir), "--output_dir", str(out), "--task", "reasoning",
               "--max_images", "4", "--batch_size", "2", "--max_new_tokens", "8", "--judge_model", "gpt-4o",
               "--judge_base_url", llmock.base_url()]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": "sk-SECRET-in-env"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("reasoning (free) on 4 images: consistency ") == 1
    assert "judge gpt-4o: 4 judged, grounding 2.0000, plausibility 1.0000" in done.stdout
    assert len([r for r in llmock.requests if r.path == "/v1/chat/completions"]) == 4  # judged once, not per process
    assert sorted(os.listdir(out)) == ["judge_cache.jsonl", "metrics.json", "predictions.jsonl"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["num_images"] == 4 and metrics["judge"]["judged"] == 4
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(line["judge"]["grounding"] == 2 for line in lines)

    data = load_eval_data(str(eval_emoset_dir), "test")
    model = EmoVitForConditionalGeneration.from_pretrained(tiny_dir).eval()
    processor = EmoVitProcessor.from_pretrained(tiny_dir)
    # The processes ran single-threaded (OMP_NUM_THREADS=1); so does the comparison, so that sums add up in the
    # same order and greedy decoding cannot tip on a rounding difference.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        explained = [model.explain([data.image(i) for i in share], processor, preset="free", max_new_tokens=8,
                                   batch_size=2) for share in ([0, 1], [2, 3])]
    finally:
        torch.set_num_threads(threads)
    assert [line["id"] for line in lines] == data.ids[:4]
    assert [line["explanation"] for line in lines] == [text for part in explained for text in part.explanations]

    written = "".join(path.read_text() for path in out.iterdir()) + done.stdout + done.stderr
    assert "SECRET" not in written

# ----------------------------------------------------------------------------------------------------- suite


def test_suite_from_the_command_line_prints_and_writes_one_table(tmp_path, tiny_dir):
    from emovit.evaluation.synthetic_benchmarks import write_synthetic_benchmarks

    write_synthetic_benchmarks(tmp_path / "bench", images_per_class=3)
    (tmp_path / "suite.yaml").write_text(
        "- {name: abstract, dataset: bench/Abstract, dataset_format: abstract, split: all}\n"
        "- {name: emotionroi, dataset: bench/EmotionROI, dataset_format: emotionroi, label_map: emotionroi}\n")
    out = tmp_path / "out"
    done = run_script("evaluate", ["--model", tiny_dir, "--suite", tmp_path / "suite.yaml", "--output_dir", out,
                                   "--batch_size", "8"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((out / "suite_results.json").read_text())
    assert [row["name"] for row in table["rows"]] == ["abstract", "emotionroi"]
    assert [row["num_images"] for row in table["rows"]] == [24, 6]
    assert (out / "suite_results.md").read_text() in done.stdout
    assert sorted(os.listdir(out)) == ["abstract", "emotionroi", "suite_results.json", "suite_results.md"]
    assert (out / "emotionroi" / "confusion_matrix.png").is_file()


# ----------------------------------------------------------------------------------------------------- input errors


@pytest.mark.parametrize("case", ["bad value", "missing dataset", "unreliable temperature", "malformed argument file",
                                  "missing suite", "bad suite entry"])
def test_input_errors_end_in_one_message_without_traceback(case, tmp_path, tiny_dir, eval_emoset_dir):
    (tmp_path / "args.json").write_text("{not json")
    (tmp_path / "suite.yaml").write_text(f"- {{name: a, dataset: {eval_emoset_dir}}}\n"
                                         f"- {{name: b, dataset: {eval_emoset_dir}, method: bogus}}\n")
    base = ["--model", str(tiny_dir), "--dataset", str(eval_emoset_dir), "--output_dir", str(tmp_path / "out")]
    argv, message = {
        "bad value": (base + ["--method", "bogus"], "--method is 'bogus'"),
        "missing dataset": (["--model", str(tiny_dir), "--dataset", str(tmp_path / "nowhere"), "--output_dir",
                             str(tmp_path / "out")], f"--dataset '{tmp_path / 'nowhere'}'"),
        "unreliable temperature": (base + ["--calibrate_on", "val", "--save_temperature"],
                                   "fitted on 8 images (at least 30"),
        "malformed argument file": ([str(tmp_path / "args.json")], f"{tmp_path / 'args.json'}"),
        "missing suite": (["--model", str(tiny_dir), "--suite", str(tmp_path / "none.yaml"), "--output_dir",
                           str(tmp_path / "out")], f"--suite '{tmp_path / 'none.yaml'}' does not exist"),
        "bad suite entry": (["--model", str(tiny_dir), "--suite", str(tmp_path / "suite.yaml"), "--output_dir",
                             str(tmp_path / "out")], f"Suite file {tmp_path / 'suite.yaml'}, entry 1 ('b'): --method "
                                                     "is 'bogus'"),
    }[case]
    done = run_script("evaluate", argv, cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "evaluate.py: error: " in done.stderr, done.stderr[-3000:]
    assert message in done.stderr
    assert not (tmp_path / "out").exists()  # every one of these is refused before anything is evaluated


def test_a_refused_judge_ends_the_reasoning_run_with_exit_status_1_naming_its_flag(tmp_path, tiny_dir,
                                                                                   eval_emoset_dir, llmock,
                                                                                   monkeypatch):
    from llmock.scenarios import Fail

    llmock.add(Fail(401, times=None))
    out = tmp_path / "out"
    command = ["--model", str(tiny_dir), "--dataset", str(eval_emoset_dir),
               "--output_dir", str(out), "--task", "reasoning", "--max_images", "4", "--batch_size", "4",
               "--max_new_tokens", "4", "--judge_model", "gpt-4o", "--judge_base_url", llmock.base_url()]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-refused")
    done = run_script("evaluate", command, cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "evaluate.py: error: the judge" in done.stderr and "Traceback" not in done.stderr
    assert "--judge_model" in done.stderr and "--llm_model" not in done.stderr + done.stdout
    # The explanations and their offline scores are kept; the judge's failures are counted in them.
    metrics = json.loads((out / "metrics.json").read_text())
    judge = metrics["judge"]
    assert metrics["num_images"] == 4 and judge["judged"] == 0 and judge["failed"] >= 3
    assert judge["failed"] + judge["not_run"] == 4
