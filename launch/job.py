"""The job command a launcher runs, and the checks made on it before anything starts.

A job is any command line; when it carries ``--config=FILE:PRESET`` (and ``--config.KEY=VALUE``
overrides) the config is resolved here exactly as the trainer resolves it (ml-collections
``config_flags``), so an unknown key or an unparsable value fails on the laptop, not on the pod.
When it carries ``--workdir``, a workdir holding a different run is refused too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from janus_jax import manifest
from janus_jax.cli.config import CONFIG_FLAG as _CONFIG_FLAG
from janus_jax.cli.config import OVERRIDE_FLAG as _OVERRIDE_FLAG
from janus_jax.cli.config import ConfigError, config_args
from janus_jax.cli.config import resolve_config as _resolve_config

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
        return config_args(self.argv)[0]


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


def resolve_config(config_args: Sequence[str]) -> Any:
    """Resolve ``--config=FILE:PRESET`` plus overrides to a ConfigDict, as the trainer will."""
    try:
        return _resolve_config(config_args)
    except ConfigError as err:
        raise JobError(str(err)) from err


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
