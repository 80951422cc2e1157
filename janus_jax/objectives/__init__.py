"""Training objectives as plug-ins: one module per objective, looked up by name here and nowhere else.

Each module under janus_jax/objectives/ defines ``OBJECTIVE = Objective(...)`` (janus_jax/objectives/base.py):
its loss and metrics, whether it trains on pairs, the network it builds, where the LM head runs, and
whether it needs a reference policy. To add one, write the module and add its name to ``_MODULES``.
"""

from __future__ import annotations

import importlib

from janus_jax.objectives.base import LossOutput, Objective

_MODULES = ("sft", "dpo", "orpo", "rm", "simpo")

REGISTRY: dict[str, Objective] = {
    o.name: o for o in (importlib.import_module(f"janus_jax.objectives.{m}").OBJECTIVE for m in _MODULES)
}

__all__ = ["REGISTRY", "LossOutput", "Objective", "get_objective"]


def get_objective(name: str) -> Objective:
    """The objective a run config names in `objective`."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"objective={name!r}; expected one of {', '.join(REGISTRY)}") from None
