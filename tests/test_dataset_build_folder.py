"""A build folder: writing records, their LLaVA copy and the summary; reading the records back, checked."""

import json
import os

import pytest

from dataset_builder.build_folder import BuildSummary, LlmUsage, load_records, to_llava, write_outputs
from dataset_builder.records import Record, question_and_answer


def record(i, kind="conversation"):
    return Record(id=f"{kind}/awe_{i:05d}/0", image=f"image/awe/awe_{i:05d}.jpg", emotion="awe", type=kind,
                  conversations=question_and_answer("Q?", "A."), generator="template", prompt_hash="h")


def test_outputs_and_load_records(tmp_path):
    records = [record(i) for i in range(5)]
    write_outputs(tmp_path, records, BuildSummary(emoset_root="/data/emoset"), seed=0)
    assert sorted(os.listdir(tmp_path)) == ["instructions.jsonl", "instructions_llava.json", "summary.json"]
    loaded = load_records(tmp_path)
    assert [r["image"] for r in loaded] == [f"/data/emoset/image/awe/awe_{i:05d}.jpg" for i in range(5)]
    assert load_records(tmp_path, types=("reasoning",)) == []
    assert to_llava(records, 0) == to_llava(records, 0) != to_llava(records, 1)
    with pytest.raises(AssertionError):
        write_outputs(tmp_path, records + records[:1], BuildSummary(emoset_root=""), seed=0)


def test_summary_keys_are_one_schema_in_file_order(tmp_path):
    summary = BuildSummary(emoset_root="/data/emoset", usage=LlmUsage(api_calls=3, cost_usd=0.5))
    write_outputs(tmp_path, [record(0)], summary, seed=0)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert list(written) == [
        "emoset_root", "records_per_type", "records", "images_per_type", "kept_from_earlier_builds", "not_replaced",
        "failed", "skipped", "not_run", "stopped_by_max_cost", "stopped_by_server_error", "api_calls", "retries",
        "capped_retry_waits", "cache_hits", "cache_lines_ignored", "prompt_tokens", "completion_tokens", "cost_usd",
        "cost_usd_total", "cost_usd_reserved", "held_by_rate_limit_headers", "response_format", "response_format_used",
        "response_format_fallback_reason", "batch_api", "generator", "prompt_hashes", "captioner", "args", "quality"]
    assert written["api_calls"] == 3 and written["cost_usd"] == 0.5 and written["stopped_by_server_error"] is None


@pytest.mark.parametrize("change, message", [
    (lambda r: setattr(r, "type", None), "field 'type' is None"),
    (lambda r: setattr(r, "conversations", r.conversations[:1]), "a human question followed by a gpt answer"),
    (lambda r: setattr(r, "image", "../../etc/passwd"), "outside the dataset root"),
    (lambda r: setattr(r, "type", "categorical"), "names None, but field 'emotion' is 'awe'"),
    (lambda r: r.conversations[1].update(value="Predict emotion: fear") or setattr(r, "type", "categorical"),
     "names 'fear', but field 'emotion' is 'awe'"),
])
def test_load_records_names_file_and_line_of_a_bad_record(tmp_path, change, message):
    records = [record(i) for i in range(3)]
    change(records[1])
    (tmp_path / "emoset").mkdir()
    write_outputs(tmp_path, records, BuildSummary(emoset_root=str(tmp_path / "emoset")), seed=0)
    with pytest.raises(ValueError, match=r"instructions.jsonl:2: .*" + message):
        load_records(tmp_path)


@pytest.mark.parametrize("text, message", [
    ("{bad", "summary.json is not valid JSON"),
    ("[]", "summary.json holds a list, not a JSON object"),
    ('{"emoset_root": 3, "records_per_type": {}}', "field 'emoset_root' is 3"),
    ('{"emoset_root": "/data", "records_per_type": []}', "field 'records_per_type' is []"),
])
def test_read_summary_names_the_file_and_field_of_a_damaged_summary(tmp_path, text, message):
    from dataset_builder.build_folder import read_summary

    (tmp_path / "summary.json").write_text(text)
    with pytest.raises(ValueError) as info:
        read_summary(tmp_path)
    assert message in str(info.value)
    assert str(tmp_path / "summary.json") in str(info.value) and "rebuild" in str(info.value)
