"""A recipe's options, described from its configuration dataclass (for ``synthmed train --recipe NAME --help``).

Help texts come from the ``Args:`` section of the dataclass's docstring (MONAI style), so an option and its
documentation live in one place; :func:`describe_options` refuses a dataclass with an undocumented option.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from dataclasses import dataclass
from typing import Any

_ARG = re.compile(r"^(\s*)(\w+)(?:\s*\([^)]*\))?:\s*(.*)$")


@dataclass(frozen=True)
class OptionHelp:
    name: str
    type_name: str
    default: Any
    help: str

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")

    @property
    def default_text(self) -> str:
        if self.default is None:
            return "None"
        if isinstance(self.default, tuple):
            return ",".join(str(v) for v in self.default)
        return repr(self.default) if isinstance(self.default, str) else str(self.default)


def args_section(doc: str | None) -> dict[str, str]:
    """``{name: help}`` from a Google/MONAI-style ``Args:`` section (continuation lines joined)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    found: dict[str, str] = {}
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return found
    indent, current = None, None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        match = _ARG.match(line)
        depth = len(line) - len(line.lstrip())
        if indent is None and match:
            indent = depth
        if depth < (indent or 0):
            break
        if match and depth == indent:
            current = match.group(2)
            found[current] = match.group(3).strip()
        elif current is not None:
            found[current] += " " + line.strip()
    return found


def type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if typing.get_origin(annotation) is None else None
    return text or str(annotation).replace("typing.", "")


def describe_options(config_cls: type) -> list[OptionHelp]:
    """Every field of ``config_cls`` with its type, default and help text (ValueError if one is undocumented)."""
    helps: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):  # a config may inherit documented fields from a shared base
        helps.update(args_section(klass.__doc__))
    hints = typing.get_type_hints(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        if f.name not in helps:
            raise ValueError(f"{config_cls.__name__}: option {f.name!r} has no help text in the Args: docstring")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        out.append(OptionHelp(f.name, type_name(hints[f.name]), default, helps[f.name]))
    return out
