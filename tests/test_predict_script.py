"""predict.py's main(argv) in this process: PATHs and flags in any order, the output file and the printed summary, bad
input as a clear message without a traceback; and under torchrun, 2 processes writing the same file as one. The
prediction run itself is tested on the library (tests/test_inference_predict.py)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emovit.inference.files import read_image
from emovit.inference.loading import PROCESSOR_FILES

from testing_utils import run_script


REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_predict(*arguments, cwd=None):
    """predict.py's main with `arguments`, in this process, from `cwd` (default: the repository root)."""
    return run_script("predict", arguments, cwd=cwd or REPO)


def read_lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory, tiny_dir, photo_folder):
    """predict.py on the photo folder, flags after the PATH: (completed process, output file)."""
    out = tmp_path_factory.mktemp("predict-one") / "preds.jsonl"
    done = run_predict("--model", tiny_dir, photo_folder[0], "--top_k", "3", "--batch_size", "3", "--output", out)
    return done, out


def test_help_lists_the_flags_and_paths():
    done = run_predict("--help")
    assert done.returncode == 0, done.stderr
    assert "usage: predict.py --model MODEL [flags] PATH [PATH ...]" in done.stdout
    for flag in ("--model", "--output", "--method", "--top_k", "--explain", "--preset", "--max_new_tokens",
                 "--batch_size", "--dtype", "--max_image_pixels"):
        assert flag in done.stdout


def test_lines_equal_classify_and_the_summary_counts_labels_and_skips(one_process_run, photo_folder, tiny_model,
                                                                     tiny_processor):
    done, out = one_process_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    root, expected = photo_folder
    lines = read_lines(out)
    assert [line["path"] for line in lines] == sorted(expected["readable"] + list(expected["unreadable"]))
    predicted = [line for line in lines if "error" not in line]
    reference = tiny_model.classify([read_image(path) for path in expected["readable"]], tiny_processor)
    labels = list(tiny_model.config.emotion_labels)
    assert [line["label"] for line in predicted] == reference.labels
    for line, scores in zip(predicted, reference.scores.tolist()):
        top = sorted(range(len(labels)), key=lambda i: -scores[i])[:3]
        assert [s["label"] for s in line["scores"]] == [labels[i] for i in top]
        assert [s["score"] for s in line["scores"]] == pytest.approx([scores[i] for i in top], abs=1e-5)

    counts = {}
    for label in reference.labels:
        counts[label] = counts.get(label, 0) + 1
    assert "predicted 9 of 13 images (4 skipped)" in done.stdout and "images/s on 1 process(es)" in done.stdout
    for label, count in counts.items():
        assert f"{label} {count}" in done.stdout.split("labels: ")[1].splitlines()[0]
    assert 'skipped 4 images (lines with "error" in the output):' in done.stdout
    for path, words in expected["unreadable"].items():
        assert any(line.startswith(f"  {path}: ") and words in line for line in done.stdout.splitlines()), path
    assert f"passed over 1 files that are not images by extension, e.g. {root / 'notes.txt'}" in done.stdout
    assert done.stdout.rstrip().endswith(f"wrote {out}")


@pytest.mark.integration
def test_two_processes_write_the_same_file_as_one(tmp_path, one_process_run, tiny_dir, photo_folder):
    """torchrun with 2 CPU processes (gloo), the arguments from one JSON file: the processes take 7 and 6 of the 13
    files in batches of 3 (so their batches differ from the one-process run's), and the main process alone writes the
    gathered lines and prints the summary."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    out = tmp_path / "preds.jsonl"
    config = {"model": str(tiny_dir), "paths": [str(photo_folder[0])], "top_k": 3, "batch_size": 3,
              "output": str(out)}
    (tmp_path / "predict.json").write_text(json.dumps(config))
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(REPO / "predict.py"),
               str(tmp_path / "predict.json")]
    done = subprocess.run(command, cwd=tmp_path, env={**ENV, "ACCELERATE_USE_CPU": "true"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1 and done.stdout.count("predicted 9 of 13 images") == 1
    assert "on 2 process(es)" in done.stdout
    lines, single = read_lines(out), read_lines(one_process_run[1])
    assert [{**line, "scores": None} for line in lines] == [{**line, "scores": None} for line in single]
    for line, one in zip(lines, single):
        if "scores" in line:
            assert [s["label"] for s in line["scores"]] == [s["label"] for s in one["scores"]]
            assert [s["score"] for s in line["scores"]] == pytest.approx([s["score"] for s in one["scores"]],
                                                                         abs=1e-6)
    assert sorted(os.listdir(tmp_path)) == ["predict.json", "preds.jsonl"]


@pytest.mark.integration
def test_more_processes_than_images_leave_one_process_without_a_share(tmp_path, one_process_run, tiny_dir,
                                                                    photo_folder):
    """torchrun with 3 CPU processes on 2 images (one readable, one unreadable): the shares are 1, 1 and 0 files; the
    process without a share still joins the gather, and the one file holds each image once, in order, as one
    process writes it."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    root, expected = photo_folder
    paths = [expected["readable"][0], str(root / "bad" / "text.jpg")]
    out = tmp_path / "preds.jsonl"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "3", str(REPO / "predict.py"), "--model",
               str(tiny_dir), "--top_k", "3", "--output", str(out), *paths]
    done = subprocess.run(command, cwd=tmp_path, env={**ENV, "ACCELERATE_USE_CPU": "true"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1 and "predicted 1 of 2 images (1 skipped)" in done.stdout
    assert "on 3 process(es)" in done.stdout
    lines = read_lines(out)
    single = {line["path"]: line for line in read_lines(one_process_run[1])}
    assert [line["path"] for line in lines] == sorted(paths)
    for line in lines:
        one = single[line["path"]]
        assert {**line, "scores": None} == {**one, "scores": None}
        if "scores" in line:
            assert [s["score"] for s in line["scores"]] == pytest.approx([s["score"] for s in one["scores"]],
                                                                         abs=1e-6)
    assert sorted(os.listdir(tmp_path)) == ["preds.jsonl"]


def test_explain_before_the_paths_prints_lines_to_stdout(tiny_dir, photo_folder, tmp_path):
    """A bare --explain followed by a PATH (the flag does not swallow it); `--output -` puts the lines on stdout and
    the summary on stderr."""
    root, expected = photo_folder
    done = run_predict("--model", tiny_dir, "--explain", expected["readable"][0], "--preset", "humour",
                       "--max_new_tokens", "6", "--output", "-", expected["readable"][1], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["path"] for line in lines] == expected["readable"][:2]
    for line in lines:
        assert set(line) == {"path", "label", "scores", "explanation", "mentioned", "agreement"}
        assert len(line["scores"]) == 8 and line["agreement"] in ("agrees", "names_other", "names_none")
    assert "predicted 2 of 2 images (0 skipped)" in done.stderr and "explanations: " in done.stderr
    assert os.listdir(tmp_path) == []  # nothing written besides stdout


@pytest.mark.parametrize("case", ["no paths", "empty folder", "named pipe", "unknown flag", "bad value",
                                  "budget past the context", "no processor", "nothing readable"])
def test_bad_input_is_a_message_without_traceback_and_leaves_the_output_alone(case, tmp_path, tiny_dir,
                                                                            photo_folder):
    root, expected = photo_folder
    out = tmp_path / "preds.jsonl"
    out.write_text("earlier run\n")
    (tmp_path / "empty").mkdir()
    os.mkfifo(tmp_path / "pipe.jpg")
    model = tiny_dir
    if case == "no processor":
        model = tmp_path / "weights-only"
        shutil.copytree(tiny_dir, model)
        for name in PROCESSOR_FILES:
            (model / name).unlink(missing_ok=True)
    paths, status, message = {
        "no paths": ([], 1, "No PATH was given"),
        "empty folder": ([root, tmp_path / "empty"], 1, f"PATH '{tmp_path / 'empty'}' is a folder without image"),
        "named pipe": ([root, tmp_path / "pipe.jpg"], 1,
                       f"PATH '{tmp_path / 'pipe.jpg'}' is a named pipe (FIFO), not a regular file; pass an image"),
        "unknown flag": ([root, "--topk", "3"], 2, "unknown flag(s) --topk"),
        "bad value": ([root, "--top_k", "0"], 2, "--top_k is 0; use a positive number"),
        # The tiny model's language model has 512 positions, 8 of them for the image's query tokens.
        "budget past the context": ([root, "--explain", "--max_new_tokens", "100000"], 1,
                                    "--max_new_tokens is 100000, more than this model's context holds: its language "
                                    "model has room for at most 504 new tokens"),
        "no processor": ([root], 1, f"--model '{model}' holds model weights but no processor"),
        "nothing readable": ([root / "bad" / "text.jpg", root / "bad" / "empty.png"], 1,
                             "none of the 2 images could be predicted"),
    }[case]
    done = run_predict("--model", model, "--output", out, *paths)
    assert done.returncode == status, done.stderr[-3000:]
    assert message in done.stderr and "Traceback" not in done.stderr
    if case == "nothing readable":  # the run completed: its file holds the reasons
        assert [line["path"] for line in read_lines(out)] == [str(root / "bad" / "empty.png"),
                                                              str(root / "bad" / "text.jpg")]
    else:
        assert out.read_text() == "earlier run\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["preds.jsonl"]  # no temporary file


@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.integration)])
def test_broken_links_and_pipes_in_a_folder_are_error_lines_and_the_run_goes_on(tmp_path, tiny_dir, processes):
    """A link to nothing, a link to itself, a named pipe and a link to /dev/zero with image names inside a searched
    folder: each is an `error` line counted in the summary, the readable image is predicted, exit status 0; the same
    under torchrun with 2 processes."""
    from test_inference_files import odd_files

    folder = tmp_path / "pin"
    errors = odd_files(folder)
    out = tmp_path / "preds.jsonl"
    arguments = ["--model", tiny_dir, "--output", out, folder]
    if processes == 1:
        done = run_predict(*arguments, cwd=tmp_path)
    else:
        torchrun = Path(sys.executable).parent / "torchrun"
        if not torchrun.exists():
            pytest.skip("torchrun is not installed next to this Python")
        done = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(REPO / "predict.py"),
                               *map(str, arguments)], cwd=tmp_path, env={**ENV, "ACCELERATE_USE_CPU": "true"},
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = read_lines(out)
    assert [line["path"] for line in lines] == [str(folder / "good.png")] + [str(folder / "sub" / name)
                                                                             for name in sorted(errors)]
    assert "error" not in lines[0] and lines[0]["label"]
    for line, name in zip(lines[1:], sorted(errors)):
        assert errors[name] in line["error"], line
    assert "predicted 1 of 5 images (4 skipped) in" in done.stdout and f"on {processes} process(es)" in done.stdout


@pytest.mark.parametrize("case", ["the input photo", "a link to it", "an image name", "a model file"])
def test_an_output_that_would_replace_an_input_or_a_photo_is_refused_and_nothing_is_written(case, tmp_path,
                                                                                          tiny_dir):
    from PIL import Image

    pin = tmp_path / "pin2"
    pin.mkdir()
    Image.new("RGB", (40, 36), "red").save(pin / "red.jpg")
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    os.symlink(pin / "red.jpg", tmp_path / "latest.jsonl")
    before = {path: path.read_bytes() for path in [pin / "red.jpg", model / "config.json"]}
    output, message = {
        "the input photo": (pin / "red.jpg", f"--output '{pin / 'red.jpg'}' is the input '{pin / 'red.jpg'}'"),
        "a link to it": (tmp_path / "latest.jsonl", f"--output '{tmp_path / 'latest.jsonl'}' is the input "
                                                    f"'{pin / 'red.jpg'}' (the same once links are resolved)"),
        "an image name": (pin / "blue.png", f"--output '{pin / 'blue.png'}' is named like an image (.png)"),
        "a model file": (model / "config.json", f"--output '{model / 'config.json'}' is the input"),
    }[case]
    done = run_predict("--model", model, pin, "--output", output, cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    assert message in done.stderr and "Traceback" not in done.stderr
    assert {path: path.read_bytes() for path in before} == before
    assert sorted(path.name for path in pin.iterdir()) == ["red.jpg"]
