"""Secrets kept out of what the LLM client shows (`dataset_builder.llm.redaction`): URLs and texts masked, the HTTP
library's request logs filtered once a client exists, and no logging changed by importing the package."""

import logging
import subprocess
import sys
from contextlib import ExitStack

import pytest
from llmock.scenarios import Reply

from dataset_builder.llm import ChatClient, ChatRequest, ClientSettings, ResponseCache, redact_url
from dataset_builder.llm.redaction import HTTP_LOGGERS, RedactUrlsFilter, mask, secrets_of

from testing_utils import REPO_ROOT, subprocess_env


def test_redact_url_drops_user_info_query_and_fragment():
    url = "https://user:pass@[::1]:8443/v1?api_key=QUERYSECRET&x=1#FRAGSECRET"
    assert redact_url(url) == "https://[::1]:8443/v1"
    assert redact_url("http://localhost:8000/v1") == "http://localhost:8000/v1"
    assert redact_url(None) is None


def test_every_credential_like_part_is_masked_longest_first():
    secrets = secrets_of("sk-KEY", "http://USER:PASSWORD@host/v1?api_key=QUERYSECRET#FRAGSECRET")
    assert secrets == sorted(secrets, key=len, reverse=True)
    text = "echo: sk-KEY USER:PASSWORD api_key=QUERYSECRET FRAGSECRET"
    masked = mask(text, secrets)
    assert all(secret not in masked for secret in ("sk-KEY", "USER", "PASSWORD", "QUERYSECRET", "FRAGSECRET"))
    # Values too short to be keys are left alone rather than mangling the text.
    assert secrets_of("ab", None) == []


IMPORT_CHECK = """
import logging

import httpx, openai  # what they install on import is theirs, not the package's

def filters():
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    return {logger.name: list(logger.filters) for logger in loggers}

before = filters()
import dataset_builder.llm
changed = {name: found for name, found in filters().items() if found != before.get(name, [])}
assert changed == {}, changed
"""


@pytest.mark.integration  # a fresh interpreter
def test_importing_the_package_leaves_logging_filters_alone():
    # A fresh interpreter: in this one, earlier tests have made clients, which do install the filter.
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK], cwd=REPO_ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture()
def unfiltered_http_logs():
    """The HTTP loggers without the package's filter, as in a process where no client was made yet; put back after."""
    removed = {}
    for name in HTTP_LOGGERS:
        http_logger = logging.getLogger(name)
        removed[name] = [f for f in http_logger.filters if isinstance(f, RedactUrlsFilter)]
        for found in removed[name]:
            http_logger.removeFilter(found)
    yield
    for name, filters in removed.items():
        for found in filters:
            if found not in logging.getLogger(name).filters:
                logging.getLogger(name).addFilter(found)


def test_a_client_keeps_the_key_in_its_base_url_out_of_request_logs(unfiltered_http_logs, llmock, tmp_path, caplog):
    llmock.add(Reply(text="fine", times=None))
    settings = ClientSettings(model="gpt-4o", base_url=llmock.base_url() + "?api_key=QUERYSECRET#FRAGSECRET",
                              api_key="sk-test-SECRET")
    ChatClient(settings, ResponseCache(tmp_path / "first.jsonl"))
    client = ChatClient(settings, ResponseCache(tmp_path / "cache.jsonl"))
    for name in HTTP_LOGGERS:
        assert sum(isinstance(f, RedactUrlsFilter) for f in logging.getLogger(name).filters) == 1
    request = ChatRequest("img0", [{"role": "user", "content": "describe"}], "hash", 100)
    # The command line quiets the HTTP loggers to WARNING (earlier tests run it); this test wants their request lines.
    with ExitStack() as levels:
        levels.enter_context(caplog.at_level("DEBUG"))
        for name in HTTP_LOGGERS:
            levels.enter_context(caplog.at_level("DEBUG", logger=name))
        [result] = client.complete_all([request], show_progress=False)
    assert result.text == "fine"
    assert "HTTP Request" in caplog.text and llmock.base_url() in caplog.text
    for secret in ("QUERYSECRET", "FRAGSECRET", "sk-test-SECRET"):
        assert secret not in caplog.text
