"""End-to-end `build`: template backend, OpenAI-compatible backend against llmock, bad inputs, crash + resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from llmock.scenarios import Delay, Reply

from dataset_builder.__main__ import main
from dataset_builder.build import BuildOptions, run_build
from dataset_builder.build_folder import load_records
from dataset_builder.llm import ClientSettings

from testing_utils import CONVERSATION_REPLY, MALFORMED_REPLY, REASONING_REPLY, subprocess_env


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


def test_template_build_writes_all_outputs(synthetic_root, tmp_path):
    out = tmp_path / "out"
    assert main(["build", "--emoset_root", str(synthetic_root), "--output_dir", str(out), "--no_progress",
                 "--per_class", "categorical=3,conversation=2,reasoning=1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records_per_type"] == {"categorical": 24, "conversation": 48, "reasoning": 8}
    assert summary["api_calls"] == 0 and summary["failed"] == [] and summary["skipped"] == []
    records = [json.loads(line) for line in (out / "instructions.jsonl").read_text().splitlines()]
    assert len(records) == 80 and len({r["id"] for r in records}) == 80
    for record in records:
        assert (synthetic_root / record["image"]).is_file() and not record["image"].startswith("/")
        assert [turn["from"] for turn in record["conversations"]] == ["human", "gpt"]
        assert record["generator"] == ("none" if record["type"] == "categorical" else "template")
        assert "brightness" in record["attributes"] and "colorfulness" in record["attributes"]
    categorical = [r for r in records if r["type"] == "categorical"]
    assert all(r["conversations"][1]["value"] == f"Predict emotion: {r['emotion']}" for r in categorical)
    llava = json.loads((out / "instructions_llava.json").read_text())
    assert sorted(e["id"] for e in llava) == sorted(r["id"] for r in records)
    assert set(llava[0]) == {"id", "image", "conversations"}
    loaded = load_records(out, types=("reasoning",))
    assert len(loaded) == 8 and all(r["image"].startswith(str(synthetic_root)) for r in loaded)
    # Drawn per class, reasoning images are a subset of conversation images, which are a subset of categorical ones.
    images = {t: {r["image"] for r in records if r["type"] == t} for t in ("categorical", "conversation", "reasoning")}
    assert images["reasoning"] <= images["conversation"] <= images["categorical"]


def test_llm_build_all_types_then_rerun_makes_zero_requests(synthetic_root, tmp_path, llmock):
    # One request at a time: conversation prompts go first, then reasoning, so the scripted replies line up.
    llmock.add(Reply(text=CONVERSATION_REPLY, times=8), Reply(text=REASONING_REPLY, times=8))
    options = llm_options(synthetic_root, tmp_path / "out", llmock, types=("categorical", "conversation", "reasoning"))
    summary = run_build(options)
    assert summary["records_per_type"] == {"categorical": 16, "conversation": 24, "reasoning": 8}
    assert summary["api_calls"] == len(served(llmock)) == 16
    assert summary["prompt_tokens"] > 0 and summary["completion_tokens"] > 0 and summary["cost_usd"] > 0
    records = load_records(tmp_path / "out")
    reasoning = [r for r in records if r["type"] == "reasoning"]
    assert all(r["generator"] == "openai-compatible:gpt-4o" and len(r["prompt_hash"]) == 12 for r in reasoning)
    assert reasoning[0]["conversations"][0]["value"].startswith("What in this picture")

    again = run_build(llm_options(synthetic_root, tmp_path / "out", llmock, types=("categorical", "conversation", "reasoning")))
    assert len(served(llmock)) == 16
    assert again["api_calls"] == 0 and again["cache_hits"] == 16
    assert again["records_per_type"] == summary["records_per_type"]


def test_malformed_reply_is_retried_once_then_recorded_as_failed(synthetic_root, tmp_path, llmock):
    llmock.add(Reply(text=MALFORMED_REPLY, times=1), Reply(text=CONVERSATION_REPLY, times=7),
               Reply(text=MALFORMED_REPLY, times=None))
    summary = run_build(llm_options(synthetic_root, tmp_path / "out", llmock))
    assert len(served(llmock)) == summary["api_calls"] == 8 + 1
    [failed] = summary["failed"]
    assert failed["type"] == "conversation" and failed["image_id"].startswith("amusement_")
    assert "malformed reply" in failed["reason"] and "found 0" in failed["reason"] and "2 samples" in failed["reason"]
    assert summary["records_per_type"] == {"conversation": 21}
    # The fixed image is absent from the records, and nothing else is.
    images = {r["image"] for r in load_records(tmp_path / "out")}
    assert len(images) == 7 and not any(failed["image_id"] in image for image in images)


def test_malformed_then_good_sample_recovers(synthetic_root, tmp_path, llmock):
    llmock.add(Reply(text=MALFORMED_REPLY, times=2), Reply(text=CONVERSATION_REPLY, times=None))
    summary = run_build(llm_options(synthetic_root, tmp_path / "out", llmock))
    assert summary["failed"] == [] and summary["records_per_type"] == {"conversation": 24}
    assert summary["api_calls"] == 10


def test_dry_run_sends_nothing_and_writes_nothing(synthetic_root, tmp_path, llmock, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "out"
    main(["build", "--emoset_root", str(synthetic_root), "--output_dir", str(out), "--llm_backend", "openai",
          "--base_url", llmock.base_url(), "--per_class", "categorical=4,conversation=2,reasoning=1", "--dry_run",
          "--no_progress"])
    report = json.loads(capsys.readouterr().out)
    assert report["conversation"]["to_send"] == 16 and report["reasoning"]["to_send"] == 8
    assert report["reasoning"]["estimated_prompt_tokens"] > report["conversation"]["estimated_prompt_tokens"] / 2
    assert report["conversation"]["estimated_cost_usd"] > 0
    assert served(llmock) == []
    assert not (out / "instructions.jsonl").exists() and not (out / "summary.json").exists()


def test_max_cost_stops_the_build_cleanly(synthetic_root, tmp_path, llmock):
    llmock.add(Reply(text=CONVERSATION_REPLY, times=None))
    options = llm_options(synthetic_root, tmp_path / "out", llmock, per_class={"conversation": 2},
                          price_per_mtok=(1000.0, 1000.0), max_cost=1.0)
    summary = run_build(options)
    assert summary["stopped_by_max_cost"] and summary["cost_usd"] <= 1.0
    assert 0 < summary["api_calls"] == len(served(llmock)) < 16
    assert len(summary["not_run"]) == 16 - summary["api_calls"]
    assert all("max_cost" in entry["reason"] and entry["image_id"] for entry in summary["not_run"])
    assert summary["records_per_type"]["conversation"] == 3 * summary["api_calls"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["stopped_by_max_cost"]


def test_secrets_stay_out_of_summary_and_logs(synthetic_root, tmp_path, llmock, caplog, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-SECRET-key")
    llmock.add(Reply(text=CONVERSATION_REPLY, times=None))
    args = ["build", "--emoset_root", str(synthetic_root), "--output_dir", str(tmp_path / "out"), "--llm_backend", "openai",
            "--types", "conversation", "--per_class", "conversation=1", "--no_progress", "--base_url"]
    with pytest.raises(SystemExit, match="has a password in it"):
        main(args + [llmock.base_url().replace("http://", "http://user:SECRETPASS@")])
    with caplog.at_level("DEBUG"):
        main(args + [llmock.base_url()])
    assert len(served(llmock)) == 8
    text = "".join(p.read_bytes().decode(errors="replace") for p in (tmp_path / "out").iterdir())
    assert "SECRET" not in text and "SECRET" not in caplog.text
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["args"]["base_url"] == llmock.base_url()


def test_bad_inputs_are_counted_skips_and_the_run_goes_on(synthetic_root, tmp_path):
    root = tmp_path / "emoset"
    shutil.copytree(synthetic_root, root)
    train = json.loads((root / "train.json").read_text())
    # the first training image of three emotions: one loses its annotation, one is truncated, one gets a bad label
    awe, fear, sad = (next(entry for entry in train if entry[0] == emotion) for emotion in ("awe", "fear", "sadness"))
    (root / awe[3]).unlink()  # missing annotation
    (root / fear[2]).write_bytes((root / fear[2]).read_bytes()[:200])  # corrupt JPEG
    sad[0] = "joy"  # unknown emotion
    (root / "train.json").write_text(json.dumps(train))
    summary = run_build(BuildOptions(emoset_root=str(root), output_dir=str(tmp_path / "out"), types=("categorical",),
                                     per_class={"categorical": 4}, show_progress=False))
    reasons = {s["item"]: s["reason"] for s in summary["skipped"]}
    assert len(reasons) == 3, reasons
    assert "annotation file" in reasons[awe[1]] and f"{awe[1]}.json is missing" in reasons[awe[1]]
    assert f"{fear[1]}.jpg cannot be decoded" in reasons[fear[1]]
    [unknown] = [r for item, r in reasons.items() if sad[1] in item]
    assert "unknown emotion 'joy'" in unknown
    assert summary["records_per_type"]["categorical"] == 32 - 3


@pytest.mark.parametrize("breakage, message", [
    ("empty", "the split is empty"),
    ("missing_root", "is not a readable directory"),
    ("bad_entry", "expected [emotion, image_id, image_path, annotation_path]"),
])
def test_unusable_inputs_raise_with_the_file_named(synthetic_root, tmp_path, breakage, message):
    root = tmp_path / "emoset"
    shutil.copytree(synthetic_root, root)
    if breakage == "empty":
        (root / "train.json").write_text("[]")
    elif breakage == "missing_root":
        shutil.rmtree(root)
    else:
        (root / "train.json").write_text(json.dumps([["awe", "x"]]))
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        run_build(BuildOptions(emoset_root=str(root), output_dir=str(tmp_path / "out"), show_progress=False))
    assert message in str(info.value) and str(root) in str(info.value)


@pytest.mark.integration
def test_killed_build_resumes_without_repeating_completed_requests(synthetic_root, tmp_path, llmock):
    llmock.add(Delay(0.15, times=None), Reply(text=CONVERSATION_REPLY, times=None))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "dataset_builder", "build", "--emoset_root", str(synthetic_root), "--output_dir", str(out),
               "--llm_backend", "openai", "--base_url", llmock.base_url(), "--types", "conversation",
               "--per_class", "conversation=4", "--concurrency", "2", "--no_progress"]
    env = subprocess_env(OPENAI_API_KEY="sk-test")
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
    llmock.add(Reply(text=CONVERSATION_REPLY, times=None))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    second_run = served(llmock)
    assert len(second_run) == 32 - len(done_before)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cache_hits"] == len(done_before) and summary["api_calls"] == len(second_run)
    records = [json.loads(line) for line in (out / "instructions.jsonl").read_text().splitlines()]
    assert len(records) == 96 and len({r["id"] for r in records}) == 96


def same_prompt_root(synthetic_root, tmp_path):
    """A copy of the synthetic EmoSet where all train images of an emotion have one annotation, hence one prompt."""
    root = tmp_path / "emoset-same"
    shutil.copytree(synthetic_root, root)
    for emotion, _image_id, _image, annotation in json.loads((root / "train.json").read_text()):
        (root / annotation).write_text(json.dumps({"emotion": emotion, "brightness": 0.5, "colorfulness": 0.5}))
    return root


def numbered_reply(number):
    return CONVERSATION_REPLY.replace("warm, bright yellow", f"warm, bright yellow number {number}")


def test_rerun_reproduces_records_of_images_with_identical_prompts(synthetic_root, tmp_path, llmock):
    root = same_prompt_root(synthetic_root, tmp_path)
    llmock.add(*(Reply(text=numbered_reply(n), times=1) for n in range(16)))
    options = llm_options(root, tmp_path / "out", llmock, per_class={"conversation": 2})
    run_build(options)
    first = (tmp_path / "out" / "instructions.jsonl").read_text()
    answers = {json.loads(line)["conversations"][1]["value"] for line in first.splitlines()}
    assert len(answers) == 16 + 2  # one distinct first answer per image, plus the two shared ones
    again = run_build(options)
    assert again["api_calls"] == 0 and again["cache_hits"] == 16
    assert (tmp_path / "out" / "instructions.jsonl").read_text() == first


def test_build_of_other_types_keeps_earlier_types(synthetic_root, tmp_path, llmock, caplog):
    llmock.add(Reply(text=CONVERSATION_REPLY, times=None))
    out = tmp_path / "out"
    first = run_build(llm_options(synthetic_root, out, llmock, types=("categorical", "conversation")))
    assert first["records_per_type"] == {"categorical": 16, "conversation": 24}
    before = {r["id"]: r for r in map(json.loads, (out / "instructions.jsonl").read_text().splitlines())}
    with caplog.at_level("INFO"):
        second = run_build(llm_options(synthetic_root, out, llmock, types=("categorical",),
                                       per_class={"categorical": 1}))
    assert second["records_per_type"] == {"categorical": 8, "conversation": 24}
    assert second["kept_from_earlier_builds"] == {"conversation": 24}
    assert second["generator"]["conversation"] == "openai-compatible:gpt-4o"
    after = {r["id"]: r for r in map(json.loads, (out / "instructions.jsonl").read_text().splitlines())}
    assert {i: r for i, r in after.items() if r["type"] == "conversation"} == \
        {i: r for i, r in before.items() if r["type"] == "conversation"}
    assert len(json.loads((out / "instructions_llava.json").read_text())) == 32
    assert "keeping 24 records" in caplog.text
    assert json.loads((out / "summary.json").read_text())["kept_from_earlier_builds"] == {"conversation": 24}


def test_keeping_records_of_another_emoset_root_is_refused(synthetic_root, tmp_path):
    out = tmp_path / "out"
    run_build(BuildOptions(emoset_root=str(synthetic_root), output_dir=str(out), types=("categorical", "conversation"),
                           per_class={"categorical": 1, "conversation": 1}, show_progress=False))
    other = tmp_path / "other"
    shutil.copytree(synthetic_root, other)
    with pytest.raises(ValueError, match="emoset_root"):
        run_build(BuildOptions(emoset_root=str(other), output_dir=str(out), types=("categorical",),
                               per_class={"categorical": 1}, show_progress=False))
    assert len((out / "instructions.jsonl").read_text().splitlines()) == 8 + 24


@pytest.mark.integration
def test_second_build_on_a_locked_folder_fails_and_a_killed_holder_does_not_block(synthetic_root, tmp_path, llmock, capsys):
    import multiprocessing

    # The first build, a forked process, hangs on its first request while holding the folder, until it is killed.
    llmock.add(Delay(30, times=None), Reply(text=CONVERSATION_REPLY, times=None))
    out = tmp_path / "out"
    holder = multiprocessing.get_context("fork").Process(
        target=run_build, args=(llm_options(synthetic_root, out, llmock, per_class={"conversation": 4}),))
    holder.start()
    try:
        lock = out / ".build.lock"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip() == str(holder.pid)):
            time.sleep(0.02)
        assert lock.read_text().strip() == str(holder.pid), "the first build never took the lock"
        capsys.readouterr()
        assert main(["build", "--emoset_root", str(synthetic_root), "--output_dir", str(out), "--llm_backend", "openai",
                     "--base_url", llmock.base_url(), "--types", "conversation", "--per_class", "conversation=4",
                     "--no_progress"]) != 0
        err = capsys.readouterr().err
        assert "another build" in err and str(out) in err and str(holder.pid) in err
        assert not (out / "instructions.jsonl").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    assert holder.exitcode == -signal.SIGKILL
    llmock.reset()
    llmock.add(Reply(text=CONVERSATION_REPLY, times=None))
    start = time.monotonic()
    summary = run_build(llm_options(synthetic_root, out, llmock, per_class={"conversation": 4}))
    assert summary["records_per_type"] == {"conversation": 96} and time.monotonic() - start < 30


def test_a_cache_dir_another_build_holds_is_named_with_its_own_flag(synthetic_root, tmp_path, capsys):
    """Two builds into different folders sharing one --cache_dir: the refusal names the cache folder and
    --cache_dir, and says what to do about it, not to change --output_dir."""
    from dataset_builder.build import hold_folder_lock

    cache = tmp_path / "shared-cache"
    with hold_folder_lock(cache):
        code = main(["build", "--emoset_root", str(synthetic_root), "--output_dir", str(tmp_path / "out"),
                     "--cache_dir", str(cache), "--types", "categorical", "--per_class", "categorical=1",
                     "--no_progress"])
    err = capsys.readouterr().err
    assert code == 1 and f"--cache_dir {cache} is in use by another build (process {os.getpid()}" in err
    assert "another --cache_dir" in err and "--output_dir" not in err
    assert not (tmp_path / "out" / "instructions.jsonl").exists()


@pytest.mark.parametrize("flag", ["--output_dir", "--cache_dir"])
def test_an_output_or_cache_folder_that_is_a_file_is_named_with_its_flag(synthetic_root, tmp_path, flag):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    folders = {"--output_dir": str(tmp_path / "out"), "--cache_dir": str(tmp_path / "cache"), flag: str(file)}
    with pytest.raises(ValueError, match=f"{flag} {file} is a file"):
        main(["build", "--emoset_root", str(synthetic_root), "--output_dir", folders["--output_dir"], "--cache_dir",
              folders["--cache_dir"], "--types", "categorical", "--per_class", "categorical=1", "--no_progress"])
    assert file.read_text() == "mine"


def test_credentials_in_base_url_never_reach_outputs_or_logs(synthetic_root, tmp_path, llmock, caplog):
    llmock.add(Reply(text=CONVERSATION_REPLY, times=None))
    url = llmock.base_url().replace("http://", "http://USERSECRET@") + "?api_key=QUERYSECRET#FRAGSECRET"
    with caplog.at_level("DEBUG"):
        summary = run_build(llm_options(synthetic_root, tmp_path / "out", llmock, base_url=url))
    assert summary["records_per_type"] == {"conversation": 24}
    text = "".join(p.read_bytes().decode(errors="replace") for p in (tmp_path / "out").iterdir() if p.is_file())
    for secret in ("USERSECRET", "QUERYSECRET", "FRAGSECRET"):
        assert secret not in text and secret not in caplog.text
    assert summary["args"]["base_url"] == llmock.base_url()


@pytest.mark.parametrize("finish", ["length", "content_filter"])
def test_cut_off_reply_gets_a_fresh_sample_then_fails(synthetic_root, tmp_path, llmock, finish):
    llmock.add(Reply(text=CONVERSATION_REPLY, finish_reason=finish, times=2),
               Reply(text=CONVERSATION_REPLY, times=6), Reply(text=CONVERSATION_REPLY, finish_reason=finish, times=None))
    summary = run_build(llm_options(synthetic_root, tmp_path / "out", llmock))
    # 8 first samples, 2 of them cut off; the 2 fresh samples are cut off again, so those images fail.
    assert summary["api_calls"] == 8 + 2
    assert len(summary["failed"]) == 2 and summary["records_per_type"] == {"conversation": 18}
    assert all(f"finish_reason {finish}" in f["reason"] and "2 samples" in f["reason"] for f in summary["failed"])


def test_max_cost_is_the_total_for_the_folder(synthetic_root, tmp_path, llmock):
    llmock.add(Reply(text=CONVERSATION_REPLY, times=None))
    options = llm_options(synthetic_root, tmp_path / "out", llmock, per_class={"conversation": 2},
                          price_per_mtok=(1000.0, 1000.0), max_cost=1.0)
    first = run_build(options)
    assert first["stopped_by_max_cost"] and 0 < first["api_calls"] < 16
    again = run_build(options)
    assert again["api_calls"] == 0 and again["stopped_by_max_cost"]
    assert again["cost_usd_total"] == pytest.approx(first["cost_usd"]) and again["cost_usd_total"] <= 1.0
    assert len(served(llmock)) == first["api_calls"]


@pytest.mark.parametrize("flag, value", [
    ("--requests_per_minute", "0"), ("--tokens_per_minute", "-5"), ("--concurrency", "0"), ("--max_retries", "-1"),
    ("--max_cost", "nan"), ("--max_cost", "-1"), ("--max_cost", "inf"), ("--request_timeout", "0"),
    ("--max_retry_wait", "-1"), ("--max_retry_wait", "nan"), ("--caption_batch_size", "0"), ("--temperature", "nan"),
    ("--base_url", "http//localhost:8000/v1"),
])
def test_bad_flags_are_refused_before_any_work(synthetic_root, tmp_path, llmock, capsys, flag, value):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        # The captioner does not exist: a flag error must come before any attempt to load it.
        main(["build", "--emoset_root", str(synthetic_root), "--output_dir", str(out), "--llm_backend", "openai",
              "--base_url", llmock.base_url(), "--captioner", str(tmp_path / "no-such-captioner"), "--no_progress",
              flag, value])
    assert info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert flag in err and "unrecognized" not in err
    assert not out.exists() and served(llmock) == []


def test_server_refusing_stops_the_build_keeping_what_was_answered(synthetic_root, tmp_path, llmock, capsys):
    from llmock.scenarios import Fail

    out = tmp_path / "out"
    command = ["build", "--emoset_root", str(synthetic_root), "--output_dir", str(out), "--llm_backend", "openai",
               "--base_url", llmock.base_url(), "--types", "conversation", "--concurrency", "1", "--no_progress"]
    llmock.add(Reply(text=CONVERSATION_REPLY, times=None))
    assert main(command + ["--per_class", "conversation=1"]) == 0
    llmock.reset()
    llmock.add(Fail(401, message="invalid key", times=None))
    capsys.readouterr()
    code = main(command + ["--per_class", "conversation=2"])
    assert code != 0
    assert "HTTP 401" in capsys.readouterr().err
    assert len(served(llmock)) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records_per_type"] == {"conversation": 24} and "HTTP 401" in summary["stopped_by_server_error"]
    assert len(summary["not_run"]) == 16 - 8 - 3 and len(summary["failed"]) == 3
    assert len((out / "llm_cache.jsonl").read_text().splitlines()) == 8


def template_folder(root, out):
    """A folder holding 8 categorical and 48 template conversation records; returns its three files' bytes."""
    run_build(BuildOptions(emoset_root=str(root), output_dir=str(out), types=("categorical", "conversation"),
                           per_class={"categorical": 1, "conversation": 2}, show_progress=False))
    return {name: (out / name).read_bytes() for name in ("instructions.jsonl", "instructions_llava.json")}


def test_a_rebuild_the_server_refuses_keeps_the_earlier_records_of_its_type(synthetic_root, tmp_path, llmock,
                                                                            capsys):
    """The records of a type are replaced only once every image of it was answered: a rebuild against a server
    that answers 401 exits 1 and leaves the 48 conversation records (and their LLaVA copy) as they were."""
    from llmock.scenarios import Fail

    out = tmp_path / "out"
    before = template_folder(synthetic_root, out)
    llmock.add(Fail(401, message="invalid key", times=None))
    capsys.readouterr()
    code = main(["build", "--emoset_root", str(synthetic_root), "--output_dir", str(out), "--llm_backend", "openai",
                 "--base_url", llmock.base_url(), "--types", "conversation", "--per_class", "conversation=2",
                 "--concurrency", "1", "--no_progress"])
    err = capsys.readouterr().err
    assert code == 1 and "HTTP 401" in err and "48 conversation records" in err
    assert {name: (out / name).read_bytes() for name in before} == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records_per_type"] == {"categorical": 8, "conversation": 48}
    assert summary["kept_from_earlier_builds"] == {"categorical": 8, "conversation": 48}
    assert summary["generator"]["conversation"] == "template" and "HTTP 401" in summary["not_replaced"]["conversation"]


def test_a_rebuild_stopped_by_max_cost_keeps_the_earlier_records_of_its_type(synthetic_root, tmp_path, llmock):
    llmock.add(Reply(text=CONVERSATION_REPLY, times=None))
    out = tmp_path / "out"
    before = template_folder(synthetic_root, out)
    summary = run_build(llm_options(synthetic_root, out, llmock, per_class={"conversation": 2},
                                    price_per_mtok=(1000.0, 1000.0), max_cost=1.0))
    assert summary["stopped_by_max_cost"] and 0 < summary["api_calls"] < 16
    assert {name: (out / name).read_bytes() for name in before} == before
    assert summary["records_per_type"]["conversation"] == 48 and "--max_cost" in summary["not_replaced"]["conversation"]
    # Once every image is answered (a higher ceiling; what was paid for comes from the cache), the type is replaced.
    again = run_build(llm_options(synthetic_root, out, llmock, per_class={"conversation": 2}))
    assert again["cache_hits"] == summary["api_calls"] and again["not_replaced"] == {}
    assert again["records_per_type"] == {"categorical": 8, "conversation": 48}
    assert again["generator"]["conversation"] == "openai-compatible:gpt-4o"
    assert (out / "instructions.jsonl").read_bytes() != before["instructions.jsonl"]


def test_template_rebuild_over_llm_records_is_refused_unless_asked_for(synthetic_root, tmp_path, llmock):
    llmock.add(Reply(text=CONVERSATION_REPLY, times=None))
    out = tmp_path / "out"
    run_build(llm_options(synthetic_root, out, llmock))
    before = (out / "instructions.jsonl").read_bytes()
    template = ["build", "--emoset_root", str(synthetic_root), "--output_dir", str(out), "--types", "conversation",
                "--per_class", "conversation=1", "--no_progress"]
    with pytest.raises(ValueError, match="--replace_llm_records") as info:
        main(template)
    assert "24 conversation records written by openai-compatible:gpt-4o" in str(info.value)
    assert (out / "instructions.jsonl").read_bytes() == before
    assert main(template + ["--replace_llm_records"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generator"]["conversation"] == "template" and summary["records_per_type"] == {"conversation": 24}


def test_structured_output_build_reports_format_and_malformed_rate(synthetic_root, tmp_path, llmock, monkeypatch):
    # llmock answers json_schema requests with JSON valid under the schema: conversation pairs that pass the checks,
    # reasoning answers too short to (malformed on both samples).
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    out = tmp_path / "out"
    assert main(["build", "--emoset_root", str(synthetic_root), "--output_dir", str(out), "--llm_backend", "openai",
                 "--base_url", llmock.base_url(), "--types", "conversation,reasoning", "--no_progress",
                 "--per_class", "conversation=1,reasoning=1", "--response_format", "json_schema"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["response_format"] == summary["response_format_used"] == summary["args"]["response_format"] \
        == "json_schema"
    assert summary["response_format_fallback_reason"] is None
    assert summary["quality"]["replies"] == {
        "conversation": {"replies": 8, "malformed": 0, "malformed_rate": 0.0, "leak_filter_hits": 0},
        "reasoning": {"replies": 16, "malformed": 16, "malformed_rate": 1.0, "leak_filter_hits": 0}}
    # llmock's schema replies repeat one pair three times: the duplicate step keeps one pair per image.
    assert summary["records_per_type"] == {"conversation": 8, "reasoning": 0}
    removed = summary["quality"]["duplicates_removed"]["conversation"]
    assert removed["exact"] + removed["near"] == 16
    assert all("response_format" in r.body for r in served(llmock))


LEAK_REPLY = CONVERSATION_REPLY.replace("The background is mostly", "The caption says the background is mostly")
DUPLICATE_REPLY = """Question: Which colour fills most of the frame?
Answer: Mostly a deep blue.
question: which colour fills most of the frame
answer: mostly a deep BLUE!
Question: Why could this calm scene make someone feel at peace?
Answer: The even light and the cool, quiet colours slow the eye down, which feels restful.
"""
NEAR_DUPLICATE_REPLY = """Question: What stands in the middle of the picture?
Answer: A tall green tree stands in the middle of an open field.
Question: What stands in the middle of the picture?
Answer: A tall green tree stands in the middle of an open meadow.
Question: How might the open space change the mood of the picture?
Answer: All that empty room around the tree makes it look lonely, which can feel a little sad.
"""


def test_build_removes_duplicate_pairs_and_reports_refused_replies(synthetic_root, tmp_path, llmock):
    """One request at a time, so the replies go in order to the 8 images: a reply the leak filter refuses (its retry
    comes last and is well formed), one with an exact and one with a near duplicate pair, five ordinary ones."""
    llmock.add(Reply(text=LEAK_REPLY, times=1), Reply(text=DUPLICATE_REPLY, times=1),
               Reply(text=NEAR_DUPLICATE_REPLY, times=1), Reply(text=CONVERSATION_REPLY, times=None))
    out = tmp_path / "out"
    summary = run_build(llm_options(synthetic_root, out, llmock))
    assert len(served(llmock)) == 9 and summary["failed"] == []
    assert summary["records_per_type"] == {"conversation": 22}
    quality = summary["quality"]
    removed = quality["duplicates_removed"]["conversation"]
    assert (removed["exact"], removed["near"]) == (1, 1)
    assert [(e["id"].split("/")[2], e["duplicate_of"].split("/")[2], e["match"]) for e in removed["examples"]] == [
        ("1", "0", "exact"), ("1", "0", "near")]
    ids = {r["id"] for r in load_records(out)}
    assert all(e["id"] not in ids and e["duplicate_of"] in ids for e in removed["examples"])
    assert quality["replies"] == {"conversation": {"replies": 9, "malformed": 1, "malformed_rate": round(1 / 9, 4),
                                                   "leak_filter_hits": 1}}
    # The six images answered with the same reply share 3 pairs, each repeated on 5 other images: kept, counted.
    assert quality["cross_image_duplicate_pairs"] == {"conversation": 15}
    assert json.loads((out / "summary.json").read_text())["quality"] == quality


def test_template_build_writes_the_quality_report_and_its_plot(instructions_dir):
    from PIL import Image

    summary = json.loads((instructions_dir / "summary.json").read_text())
    quality = summary["quality"]
    assert quality["records_per_type_and_emotion"]["conversation"] == {
        e: 9 for e in ("amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness")}
    assert sum(quality["records_per_type_and_emotion"]["categorical"].values()) == 24
    assert quality["answer_words"]["categorical"] == {"min": 3, "median": 3, "p90": 3, "max": 3, "mean": 3.0}
    assert set(quality["question_distinct_n"]) == {"categorical", "conversation", "reasoning"}
    assert quality["duplicates_removed"] == {k: {"exact": 0, "near": 0, "examples": []}
                                             for k in ("conversation", "reasoning")}
    assert quality["replies"] == {}  # templates send no requests
    with Image.open(instructions_dir / "quality.png") as image:
        assert image.format == "PNG" and image.size == (1200, 800)
