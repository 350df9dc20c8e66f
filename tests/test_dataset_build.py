"""End-to-end `build`: template backend, OpenAI-compatible backend against llmock, bad inputs, crash + resume."""

import json
import shutil
import signal
import subprocess
import sys
import time

import dataset_fixtures as F
import pytest
from dataset_fixtures import synth_root  # noqa: F401  (fixture)
from llmock.scenarios import Delay, Reply

from dataset_builder.__main__ import main
from dataset_builder.build import BuildOptions, run_build
from dataset_builder.llm_client import ClientSettings
from dataset_builder.records import load_records

CHAT_PATH = "/v1/chat/completions"


def served(llmock):
    return [r for r in llmock.requests if r.path == CHAT_PATH]


def llm_options(root, out, llmock, types=("conversation",), per_class=None, **settings):
    defaults = dict(model="gpt-4o", base_url=llmock.base_url(), api_key="sk-SECRET-key", concurrency=1,
                    backoff_base_s=0.02, backoff_max_s=0.1)
    defaults.update(settings)
    return BuildOptions(emoset_root=str(root), output_dir=str(out), types=types,
                        per_class=per_class or {"categorical": 2, "conversation": 1, "reasoning": 1},
                        llm_backend="openai", show_progress=False, llm=ClientSettings(**defaults))


def test_template_build_writes_all_outputs(synth_root, tmp_path):
    out = tmp_path / "out"
    assert main(["build", "--emoset_root", str(synth_root), "--output_dir", str(out), "--no_progress",
                 "--per_class", "categorical=3,conversation=2,reasoning=1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records_per_type"] == {"categorical": 24, "conversation": 48, "reasoning": 8}
    assert summary["api_calls"] == 0 and summary["failed"] == [] and summary["skipped"] == []
    records = [json.loads(line) for line in (out / "instructions.jsonl").read_text().splitlines()]
    assert len(records) == 80 and len({r["id"] for r in records}) == 80
    for record in records:
        assert (synth_root / record["image"]).is_file() and not record["image"].startswith("/")
        assert [turn["from"] for turn in record["conversations"]] == ["human", "gpt"]
        assert record["generator"] == ("none" if record["type"] == "categorical" else "template")
        assert "brightness" in record["attributes"] and "colorfulness" in record["attributes"]
    categorical = [r for r in records if r["type"] == "categorical"]
    assert all(r["conversations"][1]["value"] == f"Predict emotion: {r['emotion']}" for r in categorical)
    llava = json.loads((out / "instructions_llava.json").read_text())
    assert sorted(e["id"] for e in llava) == sorted(r["id"] for r in records)
    assert set(llava[0]) == {"id", "image", "conversations"}
    loaded = load_records(out, types=("reasoning",))
    assert len(loaded) == 8 and all(r["image"].startswith(str(synth_root)) for r in loaded)
    # Drawn per class, reasoning images are a subset of conversation images, which are a subset of categorical ones.
    images = {t: {r["image"] for r in records if r["type"] == t} for t in ("categorical", "conversation", "reasoning")}
    assert images["reasoning"] <= images["conversation"] <= images["categorical"]


def test_llm_build_all_types_then_rerun_makes_zero_requests(synth_root, tmp_path, llmock):
    # One request at a time: conversation prompts go first, then reasoning, so the scripted replies line up.
    llmock.add(Reply(text=F.CONVERSATION_REPLY, times=8), Reply(text=F.REASONING_REPLY, times=8))
    options = llm_options(synth_root, tmp_path / "out", llmock, types=("categorical", "conversation", "reasoning"))
    summary = run_build(options)
    assert summary["records_per_type"] == {"categorical": 16, "conversation": 24, "reasoning": 8}
    assert summary["api_calls"] == len(served(llmock)) == 16
    assert summary["prompt_tokens"] > 0 and summary["completion_tokens"] > 0 and summary["cost_usd"] > 0
    records = load_records(tmp_path / "out")
    reasoning = [r for r in records if r["type"] == "reasoning"]
    assert all(r["generator"] == "openai-compatible:gpt-4o" and len(r["prompt_hash"]) == 12 for r in reasoning)
    assert reasoning[0]["conversations"][0]["value"].startswith("What in this picture")

    again = run_build(llm_options(synth_root, tmp_path / "out", llmock, types=("categorical", "conversation", "reasoning")))
    assert len(served(llmock)) == 16
    assert again["api_calls"] == 0 and again["cache_hits"] == 16
    assert again["records_per_type"] == summary["records_per_type"]


def test_malformed_reply_is_retried_once_then_recorded_as_failed(synth_root, tmp_path, llmock):
    llmock.add(Reply(text=F.MALFORMED_REPLY, times=1), Reply(text=F.CONVERSATION_REPLY, times=7),
               Reply(text=F.MALFORMED_REPLY, times=None))
    summary = run_build(llm_options(synth_root, tmp_path / "out", llmock))
    assert len(served(llmock)) == summary["api_calls"] == 8 + 1
    [failed] = summary["failed"]
    assert failed["type"] == "conversation" and failed["image_id"].startswith("amusement_")
    assert "malformed reply" in failed["reason"] and "found 0" in failed["reason"] and "2 samples" in failed["reason"]
    assert summary["records_per_type"] == {"conversation": 21}
    # The fixed image is absent from the records, and nothing else is.
    images = {r["image"] for r in load_records(tmp_path / "out")}
    assert len(images) == 7 and not any(failed["image_id"] in image for image in images)


def test_malformed_then_good_sample_recovers(synth_root, tmp_path, llmock):
    llmock.add(Reply(text=F.MALFORMED_REPLY, times=2), Reply(text=F.CONVERSATION_REPLY, times=None))
    summary = run_build(llm_options(synth_root, tmp_path / "out", llmock))
    assert summary["failed"] == [] and summary["records_per_type"] == {"conversation": 24}
    assert summary["api_calls"] == 10


def test_dry_run_sends_nothing_and_writes_nothing(synth_root, tmp_path, llmock, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "out"
    main(["build", "--emoset_root", str(synth_root), "--output_dir", str(out), "--llm_backend", "openai",
          "--base_url", llmock.base_url(), "--per_class", "categorical=4,conversation=2,reasoning=1", "--dry_run",
          "--no_progress"])
    report = json.loads(capsys.readouterr().out)
    assert report["conversation"]["to_send"] == 16 and report["reasoning"]["to_send"] == 8
    assert report["reasoning"]["estimated_prompt_tokens"] > report["conversation"]["estimated_prompt_tokens"] / 2
    assert report["conversation"]["estimated_cost_usd"] > 0
    assert served(llmock) == []
    assert not (out / "instructions.jsonl").exists() and not (out / "summary.json").exists()


def test_max_cost_stops_the_build_cleanly(synth_root, tmp_path, llmock):
    llmock.add(Reply(text=F.CONVERSATION_REPLY, times=None))
    options = llm_options(synth_root, tmp_path / "out", llmock, per_class={"conversation": 2},
                          price_per_mtok=(1000.0, 1000.0), max_cost=1.0)
    summary = run_build(options)
    assert summary["stopped_by_max_cost"] and summary["cost_usd"] <= 1.0
    assert 0 < summary["api_calls"] == len(served(llmock)) < 16
    assert len(summary["not_run"]) == 16 - summary["api_calls"]
    assert all("max_cost" in entry["reason"] and entry["image_id"] for entry in summary["not_run"])
    assert summary["records_per_type"]["conversation"] == 3 * summary["api_calls"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["stopped_by_max_cost"]


def test_secrets_stay_out_of_summary_and_logs(synth_root, tmp_path, llmock, caplog, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-SECRET-key")
    llmock.add(Reply(text=F.CONVERSATION_REPLY, times=None))
    args = ["build", "--emoset_root", str(synth_root), "--output_dir", str(tmp_path / "out"), "--llm_backend", "openai",
            "--types", "conversation", "--per_class", "conversation=1", "--no_progress", "--base_url"]
    with pytest.raises(SystemExit, match="has a password in it"):
        main(args + [llmock.base_url().replace("http://", "http://user:SECRETPASS@")])
    with caplog.at_level("DEBUG"):
        main(args + [llmock.base_url()])
    assert len(served(llmock)) == 8
    text = "".join(p.read_text() for p in (tmp_path / "out").iterdir())
    assert "SECRET" not in text and "SECRET" not in caplog.text
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["args"]["base_url"] == llmock.base_url()


def test_bad_inputs_are_counted_skips_and_the_run_goes_on(synth_root, tmp_path):
    root = tmp_path / "emoset"
    shutil.copytree(synth_root, root)
    train = json.loads((root / "train.json").read_text())
    by_id = {entry[1]: entry for entry in train}
    (root / by_id["awe_00000"][3]).unlink()  # missing annotation
    (root / by_id["fear_00001"][2]).write_bytes((root / by_id["fear_00001"][2]).read_bytes()[:200])  # corrupt JPEG
    by_id["sadness_00002"][0] = "joy"  # unknown emotion
    (root / "train.json").write_text(json.dumps(train))
    summary = run_build(BuildOptions(emoset_root=str(root), output_dir=str(tmp_path / "out"), types=("categorical",),
                                     per_class={"categorical": 4}, show_progress=False))
    reasons = {s["item"]: s["reason"] for s in summary["skipped"]}
    assert len(reasons) == 3, reasons
    assert "annotation file" in reasons["awe_00000"] and "awe_00000.json is missing" in reasons["awe_00000"]
    assert "fear_00001.jpg cannot be decoded" in reasons["fear_00001"]
    [unknown] = [r for item, r in reasons.items() if "sadness_00002" in item]
    assert "unknown emotion 'joy'" in unknown
    assert summary["records_per_type"]["categorical"] == 32 - 3


@pytest.mark.parametrize("breakage, message", [
    ("empty", "the split is empty"),
    ("missing_root", "is not a readable directory"),
    ("bad_entry", "expected [emotion, image_id, image_path, annotation_path]"),
])
def test_unusable_inputs_raise_with_the_file_named(synth_root, tmp_path, breakage, message):
    root = tmp_path / "emoset"
    shutil.copytree(synth_root, root)
    if breakage == "empty":
        (root / "train.json").write_text("[]")
    elif breakage == "missing_root":
        shutil.rmtree(root)
    else:
        (root / "train.json").write_text(json.dumps([["awe", "x"]]))
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        run_build(BuildOptions(emoset_root=str(root), output_dir=str(tmp_path / "out"), show_progress=False))
    assert message in str(info.value) and str(root) in str(info.value)


def test_killed_build_resumes_without_repeating_completed_requests(synth_root, tmp_path, llmock):
    llmock.add(Delay(0.15, times=None), Reply(text=F.CONVERSATION_REPLY, times=None))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "dataset_builder", "build", "--emoset_root", str(synth_root), "--output_dir", str(out),
               "--llm_backend", "openai", "--base_url", llmock.base_url(), "--types", "conversation",
               "--per_class", "conversation=4", "--concurrency", "2", "--no_progress"]
    env = F.subprocess_env(OPENAI_API_KEY="sk-test")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = out / "llm_cache.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 8):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "instructions.jsonl").exists()  # killed before the end: no partial output
    first_run = served(llmock)
    done_before = [json.loads(line)["name"] for line in cache.read_text().splitlines() if line.endswith("}")]
    assert 8 <= len(done_before) < 32
    # kill -9 loses at most the requests in flight.
    assert len(first_run) - len(done_before) <= 2

    llmock.reset()
    llmock.add(Reply(text=F.CONVERSATION_REPLY, times=None))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    second_run = served(llmock)
    assert len(second_run) == 32 - len(done_before)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cache_hits"] == len(done_before) and summary["api_calls"] == len(second_run)
    records = [json.loads(line) for line in (out / "instructions.jsonl").read_text().splitlines()]
    assert len(records) == 96 and len({r["id"] for r in records}) == 96
