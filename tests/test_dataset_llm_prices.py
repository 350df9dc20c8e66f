"""Prices and cost (`dataset_builder.llm.prices`), and which price table the settings pick."""

import pytest

from dataset_builder.llm import DEFAULT_PRICES, ClientSettings, cost_usd, estimate_tokens


def test_cost_is_per_million_tokens():
    assert cost_usd(1_000_000, 0, (2.5, 10.0)) == 2.5
    assert cost_usd(200, 100, (2.5, 10.0)) == pytest.approx((200 * 2.5 + 100 * 10.0) / 1e6)


def test_settings_take_the_given_prices_then_the_table_then_zero():
    assert ClientSettings(model="gpt-4o").prices() == DEFAULT_PRICES["gpt-4o"]
    assert ClientSettings(model="gpt-4o", price_per_mtok=(1.0, 2.0)).prices() == (1.0, 2.0)
    assert ClientSettings(model="a-local-model").prices() == (0.0, 0.0)


def test_token_estimate_grows_with_the_text_and_the_messages():
    one = [{"role": "user", "content": "x" * 400}]
    assert estimate_tokens(one) == 100 + 4
    assert estimate_tokens(one + [{"role": "system", "content": ""}]) == 100 + 4 + 4


@pytest.mark.parametrize("text", ["2.5", "2.5,10,1", "a,b", "-1,2", "nan,1", "inf,1", ""])
def test_parse_prices_names_the_flag_and_the_text(text):
    from dataset_builder.llm import parse_prices

    with pytest.raises(ValueError) as info:
        parse_prices(text, "--judge_price_per_mtok")
    assert str(info.value).startswith(f"--judge_price_per_mtok is {text!r}; use PROMPT,COMPLETION")


def test_parse_prices_reads_two_prices():
    from dataset_builder.llm import parse_prices

    assert parse_prices("2.5,10", "--price_per_mtok") == (2.5, 10.0)
