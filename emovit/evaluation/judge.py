"""The optional LLM judge of explanations, through the project's OpenAI-compatible client
(`dataset_builder.llm`: concurrent, rate-limited, retried, cached on disk, cost-capped).

The judge is a text model: it reads the image's annotated attributes (what EmoSet's annotators saw) and the
explanation, never the image or the label, and scores the explanation 1-5 on three criteria of `RUBRIC`. It is
asked for a JSON object; `parse_judge_reply` reads one out of the reply or says why it cannot. Replies are cached
by request (image id, rubric, model, messages), so a rerun sends only what is new. The API key comes from the
environment (OPENAI_API_KEY) and reaches no file: the client keeps it out of its cache, and metrics.json gets the
base URL without credentials.
"""

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from dataset_builder.attributes import render_attributes
from dataset_builder.llm import (
    CUT_OFF_FINISH_REASONS,
    ChatClient,
    ChatRequest,
    ClientSettings,
    ResponseCache,
    estimate,
    parse_prices,
)

from .arguments import EvalArguments


logger = logging.getLogger(__name__)

CRITERIA = ("grounding", "plausibility", "specificity")

RUBRIC = """You grade short explanations of why a photograph makes viewers feel an emotion.
You cannot see the photograph. Instead you get the facts its annotators recorded (scene, objects, facial
expression, human action, brightness and colourfulness on a 0-1 scale), then the explanation.

Score the explanation from 1 (worst) to 5 (best) on each criterion:
- grounding: it talks about what the facts say is in the photograph and invents nothing that contradicts them
  (a dark scene called sunny, objects that are not listed presented as the main subject).
- plausibility: a photograph like this could reasonably make a viewer feel the emotion the explanation argues
  for, and the explanation's reasons lead to that emotion.
- specificity: it points at concrete things (this bench, the grey light, the crying child) rather than phrases
  that would fit any picture.

Reply with one JSON object and nothing else:
{"grounding": <1-5>, "plausibility": <1-5>, "specificity": <1-5>, "rationale": "<one sentence>"}"""

RUBRIC_HASH = hashlib.sha256(RUBRIC.encode()).hexdigest()[:12]
MAX_COMPLETION_TOKENS = 300
EXPECTED_COMPLETION_TOKENS = 80

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
# evaluate.py's names for the client settings its messages name (the client's defaults are the data builder's).
JUDGE_FLAGS = {"model": "--judge_model", "base_url": "--judge_base_url", "max_cost": "--judge_max_cost"}


def judge_messages(explanation: str, attributes: dict) -> list[dict]:
    """The chat messages that ask for one explanation's scores."""
    facts = render_attributes(attributes) or "(none recorded)"
    return [{"role": "system", "content": RUBRIC},
            {"role": "user", "content": f"Facts:\n{facts}\n\nExplanation:\n{explanation.strip() or '(empty)'}"}]


def parse_judge_reply(text: str) -> tuple[dict | None, str | None]:
    """(scores, None) for a reply holding a JSON object with an integer 1-5 for every criterion (code fences and
    chatter around the object are allowed; `rationale` is kept when it is a string), else (None, the reason)."""
    match = _JSON_OBJECT.search(text or "")
    if match is None:
        return None, "no JSON object in the reply"
    try:
        reply = json.loads(match.group(0))
    except ValueError as e:
        return None, f"the JSON object does not parse ({e})"
    if not isinstance(reply, dict):
        return None, f"the reply holds {type(reply).__name__}, not an object"
    scores = {}
    for name in CRITERIA:
        value = reply.get(name)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            return None, f"{name!r} is {value!r}, not an integer from 1 to 5"
        scores[name] = value
    if isinstance(reply.get("rationale"), str):
        scores["rationale"] = reply["rationale"]
    return scores, None


def judge_settings(args: EvalArguments) -> ClientSettings:
    """The client settings of the judge: key and default URL from the environment, deterministic sampling."""
    base_url = args.judge_base_url or os.environ.get("OPENAI_BASE_URL")
    if base_url and urlsplit(base_url).password:
        # HTTP libraries log request URLs; a key in one would reach the logs.
        raise ValueError(f"--judge_base_url has a password in it ({urlsplit(base_url).hostname}); remove it from the "
                         "URL and put the key in OPENAI_API_KEY instead.")
    api_key = os.environ.get("OPENAI_API_KEY")
    if not api_key and not base_url and not args.judge_dry_run:
        raise ValueError("OPENAI_API_KEY is not set. Export it (the judge reads the key from the environment only), "
                         "or point --judge_base_url at a local server that needs no key.")
    settings = ClientSettings(
        model=args.judge_model, base_url=base_url, api_key=api_key, concurrency=args.judge_concurrency,
        temperature=0.0, max_cost=args.judge_max_cost,
        price_per_mtok=parse_prices(args.judge_price_per_mtok, "--judge_price_per_mtok") if args.judge_price_per_mtok else None,
        flag_names=dict(JUDGE_FLAGS))
    if settings.prices() == (0.0, 0.0):
        logger.warning("no price known for judge model %r; costs count as 0 and --judge_max_cost cannot stop the "
                       "run. Pass --judge_price_per_mtok PROMPT,COMPLETION.", args.judge_model)
    return settings


def judge_requests(rows: list[dict]) -> list[ChatRequest]:
    """One request per row (`id`, `explanation`, `attributes`)."""
    return [ChatRequest(f"judge/{row['id']}", judge_messages(row["explanation"], row["attributes"]), RUBRIC_HASH,
                        MAX_COMPLETION_TOKENS, 0, EXPECTED_COMPLETION_TOKENS) for row in rows]


def judge_rows(rows: list[dict], args: EvalArguments, settings: ClientSettings) -> dict:
    """Judges every row's explanation, adding `judge` (the scores) or `judge_error` (why there are none) to each
    row; returns the judge's summary for metrics.json. With `args.judge_dry_run` nothing is sent: the summary is
    what would be sent and cost, and the rows are left alone. `settings` are `judge_settings(args)`."""
    cache = ResponseCache(Path(args.judge_cache or Path(args.output_dir) / "judge_cache.jsonl"))
    requests = judge_requests(rows)
    if args.judge_dry_run:
        return {"model": args.judge_model, "dry_run": True, **estimate(requests, settings, cache)}

    client = ChatClient(settings, cache)
    results = client.complete_all(requests, desc="judge")
    malformed = failed = not_run = 0
    for row, result in zip(rows, results):
        if result.error is not None:
            row["judge_error"] = result.error
            not_run += result.not_run
            failed += not result.not_run
            continue
        if result.finish_reason in CUT_OFF_FINISH_REASONS:
            scores, reason = None, f"cut off by the server (finish_reason {result.finish_reason})"
        else:
            scores, reason = parse_judge_reply(result.text)
        if scores is None:
            row["judge_error"] = f"malformed reply: {reason}"
            malformed += 1
        else:
            row["judge"] = scores
    judged = [row["judge"] for row in rows if "judge" in row]
    stats = client.stats
    summary = {
        "model": args.judge_model,
        "dry_run": False,
        "rubric_hash": RUBRIC_HASH,
        "judged": len(judged),
        **{name: sum(j[name] for j in judged) / len(judged) if judged else None for name in CRITERIA},
        "malformed": malformed,
        "failed": failed,
        "not_run": not_run,
        "stopped_by_max_cost": stats.stopped_by_max_cost,
        "stop_reason": client.stop_reason,
        "api_calls": stats.api_calls,
        "cache_hits": stats.cache_hits,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "cost_usd": round(stats.cost_usd, 6),
        "cost_usd_total": round(stats.spent_before_usd + stats.cost_usd, 6),
    }
    if malformed or failed or not_run:
        logger.warning("judge: %d malformed replies, %d failed and %d not sent requests (see judge_error in "
                       "predictions.jsonl)", malformed, failed, not_run)
    return summary


def judge_failure(summary: dict | None, rows: list[dict]) -> str | None:
    """Why the judge failed, for the run to end on (None when it did not): requests that failed (refused, or no
    answer after every retry). Requests held back by --judge_max_cost were the user's choice, and malformed replies
    are the judge model's answers, counted in the summary; neither fails the run."""
    if summary is None or summary["dry_run"] or not summary["failed"]:
        return None
    first = next(row["judge_error"] for row in rows if "judge_error" in row)
    return (f"the judge {summary['model']} failed: {summary['failed']} of {len(rows)} requests failed and "
            f"{summary['not_run']} were not sent ({summary['stop_reason'] or first})")
