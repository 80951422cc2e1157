"""USD prices per million tokens, so every run can say what it cost (and a dry run what it would cost).

Prices change: this table is a convenience, not an authority. Pass ``prices={model: (input, output)}``
to ``LLMClient`` (or ``--price IN,OUT`` on the data_gen command line) to override or add a model.
Local servers (vLLM, janus-serve) are free: an unknown model costs 0 and is flagged as unpriced.
"""

from __future__ import annotations

# model (or model-family prefix) -> (USD per 1M prompt tokens, USD per 1M completion tokens)
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4-0125-preview": (10.0, 30.0),  # the model the Janus paper used for synthesis and judging
    "gpt-4-1106-preview": (10.0, 30.0),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4-0613": (30.0, 60.0),
    "gpt-4-0314": (30.0, 60.0),
    "gpt-4": (30.0, 60.0),
    "gpt-3.5-turbo-0125": (0.5, 1.5),
    "gpt-3.5-turbo": (0.5, 1.5),
    "gpt-4o-2024-05-13": (5.0, 15.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4o": (2.5, 10.0),
    "gpt-4.1-nano": (0.1, 0.4),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1": (2.0, 8.0),
}

BATCH_DISCOUNT = 0.5  # the OpenAI Batch API bills half the synchronous price


def price_for(model: str, overrides: dict[str, tuple[float, float]] | None = None) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens: exact name first, then the longest matching family prefix."""
    table = {**PRICES_PER_MILLION, **(overrides or {})}
    if model in table:
        return table[model]
    prefixes = [name for name in table if model.startswith(name + "-")]
    return table[max(prefixes, key=len)] if prefixes else None


def cost_usd(
    price: tuple[float, float] | None, prompt_tokens: int, completion_tokens: int, batch: bool = False
) -> float:
    if price is None:
        return 0.0
    cost = (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
    return cost * BATCH_DISCOUNT if batch else cost
