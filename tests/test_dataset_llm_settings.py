"""The LLM client's settings (`dataset_builder.llm.settings`): bad values are refused with the field named."""

import pytest

from dataset_builder.llm import ClientSettings


@pytest.mark.parametrize("field_name, value", [
    ("requests_per_minute", 0), ("tokens_per_minute", 0), ("concurrency", 0), ("max_retries", -1),
    ("timeout_s", 0.0), ("max_cost", float("nan")), ("max_cost", -1.0), ("max_cost", float("inf")),
    ("max_retry_wait_s", -1.0), ("max_retry_wait_s", float("nan")), ("fail_fast_after", 0),
    ("base_url", "http//localhost:8000/v1"), ("base_url", "ftp://host/v1"),
])
def test_settings_refuse_bad_values(field_name, value):
    with pytest.raises(ValueError, match=field_name):
        ClientSettings(model="gpt-4o", **{field_name: value})



def test_the_base_url_is_shown_without_its_credentials_when_refused():
    with pytest.raises(ValueError, match="base_url") as refused:
        ClientSettings(model="gpt-4o", base_url="ftp://USER:PASSWORD@host/v1?api_key=QUERYSECRET")
    assert "PASSWORD" not in str(refused.value) and "QUERYSECRET" not in str(refused.value)


def test_keys_stay_out_of_the_repr():
    settings = ClientSettings(model="gpt-4o", base_url="http://host/v1?api_key=QUERYSECRET", api_key="sk-SECRET")
    assert "SECRET" not in repr(settings)
