"""A scripted OpenAI-compatible server that also answers with token log-probabilities.

It extends ``ScriptedOpenAIServer`` (same rules, faults, counting and Batch API) for rules that
describe the model's next-token distributions: a rule returns ``Tokens([{"m": -0.1, "M": -2.4}, ...])``,
one dict per generated position. The server emits the most likely token at each position (greedy), and
when the request has ``logprobs: true`` it returns, as OpenAI does, each emitted token with its
log-probability and the ``top_logprobs`` most likely alternatives, most likely first. Asking for
``top_logprobs`` without ``logprobs``, or for more than 20, is a 400 as on OpenAI. Other rule results
(``str``, ``Reply``, ``Fault``) behave as in the base server; a ``str`` reply asked for log-probabilities
counts each whitespace-separated word as a token with log-probability 0.
"""

from __future__ import annotations

from scripted_openai_server import Call, Fault, Reply, ScriptedOpenAIServer


class Tokens(Reply):
    """A reply given as next-token distributions (token -> log-probability), one per position."""

    def __init__(self, distributions, finish_reason: str = "stop"):
        dists = tuple(dict(d) for d in distributions)
        content = "".join(max(d, key=d.get) for d in dists)
        super().__init__(content, finish_reason=finish_reason, completion_tokens=len(dists))
        self.distributions = dists


def _token(text: str, logprob: float) -> dict:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


class LogprobOpenAIServer(ScriptedOpenAIServer):
    """``ScriptedOpenAIServer`` plus ``logprobs``/``top_logprobs``; see the module docstring."""

    def decide(self, call: Call) -> Reply | Fault:
        top = call.body.get("top_logprobs")
        if top is not None and not call.body.get("logprobs"):
            return Fault.status_code(400, message="top_logprobs requires logprobs to be true")
        if top is not None and not 0 <= int(top) <= 20:
            return Fault.status_code(400, message="top_logprobs must be between 0 and 20")
        return super().decide(call)

    def completion_body(self, call: Call, reply: Reply) -> dict:
        body = super().completion_body(call, reply)
        if not call.body.get("logprobs"):
            return body
        if isinstance(reply, Tokens):
            dists = reply.distributions
        else:
            dists = tuple({word: 0.0} for word in (reply.content or "").split())
        k = int(call.body.get("top_logprobs") or 0)
        content = []
        for dist in dists:
            ranked = sorted(dist.items(), key=lambda item: -item[1])
            content.append({**_token(*ranked[0]), "top_logprobs": [_token(t, lp) for t, lp in ranked[:k]]})
        for choice in body["choices"]:
            choice["logprobs"] = {"content": content, "refusal": None}
        return body
