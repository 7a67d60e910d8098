"""Usage to cost: USD per million tokens, per model.

A model's price is found by its exact name, else by the longest name in the table that it starts with
(``gpt-5`` prices ``gpt-5-codex``), else by the ``*`` entry. Cached input tokens cost the cached price when
one is given, the input price otherwise. A cost the agent reports itself wins over the table.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from facteur.agents.port import CostSource, Usage

logger = logging.getLogger(__name__)

FALLBACK = "*"
_MILLION = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPrice:
    input_usd_per_million: float
    output_usd_per_million: float
    #: None: cached input tokens cost the input price
    cached_input_usd_per_million: float | None = None

    def cost(self, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> float:
        cached = min(cached_input_tokens, input_tokens)
        cached_price = self.cached_input_usd_per_million
        if cached_price is None:
            cached_price = self.input_usd_per_million
        return (
            (input_tokens - cached) * self.input_usd_per_million
            + cached * cached_price
            + output_tokens * self.output_usd_per_million
        ) / _MILLION


class PriceTable:
    def __init__(self, prices: Mapping[str, ModelPrice] | None = None) -> None:
        self._prices = dict(prices or {})

    def price_for(self, model: str | None) -> ModelPrice | None:
        if model:
            if model in self._prices:
                return self._prices[model]
            prefixes = [name for name in self._prices if name != FALLBACK and model.startswith(name)]
            if prefixes:
                return self._prices[max(prefixes, key=len)]
        return self._prices.get(FALLBACK)

    def usage(
        self,
        *,
        model: str | None,
        input_tokens: int,
        cached_input_tokens: int,
        output_tokens: int,
        reported_cost: float | None = None,
    ) -> Usage:
        tokens = {
            "input_tokens": input_tokens,
            "cached_input_tokens": min(cached_input_tokens, input_tokens),
            "output_tokens": output_tokens,
        }
        if reported_cost is not None:
            return Usage(**tokens, cost_usd=reported_cost, cost_source=CostSource.REPORTED)
        price = self.price_for(model)
        if price is None:
            if input_tokens or output_tokens:
                logger.warning("agent_price_unknown: model=%s (add it to agent.prices)", model)
            return Usage(**tokens, cost_usd=0.0, cost_source=CostSource.UNKNOWN)
        cost = round(price.cost(input_tokens, cached_input_tokens, output_tokens), 8)
        return Usage(**tokens, cost_usd=cost, cost_source=CostSource.PRICE_TABLE)
