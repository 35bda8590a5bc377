"""Griffe extensions for the API reference: grouped parameters and shared docstring parts.

The library documents related parameters on one line, e.g. ``gamma, lambda_: discount and trace
parameter`` or ``log_prob (differentiated), old_log_prob: [..., T]``. Griffe reads that as one
parameter named "gamma, lambda_" and warns that it is not in the signature. This extension
rewrites such an entry, before griffe parses it, into one entry per name sharing the
description (a parenthetical after a name is kept in front of that name's description), so
`mkdocs build --strict` still catches documented parameters that really do not exist.

Shared parts: a module may write a placeholder line `NAME` in several docstrings and fill it at
import time from a module-level string `_NAME_DOC` (`losses.py` does this for the `mask`
argument). Griffe reads source, not the imported docstring, so the extension performs the same
substitution statically.
"""

from __future__ import annotations

import ast
import re
import textwrap

import griffe

_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Attributes):\s*$")
_NAME = r"\*{0,2}\w+(?: \([^)]*\))?"
_GROUPED = re.compile(rf"^(\s+)({_NAME}(?:, {_NAME})+):(.*)$")
_ONE = re.compile(r"^(\*{0,2}\w+)(?: \(([^)]*)\))?$")
_PLACEHOLDER = re.compile(r"^(\s*)([A-Z][A-Z0-9_]*)\s*$", re.MULTILINE)


def fill_placeholders(text: str, module: griffe.Object) -> str:
  """Replace each placeholder line `NAME` by the module's string constant `_NAME_DOC`."""

  def fill(match: re.Match) -> str:
    indent, name = match.groups()
    attribute = module.members.get(f"_{name}_DOC")
    try:
      value = ast.literal_eval(str(attribute.value)) if attribute is not None else None
    except (ValueError, SyntaxError):
      value = None
    if not isinstance(value, str):
      return match.group(0)
    first, *rest = value.split("\n")
    rest = textwrap.dedent("\n".join(rest)).split("\n") if rest else []
    return "\n".join([indent + first] + [indent + "  " + line if line else "" for line in rest])

  return _PLACEHOLDER.sub(fill, text)


def expand_grouped_parameters(text: str) -> str:
  """Split every grouped entry of the Args/Attributes sections of `text` (see module doc)."""
  lines = text.split("\n")
  out, i, section_indent = [], 0, None
  while i < len(lines):
    line = lines[i]
    header = _SECTION.match(line)
    if header:
      section_indent = len(header.group(1))
      out.append(line)
      i += 1
      continue
    if section_indent is not None and line.strip() and (
        len(line) - len(line.lstrip()) <= section_indent):
      section_indent = None  # left the section
    grouped = _GROUPED.match(line) if section_indent is not None else None
    if not grouped:
      out.append(line)
      i += 1
      continue
    indent, names, description = grouped.groups()
    continuation = []
    i += 1
    while i < len(lines) and (not lines[i].strip() or
                              len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
      if not lines[i].strip() and (i + 1 >= len(lines) or not lines[i + 1].strip()):
        break
      continuation.append(lines[i])
      i += 1
    for name in names.split(", "):
      base, note = _ONE.match(name).groups()
      prefix = f" ({note})" if note else ""
      out.append(f"{indent}{base}:{prefix}{description}")
      out.extend(continuation)
  return "\n".join(out)


class GroupedParameters(griffe.Extension):
  """Fill shared parts and expand grouped parameters of every docstring before it is parsed."""

  def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
    if obj.docstring is not None:
      text = fill_placeholders(obj.docstring.value, obj.module)
      obj.docstring.value = expand_grouped_parameters(text)
