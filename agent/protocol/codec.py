"""Typed values <-> JSON-able data, in one place for every message of the protocol.

Dataclasses are encoded as objects of their fields; ``datetime`` as ISO 8601 text; tuples as
arrays. Decoding checks each value against the field's declared type and says where it is
wrong (``spec.gpus[1].vendor: expected one of 'nvidia', 'amd', 'jetson'``). Unknown fields
are ignored (a newer peer may send more); a missing field takes its default, and a field
without one is an error. Standard library only: both ends import this.

Public API::

    data = encode(InstanceEnsure(spec, "running"))      # dict, ready for json.dumps
    msg = decode(InstanceEnsure, data)                   # or raises DecodeError
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["DecodeError", "decode", "encode"]

T = TypeVar("T")


class DecodeError(ValueError):
    """Data that does not fit the declared type; ``path`` names the field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def encode(value: Any) -> Any:
    """``value`` as JSON-able data (dataclasses by their fields, recursively)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in _fields(type(value))}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def decode(tp: type[T] | Any, data: Any, path: str = "") -> T:
    """``data`` as a value of type ``tp``; raises :class:`DecodeError`."""
    return _decoder(tp)(data, path)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- machinery

_Decoder = Callable[[Any, str], Any]
_DECODERS: dict[Any, _Decoder] = {}
_FIELDS: dict[type, tuple[dataclasses.Field[Any], ...]] = {}


def _fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    got = _FIELDS.get(cls)
    if got is None:
        got = _FIELDS[cls] = tuple(f for f in dataclasses.fields(cls) if f.init)
    return got


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _decoder(tp: Any) -> _Decoder:
    found = _DECODERS.get(tp)
    if found is None:
        found = _DECODERS[tp] = _build(tp)
    return found


def _build(tp: Any) -> _Decoder:
    if tp is Any or tp is object:
        return lambda data, path: data
    if tp is None or tp is types.NoneType:
        def none(data: Any, path: str) -> None:
            if data is not None:
                raise DecodeError(path, "expected null")
        return none
    if tp is bool:
        def boolean(data: Any, path: str) -> bool:
            if not isinstance(data, bool):
                raise DecodeError(path, f"expected true or false, not {_json_kind(data)}")
            return data
        return boolean
    if tp is int:
        def integer(data: Any, path: str) -> int:
            if not isinstance(data, int) or isinstance(data, bool):
                raise DecodeError(path, f"expected an integer, not {_json_kind(data)}")
            return data
        return integer
    if tp is float:
        def number(data: Any, path: str) -> float:
            if not isinstance(data, int | float) or isinstance(data, bool):
                raise DecodeError(path, f"expected a number, not {_json_kind(data)}")
            return float(data)
        return number
    if tp is str:
        def text(data: Any, path: str) -> str:
            if not isinstance(data, str):
                raise DecodeError(path, f"expected a string, not {_json_kind(data)}")
            return data
        return text
    if tp is dt.datetime:
        def when(data: Any, path: str) -> dt.datetime:
            if not isinstance(data, str):
                raise DecodeError(path, f"expected an ISO 8601 time, not {_json_kind(data)}")
            try:
                return dt.datetime.fromisoformat(data)
            except ValueError:
                raise DecodeError(path, f"{data[:40]!r} is not an ISO 8601 time") from None
        return when
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass_decoder(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        allowed = args
        def literal(data: Any, path: str) -> Any:
            if isinstance(data, bool) or data not in allowed:
                raise DecodeError(path, f"expected one of {', '.join(repr(a) for a in allowed)}, not {data!r:.40}")
            return data
        return literal
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in args if a is not types.NoneType]
        nullable = len(options) < len(args)
        if len(options) == 1:
            inner = _decoder(options[0])
            def optional(data: Any, path: str) -> Any:
                if data is None and nullable:
                    return None
                return inner(data, path)
            return optional
        decoders = [_decoder(a) for a in options]
        def union(data: Any, path: str) -> Any:
            if data is None and nullable:
                return None
            for d in decoders:
                try:
                    return d(data, path)
                except DecodeError:
                    continue
            raise DecodeError(path, f"expected {' or '.join(_name(a) for a in options)}, not {_json_kind(data)}")
        return union
    if origin in (list, typing.Sequence, tuple) and (origin is not tuple or (len(args) == 2 and args[1] is ...)):
        item = _decoder(args[0]) if args else _decoder(Any)
        as_tuple = origin is tuple
        def sequence(data: Any, path: str) -> Any:
            if not isinstance(data, list):
                raise DecodeError(path, f"expected an array, not {_json_kind(data)}")
            out = [item(v, _at(path, i)) for i, v in enumerate(data)]
            return tuple(out) if as_tuple else out
        return sequence
    if origin in (dict, typing.Mapping) or tp is dict:
        value = _decoder(args[1]) if args else _decoder(Any)
        def mapping(data: Any, path: str) -> dict[str, Any]:
            if not isinstance(data, dict):
                raise DecodeError(path, f"expected an object, not {_json_kind(data)}")
            return {k: value(v, _at(path, k)) for k, v in data.items()}
        return mapping
    if tp is list:
        return _decoder(list[Any])
    raise TypeError(f"the protocol codec cannot decode {tp!r}")


def _dataclass_decoder(cls: type) -> _Decoder:
    # Hints are resolved on first use: the classes name each other before all are defined.
    plan: list[tuple[str, _Decoder, bool, Any]] = []

    def prepare() -> None:
        hints = typing.get_type_hints(cls)
        for f in _fields(cls):
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            plan.append((f.name, _decoder(hints[f.name]), has_default, f))

    def decode_obj(data: Any, path: str) -> Any:
        if not plan:
            prepare()
        if not isinstance(data, dict):
            raise DecodeError(path, f"expected an object ({cls.__name__}), not {_json_kind(data)}")
        kwargs = {}
        for name, dec, has_default, _f in plan:
            if name in data:
                kwargs[name] = dec(data[name], _at(path, name))
            elif not has_default:
                raise DecodeError(_at(path, name), "is required")
        try:
            obj = cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise DecodeError(path, str(e)) from None
        check = getattr(obj, "__wire_check__", None)
        if check is not None:
            problem = check()
            if problem:
                raise DecodeError(path, problem)
        return obj

    return decode_obj


def _json_kind(data: Any) -> str:
    if data is None:
        return "null"
    if isinstance(data, bool):
        return "a boolean"
    if isinstance(data, int | float):
        return "a number"
    if isinstance(data, str):
        return "a string"
    if isinstance(data, list):
        return "an array"
    if isinstance(data, dict):
        return "an object"
    return type(data).__name__
