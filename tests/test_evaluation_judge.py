"""emovit.evaluation.judge: the rubric reply parser, and the judge against a real OpenAI-compatible server on
loopback (llmock): scores parsed into the rows, a malformed reply counted, the cache making a rerun send nothing,
the dry run sending nothing, the cost ceiling, and the API key kept out of every file. Requests are counted at the
server (llmock's journal), never by patching the client."""

import json

import pytest
from llmock.scenarios import Reply

from emovit.evaluation.arguments import EvalArguments
from emovit.evaluation.judge import RUBRIC, judge_rows, judge_settings, parse_judge_reply


CHAT_PATH = "/v1/chat/completions"
GOOD = '{"grounding": 4, "plausibility": 5, "specificity": 3, "rationale": "Names the bench and the rain."}'
FENCED = 'Here you go:\n```json\n{"grounding": 2, "plausibility": 3.0, "specificity": 1}\n```'
MALFORMED = "I would rate it quite highly overall."


def served(llmock):
    return [r for r in llmock.requests if r.path == CHAT_PATH]


def rows():
    return [
        {"id": "sadness_1", "explanation": "Rain falls on an empty bench; the grey light feels sad.",
         "attributes": {"scene": "cemetery", "object": ["Bench"], "brightness": 0.3, "colorfulness": 0.2}},
        {"id": "awe_2", "explanation": "A vast peak under a clear sky.",
         "attributes": {"scene": "mountain", "brightness": 0.8, "colorfulness": 0.5}},
        {"id": "fear_3", "explanation": "Dark trees close in.", "attributes": {"scene": "forest_path"}},
    ]


def judge_arguments(tmp_path, llmock, **overrides):
    values = dict(model="m", dataset="d", output_dir=str(tmp_path / "out"), task="reasoning", judge_model="gpt-4o",
                  judge_base_url=llmock.base_url(), judge_concurrency=1)
    values.update(overrides)
    return EvalArguments(**values)


def run_judge(tmp_path, llmock, **overrides):
    args = judge_arguments(tmp_path, llmock, **overrides)
    judged = rows()
    return judge_rows(judged, args, judge_settings(args)), judged


@pytest.mark.parametrize(
    "text, scores, reason",
    [
        (GOOD, {"grounding": 4, "plausibility": 5, "specificity": 3, "rationale": "Names the bench and the rain."},
         None),
        (FENCED, {"grounding": 2, "plausibility": 3, "specificity": 1}, None),
        (MALFORMED, None, "no JSON object"),
        ('{"grounding": 4, "plausibility": 5}', None, "'specificity' is None"),
        ('{"grounding": 6, "plausibility": 5, "specificity": 3}', None, "'grounding' is 6"),
        ('{"grounding": true, "plausibility": 5, "specificity": 3}', None, "'grounding' is True"),
        ('{"grounding": "4", "plausibility": 5, "specificity": 3}', None, "'grounding' is '4'"),
        ('{"grounding": 4, "plausibility": 5, "specificity": 3', None, "no JSON object"),
        ('{"grounding": 4,, "plausibility": 5}', None, "does not parse"),
    ],
)
def test_parse_judge_reply(text, scores, reason):
    parsed, why = parse_judge_reply(text)
    assert parsed == scores
    assert (why is None) if reason is None else (reason in why)


def test_scores_parsed_malformed_counted_and_rerun_sends_nothing(tmp_path, llmock, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-SECRET-judge-key")
    llmock.add(Reply(text=GOOD), Reply(text=MALFORMED), Reply(text=FENCED), Reply(text=MALFORMED, times=None))
    summary, judged = run_judge(tmp_path, llmock)
    assert len(served(llmock)) == summary["api_calls"] == 3
    assert judged[0]["judge"] == {"grounding": 4, "plausibility": 5, "specificity": 3,
                                  "rationale": "Names the bench and the rain."}
    assert judged[1]["judge_error"].startswith("malformed reply: no JSON object") and "judge" not in judged[1]
    assert judged[2]["judge"] == {"grounding": 2, "plausibility": 3, "specificity": 1}
    assert (summary["judged"], summary["malformed"], summary["failed"], summary["not_run"]) == (2, 1, 0, 0)
    assert (summary["grounding"], summary["plausibility"], summary["specificity"]) == (3.0, 4.0, 2.0)
    assert summary["cost_usd"] > 0 and summary["prompt_tokens"] > 0
    # What the judge was asked: the rubric, then the facts and the explanation (never the label).
    body = served(llmock)[0].body
    assert body["model"] == "gpt-4o" and body["temperature"] == 0.0
    assert body["messages"][0]["content"] == RUBRIC
    assert "scene: cemetery" in body["messages"][1]["content"]
    assert "Rain falls on an empty bench" in body["messages"][1]["content"]
    assert "sadness" not in json.dumps(body["messages"]).replace("sadness_1", "")

    again, judged_again = run_judge(tmp_path, llmock)
    assert len(served(llmock)) == 3 and again["api_calls"] == 0 and again["cache_hits"] == 3
    assert [row.get("judge") for row in judged_again] == [row.get("judge") for row in judged]
    assert again["malformed"] == 1 and again["cost_usd"] == 0 and again["cost_usd_total"] == summary["cost_usd"]
    written = "".join(path.read_text() for path in (tmp_path / "out").iterdir())
    assert "judge/awe_2" in written and "SECRET" not in written


def test_dry_run_sends_nothing(tmp_path, llmock, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    llmock.add(Reply(text=GOOD, times=None))
    summary, judged = run_judge(tmp_path, llmock, judge_dry_run=True)
    assert served(llmock) == []
    assert summary["dry_run"] and summary["to_send"] == summary["requests"] == 3 and summary["cached"] == 0
    assert summary["estimated_prompt_tokens"] > len(RUBRIC) // 4 * 3 and summary["estimated_cost_usd"] > 0
    assert judged == rows() and not (tmp_path / "out" / "judge_cache.jsonl").exists()
    run_judge(tmp_path, llmock)
    assert len(served(llmock)) == 3
    summary, _ = run_judge(tmp_path, llmock, judge_dry_run=True)
    assert (summary["to_send"], summary["cached"]) == (0, 3) and len(served(llmock)) == 3


def test_cost_ceiling_stops_sending_and_counts_the_rest(tmp_path, llmock):
    llmock.add(Reply(text=GOOD, times=None))
    # About 200 prompt + 80 completion tokens per request at 1000 USD per million: ~0.3 USD each.
    summary, judged = run_judge(tmp_path, llmock, judge_price_per_mtok="1000,1000", judge_max_cost=0.5)
    assert summary["stopped_by_max_cost"] and summary["cost_usd"] <= 0.5
    assert summary["api_calls"] == len(served(llmock)) == 1
    assert summary["judged"] == 1 and summary["not_run"] == 2
    assert all("--judge_max_cost 0.5 USD reached" in row["judge_error"] for row in judged[1:])


def test_settings_refuse_a_password_in_the_url_and_a_missing_key(tmp_path, llmock, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    url = llmock.base_url().replace("http://", "http://user:SECRETPASS@")
    with pytest.raises(ValueError, match="has a password in it") as info:
        judge_settings(judge_arguments(tmp_path, llmock, judge_base_url=url))
    assert "SECRETPASS" not in str(info.value)
    with pytest.raises(ValueError, match="OPENAI_API_KEY is not set"):
        judge_settings(judge_arguments(tmp_path, llmock, judge_base_url=None))
    assert judge_settings(judge_arguments(tmp_path, llmock, judge_base_url=None, judge_dry_run=True)).api_key is None


def test_a_refusing_server_stops_the_judge_with_advice_in_its_own_flags(tmp_path, llmock):
    from llmock.scenarios import Fail

    llmock.add(Fail(404, times=None))
    summary, judged = run_judge(tmp_path, llmock)
    assert summary["api_calls"] == len(served(llmock)) == 3 and summary["failed"] == 3 and summary["judged"] == 0
    assert "--judge_base_url" in summary["stop_reason"] and "--judge_model" in summary["stop_reason"]
    assert all("HTTP 404" in row["judge_error"] for row in judged)


def test_a_refused_key_is_logged_with_the_judges_own_flags(tmp_path, llmock, caplog):
    from llmock.scenarios import Fail

    llmock.add(Fail(401, times=None))
    with caplog.at_level("WARNING"):
        summary, judged = run_judge(tmp_path, llmock)
    assert summary["failed"] == 3 and summary["judged"] == 0
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "--judge_model" in logged and "--llm_model" not in logged
    assert "--llm_model" not in summary["stop_reason"] and "--judge_model" in summary["stop_reason"]
