"""The configuration reference of the documentation, generated from the config dataclasses
themselves (their fields, types, defaults and the comments beside them), so it cannot drift
from the code: ``config_reference(TrainConfig)`` → markdown, one table per section."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import tokenize
import typing
from typing import Any


def _field_comments(cls: type) -> dict[str, str]:
    """Field name → the comment beside it in ``cls``'s source, with its continuation lines
    (comment-only lines that follow, before the next field)."""
    source = inspect.getsource(inspect.getmodule(cls))
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.split("\n")
    node = next(n for n in ast.walk(ast.parse(source))
                if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    found = {}
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        parts, line = [], item.end_lineno
        if line in comments:
            parts.append(comments[line])
            line += 1
            while line in comments and lines[line - 1].strip().startswith("#"):
                parts.append(comments[line])
                line += 1
        found[item.target.id] = " ".join(parts)
    return found


def _type_name(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return "section"
    args = typing.get_args(hint)
    if args:
        names = [_type_name(a) for a in args if a is not type(None)]
        text = " or ".join(names)
        return text + (" or null" if type(None) in args else "")
    return {str: "string", float: "number", int: "integer", bool: "true/false", dict: "mapping",
            list: "list"}.get(hint, getattr(hint, "__name__", str(hint)))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return ""
    else:
        return "required"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "" or value == {} or value == []:
        return f"`{value!r}`" if value != "" else "—"
    return f"`{value}`"


def config_reference(cls: type, prefix: str = "", heading: int = 2) -> str:
    """Markdown tables of every key of ``cls`` (a config dataclass) and of its sections."""
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    title = f"`{prefix}`" if prefix else "Top level"
    rows = [f"{'#' * heading} {title}", ""]
    doc = inspect.getdoc(cls)
    if doc and not doc.startswith(cls.__name__ + "("):
        rows += [doc, ""]
    rows += ["| key | type | default | meaning |", "|---|---|---|---|"]
    sections = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        hint = hints[f.name]
        meaning = comments.get(f.name, "").replace("|", "\\|")
        if dataclasses.is_dataclass(hint):
            sections.append((hint, key))
            meaning = meaning or f"the `{key}` section (below)"
        rows.append(f"| `{key}` | {_type_name(hint)} | {_default(f)} | {meaning} |")
    text = "\n".join(rows) + "\n"
    for hint, key in sections:
        text += "\n" + config_reference(hint, key, heading)
    return text
