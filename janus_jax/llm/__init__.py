"""The LLM client layer shared by data_gen and eval (no JAX, no model code).

Public API (stable):

- ``LLMClient(model, base_url=None, *, api_key_env="OPENAI_API_KEY", max_concurrency=64,
  requests_per_minute=None, tokens_per_minute=None, max_retries=6, timeout_s=600, cache_path=None,
  max_reasks=2, backoff_base_s=1.0, backoff_max_s=60.0, prices=None)``
- ``await client.chat(messages, *, temperature=1.0, top_p=1.0, max_tokens=None, n=1, response_format=None,
  seed=None, stop=None, logprobs=False, top_logprobs=None, extra_body=None, validate=None,
  accept_truncated=True, max_reasks=None) -> ChatResult`` (``.ok``, ``.text``, ``.texts``, ``.value``,
  ``.parsed``, ``.usage``, ``.cost_usd``, ``.cached``, ``.error``, ``.error_kind``, ``.attempts``, ``.key``,
  ``.logprobs``, ``.top_logprobs(position=0, choice=0)``). Failures come back in ``.error``
  (``"<kind>: <detail>"``), never as exceptions. ``validate(text)`` returns the parsed value or raises
  to have the reply asked again (up to ``max_reasks`` times). Log-probabilities are cached with the
  text; asking for them is part of the cache key.
- ``await client.chat_many(requests, on_result=None, desc=None, progress=True) -> list[ChatResult]`` and
  the synchronous ``run_many(client, requests, desc=None, progress=True)``, with ``ChatRequest(messages,
  options)`` where ``options`` are ``chat`` keyword arguments; a progress bar shows calls, cache hits,
  failures, tokens and cost.
- ``client.stats`` (``ClientStats``: requests, calls, cache_hits, retries, reasks, failures by kind,
  failure_log, prompt/completion tokens, cost_usd; ``.as_dict()``, ``.line()``).
- ``client.close()`` flushes the on-disk cache.
- Batch API: ``await run_batch(client, work_dir, poll_interval_s=30)`` sends the requests queued in
  ``client.batch_queue`` (a ``BatchQueue``) while ``client.defer_to_batch`` was True (see ``janus_jax.llm.batch``).
- ``price_for(model)``, ``cost_usd(...)``, ``PRICES_PER_MILLION``: the price table.
"""

from janus_jax.llm.batch import BatchQueue, run_batch
from janus_jax.llm.cache import ResponseCache, request_key
from janus_jax.llm.client import ChatRequest, ChatResult, ClientStats, LLMClient, Usage, run_many
from janus_jax.llm.pricing import PRICES_PER_MILLION, cost_usd, price_for

__all__ = [
    "PRICES_PER_MILLION",
    "BatchQueue",
    "ChatRequest",
    "ChatResult",
    "ClientStats",
    "LLMClient",
    "ResponseCache",
    "Usage",
    "cost_usd",
    "price_for",
    "request_key",
    "run_batch",
    "run_many",
]
