"""Run configs from the command line: `--config=FILE:PRESET` plus `--config.KEY=VALUE` overrides.

Resolved with ml-collections' `config_flags`, exactly as every janus program and the launchers read
them, but checked first: an unknown key is named (with the closest existing keys) and a value that does
not parse is named, instead of a long traceback ending in `AttributeError`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

CONFIG_FLAG = re.compile(r"^--?config(=|$)")
OVERRIDE_FLAG = re.compile(r"^--?(no)?config\.")


class ConfigError(ValueError):
    """The config flags cannot be resolved; the message names the flag and the key."""


def config_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the `--config` flag and its overrides, each as one `--flag=value` string; every other argument)."""
    mine, rest = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if CONFIG_FLAG.match(arg) or OVERRIDE_FLAG.match(arg):
            if "=" not in arg and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                arg = f"{arg}={argv[i + 1]}"
                i += 1
            mine.append(arg)
        else:
            rest.append(arg)
        i += 1
    return mine, rest


def _parse(argv: list[str]) -> Any:
    from absl import flags
    from ml_collections import config_flags

    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True, sys_argv=argv)
    try:
        flag_values(argv)
    except flags.Error as err:
        raise ConfigError(f"bad config flag: {err}") from err
    return flag_values.config


def check_override_key(config: Any, flag: str) -> None:
    """Raise ConfigError naming `flag` when its dotted key does not exist in `config`."""
    from ml_collections import config_dict

    path = re.sub(r"^--?(no)?config\.", "", flag.split("=", 1)[0]).split(".")
    node = config
    for depth, part in enumerate(path):
        if not isinstance(node, config_dict.ConfigDict) or part not in node:
            where = ".".join(path[: depth + 1])
            siblings = list(node.keys()) if isinstance(node, config_dict.ConfigDict) else []
            close = difflib.get_close_matches(part, siblings, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"config override {flag.split('=', 1)[0]}: key {where!r} does not exist{hint}")
        node = node[part]


def resolve_config(args: Sequence[str]) -> Any:
    """`--config=FILE:PRESET` plus overrides (as from `config_args`) -> the ConfigDict the run uses."""
    from ml_collections import config_dict

    spec_args = [a for a in args if CONFIG_FLAG.match(a)]
    overrides = [a for a in args if OVERRIDE_FLAG.match(a)]
    if not spec_args:
        raise ConfigError("no --config=FILE:PRESET given" + (" (only overrides)" if overrides else ""))
    spec = spec_args[-1].split("=", 1)[-1]
    base = _parse(["janus", *spec_args])
    if not isinstance(base, config_dict.ConfigDict):
        try:
            base.to_dict()  # a deferred load error raises its real cause here
        except Exception as err:
            raise ConfigError(f"cannot load config {spec!r}: {err}") from err
        raise ConfigError(f"config {spec!r} did not produce a ConfigDict (got {type(base).__name__})")
    for flag in overrides:
        check_override_key(base, flag)
    return _parse(["janus", *args]) if overrides else base
