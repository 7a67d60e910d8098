"""Usage to cost: the price table, and a reported cost winning over it."""

from __future__ import annotations

import logging

import pytest

from facteur.agents.port import CostSource
from facteur.agents.pricing import ModelPrice, PriceTable

GPT = ModelPrice(input_usd_per_million=1.25, output_usd_per_million=10.0, cached_input_usd_per_million=0.125)
MINI = ModelPrice(input_usd_per_million=0.25, output_usd_per_million=2.0)
ANY = ModelPrice(input_usd_per_million=5.0, output_usd_per_million=5.0)


def test_exact_then_longest_prefix_then_fallback() -> None:
    table = PriceTable({"gpt-5": GPT, "gpt-5-mini": MINI, "*": ANY})

    assert table.price_for("gpt-5") is GPT
    assert table.price_for("gpt-5-codex") is GPT
    assert table.price_for("gpt-5-mini-2025") is MINI
    assert table.price_for("o3") is ANY
    assert table.price_for(None) is ANY
    assert PriceTable({"gpt-5": GPT}).price_for("claude") is None


def test_cached_tokens_cost_the_cached_price_or_the_input_price() -> None:
    assert GPT.cost(1_000_000, 400_000, 100_000) == pytest.approx(0.6 * 1.25 + 0.4 * 0.125 + 1.0)
    assert MINI.cost(1_000_000, 400_000, 0) == pytest.approx(0.25)
    # more cached tokens than input tokens cannot make a negative bill
    assert MINI.cost(10, 50, 0) == pytest.approx(10 * 0.25 / 1_000_000)


def test_usage_sources(caplog: pytest.LogCaptureFixture) -> None:
    table = PriceTable({"gpt-5": GPT})

    priced = table.usage(model="gpt-5", input_tokens=2_000_000, cached_input_tokens=0, output_tokens=0)
    assert priced.cost_usd == pytest.approx(2.5)
    assert priced.cost_source is CostSource.PRICE_TABLE

    reported = table.usage(
        model="gpt-5", input_tokens=2_000_000, cached_input_tokens=0, output_tokens=0, reported_cost=0.01
    )
    assert reported.cost_usd == 0.01
    assert reported.cost_source is CostSource.REPORTED

    with caplog.at_level(logging.WARNING, logger="facteur.agents.pricing"):
        unknown = table.usage(model="o3", input_tokens=10, cached_input_tokens=0, output_tokens=1)
    assert unknown.cost_usd == 0
    assert unknown.cost_source is CostSource.UNKNOWN
    assert "agent_price_unknown: model=o3" in caplog.text
