"""``--set KEY=VALUE``: a config field by its (dotted) name, the value converted to that field's declared type.

The type comes from the dataclass annotation (``int``, ``float``, ``bool``, ``str``, ``tuple[...]``,
``X | None``, ``dict``, a nested config dataclass), so ``--set num_layers=2.5`` or ``--set fps=fast`` fail
with one line naming the key, the type and the value, and an unknown key lists the known ones.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from streamgen.cli.checks import UsageError

_NONE_WORDS = ("none", "null")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def split_pair(pair: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {pair!r}: expected KEY=VALUE")
    return key.strip(), value


def field_type(cls: type, key: str) -> Any:
    """The declared type of ``key`` (dotted through nested config dataclasses) on dataclass ``cls``."""
    node: Any = cls
    parts = key.split(".")
    for i, part in enumerate(parts):
        inner = _dataclass_of(node)
        if inner is None:
            raise UsageError(f"--set {key}: {'.'.join(parts[:i])!r} is not a config section")
        hints = typing.get_type_hints(inner)
        names = [f.name for f in dataclasses.fields(inner)]
        if part not in names:
            where = f" in {'.'.join(parts[:i])}" if i else ""
            raise UsageError(f"--set {key}: unknown key {part!r}{where}; known: {sorted(names)}")
        node = hints[part]
    return node


def coerce(key: str, text: str, kind: Any) -> Any:
    """``text`` as a value of type ``kind``, or a UsageError naming ``key``, the type and the value."""
    try:
        return _coerce(text, kind)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise UsageError(f"--set {key}={text}: expected {_type_name(kind)}, got {text!r}") from None


def coerce_pairs(pairs: list[str], cls: type) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b.c": "x"}``, each value typed by ``cls``'s (dotted) field."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, text = split_pair(pair)
        out[key] = coerce(key, text, field_type(cls, key))
    return out


def _dataclass_of(kind: Any) -> type | None:
    if dataclasses.is_dataclass(kind):
        return kind
    for arg in typing.get_args(kind):  # Optional[SomeConfig]
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _coerce(text: Any, kind: Any) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and isinstance(text, str) and text.strip().lower() in _NONE_WORDS or text is None:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(text, arg)
            except (ValueError, TypeError, json.JSONDecodeError):
                continue
        raise ValueError(text)
    if kind is Any:
        return _json_or_text(text) if isinstance(text, str) else text
    if kind is bool:
        word = str(text).strip().lower()
        if word in _TRUE or text is True:
            return True
        if word in _FALSE or text is False:
            return False
        raise ValueError(text)
    if kind is int:
        if isinstance(text, bool) or (isinstance(text, float) and not text.is_integer()):
            raise ValueError(text)
        return int(text) if not isinstance(text, str) else int(text.strip().replace("_", ""))
    if kind is float:
        if isinstance(text, bool):
            raise ValueError(text)
        return float(text)
    if kind is str:
        if not isinstance(text, str):
            raise TypeError(text)
        return text
    if origin is tuple or origin is list:
        items = json.loads(text) if isinstance(text, str) else text
        if not isinstance(items, list):
            raise TypeError(text)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise ValueError(text)
            return tuple(_coerce(v, a) for v, a in zip(items, args))
        each = args[0] if args else Any
        values = [_coerce(v, each) for v in items]
        return tuple(values) if origin is tuple else values
    if origin is dict or kind is dict or dataclasses.is_dataclass(kind):
        value = json.loads(text) if isinstance(text, str) else text
        if not isinstance(value, dict):
            raise TypeError(text)
        return value
    if isinstance(kind, type) and isinstance(text, str):  # any other plain type: its constructor
        return kind(text)
    return text


def _type_name(kind: Any) -> str:
    if isinstance(kind, type) and not typing.get_args(kind):
        return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}.get(kind.__name__, kind.__name__)
    return str(kind).replace("typing.", "")
