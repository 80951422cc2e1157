"""The job command a launcher runs, and the checks made on it before anything starts.

A job is any command line; when it carries ``--config=FILE:PRESET`` (and ``--config.KEY=VALUE``
overrides) the config is resolved here exactly as the trainer resolves it (ml-collections
``config_flags``), so an unknown key or an unparsable value fails on the laptop, not on the pod.
When it carries ``--workdir``, a workdir holding a different run is refused too.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from janus_jax import manifest

_CONFIG_FLAG = re.compile(r"^--?config(=|$)")
_OVERRIDE_FLAG = re.compile(r"^--?(no)?config\.")
_WORKDIR_FLAG = re.compile(r"^--?workdir(=|$)")


class JobError(ValueError):
    """The job command cannot run as given; the message says which part is wrong."""


@dataclass(frozen=True)
class Job:
    argv: tuple[str, ...]

    @property
    def workdir(self) -> str | None:
        return flag_value(self.argv, _WORKDIR_FLAG)

    @property
    def config_spec(self) -> str | None:
        return flag_value(self.argv, _CONFIG_FLAG)

    def config_args(self) -> list[str]:
        """The ``--config`` flag and its overrides, in order, each as one ``--flag=value`` string."""
        args = []
        i = 0
        while i < len(self.argv):
            arg = self.argv[i]
            if _CONFIG_FLAG.match(arg) or _OVERRIDE_FLAG.match(arg):
                if "=" not in arg and i + 1 < len(self.argv) and not self.argv[i + 1].startswith("-"):
                    arg = f"{arg}={self.argv[i + 1]}"
                    i += 1
                args.append(arg)
            i += 1
        return args


def flag_value(argv: Sequence[str], pattern: re.Pattern) -> str | None:
    """Value of the last ``--flag=value`` / ``--flag value`` matching ``pattern`` in argv."""
    value = None
    for i, arg in enumerate(argv):
        if pattern.match(arg):
            if "=" in arg:
                value = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                value = argv[i + 1]
    return value


def format_override(key: str, value: Any) -> str:
    """``--config.KEY=VALUE`` in the syntax ml-collections parses back to the same value."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        text = repr(tuple(value))
    else:
        text = str(value)
    return f"--config.{key}={text}"


def _parse_config_flags(argv: list[str]) -> Any:
    from absl import flags
    from ml_collections import config_flags

    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True, sys_argv=argv)
    try:
        flag_values(argv)
    except flags.Error as err:
        raise JobError(f"bad config flag: {err}") from err
    return flag_values.config


def _check_override_key(config: Any, flag: str) -> None:
    """Raise JobError naming ``flag`` when its dotted key does not exist in ``config``."""
    from ml_collections import config_dict

    path = re.sub(r"^--?(no)?config\.", "", flag.split("=", 1)[0]).split(".")
    node = config
    for depth, part in enumerate(path):
        if not isinstance(node, config_dict.ConfigDict) or part not in node:
            where = ".".join(path[: depth + 1])
            siblings = list(node.keys()) if isinstance(node, config_dict.ConfigDict) else []
            close = difflib.get_close_matches(part, siblings, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise JobError(f"config override {flag.split('=', 1)[0]}: key {where!r} does not exist{hint}")
        node = node[part]


def resolve_config(config_args: Sequence[str]) -> Any:
    """Resolve ``--config=FILE:PRESET`` plus overrides to a ConfigDict, as the trainer will."""
    from ml_collections import config_dict

    spec_args = [a for a in config_args if _CONFIG_FLAG.match(a)]
    overrides = [a for a in config_args if _OVERRIDE_FLAG.match(a)]
    spec = spec_args[-1].split("=", 1)[-1] if spec_args else "?"
    base = _parse_config_flags(["janus-job", *spec_args])
    if not isinstance(base, config_dict.ConfigDict):
        try:
            base.to_dict()  # a deferred load error raises its real cause here
        except Exception as err:
            raise JobError(f"cannot load config {spec!r}: {err}") from err
        raise JobError(f"config {spec!r} did not produce a ConfigDict (got {type(base).__name__})")
    for flag in overrides:
        _check_override_key(base, flag)
    return _parse_config_flags(["janus-job", *config_args]) if overrides else base


def preflight(job: Job, *, check_local_workdir: bool = True) -> Any:
    """Check a job before launch; return its resolved config (None when it has no ``--config``).

    Raises JobError for an empty command, an unknown key or bad value in the config, or a workdir that
    already holds a different run.
    """
    if not job.argv:
        raise JobError("no job command: put it after '--', e.g. -- janus-train --config=configs/sft.py:tiny ...")
    config = None
    config_args = job.config_args()
    if any(_OVERRIDE_FLAG.match(a) for a in config_args) and job.config_spec is None:
        raise JobError("config overrides given without --config=FILE:PRESET")
    if job.config_spec is not None:
        config = resolve_config(config_args)
    workdir = job.workdir
    if check_local_workdir and workdir and "://" not in workdir and config is not None:
        try:
            manifest.check_workdir(workdir, config)
        except manifest.WorkdirConflictError as err:
            raise JobError(str(err)) from err
    return config


def with_overrides(argv: Sequence[str], overrides: Mapping[str, Any]) -> list[str]:
    """argv with ``--config.KEY=VALUE`` appended for each override (later flags win)."""
    return [*argv, *(format_override(k, v) for k, v in overrides.items())]
