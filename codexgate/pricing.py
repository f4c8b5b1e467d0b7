"""What a request costs: genai-prices (bundled data, offline) unless the policy sets a price.

Admission needs an estimate before the answer exists; settlement prices the usage the
provider reported (cached input and reasoning output priced as genai-prices prices them). Which
genai-prices provider id a deployment's models go by is its family's (`ProviderFamily.price_id`,
handed in by the `Limits` addon: core knows no provider).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Protocol

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from codexgate.usage import Usage

logger = logging.getLogger(__name__)

_MTOK = 1_000_000


class PriceUnknown(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class PriceSource:
    """How one (provider, model) is priced: a fixed policy price or a genai-prices lookup."""

    fixed: FixedPrice | None
    model_ref: str | None
    provider_id: str | None

    def cost(self, usage: Usage) -> float:
        if self.fixed is not None:
            return fixed_cost(self.fixed, usage)
        assert self.model_ref is not None
        calculation = calc_price(
            PriceUsage(
                input_tokens=usage.input_tokens,
                cache_read_tokens=min(usage.cached_tokens, usage.input_tokens),
                output_tokens=usage.output_tokens,
            ),
            self.model_ref,
            provider_id=self.provider_id,
        )
        return float(calculation.total_price)


class FixedPrice(Protocol):
    """A fixed price, USD per million tokens: the shape of the policy's `price:` (core reads it,
    the policy defines it)."""

    @property
    def input_per_mtok(self) -> float: ...

    @property
    def output_per_mtok(self) -> float: ...

    @property
    def cached_input_per_mtok(self) -> float | None: ...


def fixed_cost(price: FixedPrice, usage: Usage) -> float:
    cached = min(usage.cached_tokens, usage.input_tokens)
    cached_price = price.input_per_mtok if price.cached_input_per_mtok is None else price.cached_input_per_mtok
    return (
        (usage.input_tokens - cached) * price.input_per_mtok
        + cached * cached_price
        + usage.output_tokens * price.output_per_mtok
    ) / _MTOK


class Pricer:
    """Resolves and caches each model's price source; the estimate uses genai-prices' own
    numbers for a one-million-token request, then scales (tiered prices make the real charge
    differ only upwards for very long contexts, which settlement then charges exactly)."""

    def __init__(self) -> None:
        self._sources: dict[tuple[str, str], PriceSource | None] = {}
        self._unit: dict[PriceSource, tuple[float, float]] = {}

    def source(
        self, provider_id: str | None, upstream_model: str, override: FixedPrice | None, default: FixedPrice | None
    ) -> PriceSource:
        if override is not None:
            return PriceSource(override, None, None)
        cache_key = (provider_id or "", upstream_model)
        if cache_key not in self._sources:
            found: PriceSource | None = None
            if provider_id is not None:
                try:
                    calc_price(PriceUsage(input_tokens=1, output_tokens=1), upstream_model, provider_id=provider_id)
                    found = PriceSource(None, upstream_model, provider_id)
                except LookupError:
                    found = None
            self._sources[cache_key] = found
        found = self._sources[cache_key]
        if found is not None:
            return found
        if default is not None:
            return PriceSource(default, None, None)
        raise PriceUnknown(f"no price is known for model {upstream_model}")

    def estimate(self, source: PriceSource, input_tokens: int, output_tokens: int) -> float:
        fixed = source.fixed
        if fixed is not None:
            # `fixed_cost(fixed, Usage(input_tokens, output_tokens))` without its two frames: with
            # no cached tokens its cached term is 0.0, and adding 0.0 changes no float.
            return (input_tokens * fixed.input_per_mtok + output_tokens * fixed.output_per_mtok) / _MTOK
        if source not in self._unit:
            per_input = source.cost(Usage(input_tokens=_MTOK)) / _MTOK
            per_output = source.cost(Usage(output_tokens=_MTOK)) / _MTOK
            self._unit[source] = (per_input, per_output)
        per_input, per_output = self._unit[source]
        return input_tokens * per_input + output_tokens * per_output
