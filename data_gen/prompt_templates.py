"""Versioned prompt templates: one text file per template and version under ``data_gen/templates``.

Why files with versions: the paper's synthesis prompts are not public, so ours are part of the method.
Each stage pins a template version; rows carry ``name@version`` and the manifest carries the file's
sha256, so every output can be traced to the exact prompt that made it.

File format: ``# key: value`` header lines (``name``, ``version``, ``sampling`` as JSON), then
``=== system ===`` and ``=== user ===`` sections. Placeholders are ``$name`` (``string.Template``;
``$$`` is a literal dollar sign). Each section's final newline belongs to the next marker and is dropped.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

_SECTION_MARKERS = {"=== system ===": "system", "=== user ===": "user"}


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    system: str
    user: str
    sampling: dict[str, Any]
    sha256: str

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def messages(self, **values: str) -> list[dict[str, str]]:
        """Chat messages with every placeholder filled (a missing value is a KeyError naming it)."""
        return [
            {"role": "system", "content": string.Template(self.system).substitute(values)},
            {"role": "user", "content": string.Template(self.user).substitute(values)},
        ]


def parse_template(text: str, origin: str) -> PromptTemplate:
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.split("\n"):
        if line in _SECTION_MARKERS:
            current = _SECTION_MARKERS[line]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
        elif line.startswith("# ") and ":" in line:
            key, value = line[2:].split(":", 1)
            header[key.strip()] = value.strip()
    missing = [k for k in ("name", "version", "sampling") if k not in header]
    missing += [s for s in ("system", "user") if s not in sections]
    if missing:
        raise ValueError(f"template {origin}: missing {', '.join(missing)}")
    body = {name: "\n".join(lines[:-1] if lines and lines[-1] == "" else lines) for name, lines in sections.items()}
    return PromptTemplate(
        name=header["name"],
        version=int(header["version"]),
        system=body["system"],
        user=body["user"],
        sampling=json.loads(header["sampling"]),
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


@cache
def load_template(name: str, version: int) -> PromptTemplate:
    """The template ``templates/{name}.v{version}.txt`` shipped with the package."""
    path = resources.files("data_gen.templates") / f"{name}.v{version}.txt"
    template = parse_template(path.read_text(encoding="utf-8"), str(path))
    if (template.name, template.version) != (name, version):
        raise ValueError(f"template {path} declares {template.tag}, expected {name}@{version}")
    return template


@cache
def load_data(filename: str) -> Any:
    """A JSON seed-data file shipped beside the templates."""
    return json.loads((resources.files("data_gen.templates") / filename).read_text(encoding="utf-8"))
