"""One declaration per option: :class:`ConfigModel`, the pydantic v2 base of every method and stage config.

A config model is at once the library's keyword arguments (``QuantizeConfig(budget=0.5)``), a recipe stage's
config (:func:`from_dict` with the key path), the source of the CLI flags (:mod:`edgevit.cli.flags` generates them
from the fields: help texts from ``Field(description=...)``, choices from ``Literal``, types, defaults, bounds) and
the JSON schema (``model_json_schema()``; ``edgevit recipe schema``).

Validation is strict (no string → number coercion, no truthy integers for booleans; an integer is a valid float)
and every failure is a :class:`~edgevit.errors.ConfigError` whose message names the key path and the allowed
values, e.g. ``stages.1: unknown key 'opst'; allowed keys: opset, ...`` or ``stages.3.batch.0: must be ≥ 1, got 0``.
Cross-field checks are ``@model_validator(mode="after")`` methods raising ``ValueError("key: what is wrong")``;
the key is prefixed with the path.

Importable without torch or any backend.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .errors import ConfigError

__all__ = ["ConfigModel", "coerce", "describe_fields", "error_message", "from_dict", "is_config_model", "strip_annotated", "to_dict"]


def strip_annotated(tp):
    """``Annotated[T, ...]`` → ``T`` (repeatedly); other hints unchanged."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _type_name(tp) -> str:
    tp = strip_annotated(tp)
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict or tp is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _is_list_type(tp) -> bool:
    tp = strip_annotated(tp)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_is_list_type(a) for a in get_args(tp) if a is not type(None))
    return origin in (list, tuple) or tp in (list, tuple)


def _scalar_list_item(tp) -> bool:
    """Whether a list annotation holds scalars (then a bare scalar value means a one-item list)."""
    tp = strip_annotated(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return any(_scalar_list_item(a) for a in get_args(tp) if a is not type(None))
    args = get_args(tp)
    if not args:
        return False
    item = strip_annotated(args[0])
    return item in (int, float, str) or get_origin(item) is Literal


class _ConfigMeta(type(BaseModel)):
    """Calling a config class (``QuantizeConfig(budget=...)``) raises ConfigError; validation inside pydantic
    (nested models, :func:`from_dict`) keeps pydantic's structured errors for :func:`error_message`."""

    def __call__(cls, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise ConfigError(error_message(exc, cls.config_path or cls.__name__, cls)) from None


class ConfigModel(BaseModel, metaclass=_ConfigMeta):
    """Base of edgevit's configs: strict types, unknown keys refused, assignments validated, ConfigError on failure.

    Constructing one with bad values raises :class:`~edgevit.errors.ConfigError` (not pydantic's ValidationError)
    with the key path relative to :attr:`config_path`. Lists also accept a tuple or a bare scalar (``batch: 8``
    means ``[8]``); string fields accept path objects.
    """

    model_config = ConfigDict(strict=True, extra="forbid", validate_assignment=True, validate_default=False)

    config_path: ClassVar[str] = ""  # prefix of error messages when constructed directly (e.g. "quantize")

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise ConfigError(error_message(exc, type(self).config_path or type(self).__name__, type(self))) \
                from None

    @model_validator(mode="before")
    @classmethod
    def _normalise_input(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, f in cls.model_fields.items():
            if name not in out:
                continue
            v = out[name]
            if isinstance(v, os.PathLike):
                out[name] = os.fspath(v)
            elif _is_list_type(f.annotation):
                if isinstance(v, tuple):
                    out[name] = list(v)
                elif isinstance(v, (int, float, str)) and not isinstance(v, bool) and _scalar_list_item(f.annotation):
                    out[name] = [v]
        return out

    def validate(self, path: str | None = None) -> None:  # type: ignore[override]
        """Validate again (after in-place edits of mutable values); raises :class:`ConfigError` naming ``path``."""
        from_dict(type(self), self.to_dict(), path if path is not None else type(self).config_path)

    def to_dict(self) -> dict:
        """Plain-data form (lists, not tuples), in field order; feeds :func:`from_dict` back unchanged."""
        return {name: to_dict(getattr(self, name)) for name in type(self).model_fields}

    def replace(self, **changes: Any):
        """A validated copy with ``changes`` applied (the pydantic form of ``dataclasses.replace``)."""
        return type(self)(**{**{k: getattr(self, k) for k in type(self).model_fields}, **changes})


def is_config_model(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, BaseModel)


# ------------------------------------------------------------------------------------------------ error messages
_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "list_type": "a list", "tuple_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}
_BOUNDS = {"greater_than_equal": ("≥", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("≤", "le"),
           "less_than": ("<", "lt")}


def _is_union_tag(part) -> bool:
    """pydantic puts the union member (``'str'``, ``'dict[any,any]'``, ``'function-after[...]'``) into error paths."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "none", "list", "dict") or "[" in part)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path and key else (path or key or "<root>")


def _fields_at(cls, loc: list) -> list[str] | None:
    """Field names of the model found at ``loc`` inside ``cls`` (for "allowed keys")."""
    for part in loc:
        if not is_config_model(cls) or not isinstance(part, str) or part not in cls.model_fields:
            return None
        ann = strip_annotated(cls.model_fields[part].annotation)
        subs = [a for a in (get_args(ann) if get_origin(ann) in (Union, types.UnionType) else (ann,))
                if is_config_model(a)]
        cls = subs[0] if subs else None
    return list(cls.model_fields) if is_config_model(cls) else None


def _got(v) -> str:
    return f"{type(v).__name__} {v!r}"


def error_message(exc: ValidationError, path: str = "", cls=None, *, label: Callable[[str], str] | None = None) -> str:
    """edgevit's wording of a pydantic ValidationError: one line per problem, each with its key path.

    ``label`` renames a top-level field in messages (the CLI passes ``calibration_method`` → ``--calib-method``).
    """
    errors = exc.errors(include_url=False)
    unknown: dict[tuple, list[str]] = {}
    by_loc: dict[tuple, list[dict]] = {}
    for e in errors:
        loc = tuple(p for p in e["loc"] if not _is_union_tag(p))
        if e["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
        else:
            by_loc.setdefault(loc, []).append(e)

    def where(loc: tuple) -> str:
        parts = [str(p) for p in loc]
        if parts and label is not None:
            head = label(parts[0])
            if head != parts[0]:
                return " ".join([head, ".".join(parts[1:])]).strip() if len(parts) > 1 else head
        return _join(path, ".".join(parts))

    lines = []
    for loc, keys in unknown.items():
        allowed = _fields_at(cls, list(loc)) if cls is not None else None
        text = f"{where(loc) if loc else (path or '<root>')}: unknown key{'s' if len(keys) > 1 else ''} " \
               f"{', '.join(map(repr, keys))}"
        if allowed is not None:
            shown = [label(k) for k in allowed] if label is not None and not loc else allowed
            text += f"; allowed keys: {', '.join(shown)}"
        lines.append(text)
    for loc, errs in by_loc.items():
        e = errs[0]
        t, v, ctx = e["type"], e.get("input"), e.get("ctx") or {}
        p = where(loc) if loc else (path or "<root>")
        if t == "missing":
            lines.append(f"{p}: required key is missing")
        elif t in _TYPE_WORDS:
            words = list(dict.fromkeys(_TYPE_WORDS.get(x["type"], x["type"]) for x in errs))
            if any(x["type"] == "none_required" for x in errs):
                words.append("null")
            lines.append(f"{p}: expected {' or '.join(words)}, got {_got(v)}")
        elif t == "literal_error":
            allowed = str(ctx.get("expected", "")).replace(" or ", ", ")
            lines.append(f"{p}: {v!r} is not allowed; allowed values: {allowed}")
        elif t in _BOUNDS:
            sym, key = _BOUNDS[t]
            bound = ctx.get(key)
            lines.append(f"{p}: must be {sym} {f'{bound:g}' if isinstance(bound, float) else bound}, got {v!r}")
        elif t == "finite_number":
            lines.append(f"{p}: must be a finite number, got {v!r}")
        elif t in ("value_error", "assertion_error"):
            msg = str(ctx.get("error", e["msg"]))
            for prefix in ("Value error, ", "Assertion failed, "):
                msg = msg.removeprefix(prefix)
            head, sep, rest = msg.partition(": ")
            if sep and head.isidentifier() and is_config_model(cls) and not loc and head in cls.model_fields:
                lines.append(f"{where((head,))}: {rest}")
            else:
                lines.append(f"{p}: {msg}")
        else:
            lines.append(f"{p}: {e['msg']}, got {_got(v)}")
    return "\n".join(lines) or str(exc)


# ------------------------------------------------------------------------------------------------ public helpers
def from_dict(cls, data: Any, path: str = "", *, label: Callable[[str], str] | None = None):
    """Build config ``cls`` (a :class:`ConfigModel`) from plain data (a YAML mapping).

    Unknown keys, wrong types, out-of-range values and missing keys raise :class:`ConfigError` with the key path
    (``path`` is its prefix, e.g. ``"stages.1"``) and the allowed keys or values.
    """
    where = path or "<root>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__} {data!r}")
    if not is_config_model(cls):
        raise TypeError(f"{cls.__name__} is not an edgevit.config.ConfigModel")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(error_message(exc, path, cls, label=label)) from None


def coerce(tp, value: Any, path: str):
    """Check ``value`` against the type hint ``tp`` with the same rules and wording as a config field."""
    from pydantic import TypeAdapter

    if isinstance(value, tuple) and _is_list_type(tp):
        value = list(value)
    elif isinstance(value, (int, float, str)) and not isinstance(value, bool) and _is_list_type(tp) \
            and _scalar_list_item(tp):
        value = [value]
    try:
        return TypeAdapter(tp, config=ConfigDict(strict=True)).validate_python(value)
    except ValidationError as exc:
        raise ConfigError(error_message(exc, path)) from None


def to_dict(obj) -> Any:
    """Plain-data form of a config (models and dataclasses → dicts, tuples → lists)."""
    if isinstance(obj, BaseModel):
        return {name: to_dict(getattr(obj, name)) for name in type(obj).model_fields}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def describe_fields(cls) -> list[dict]:
    """``[{name, type, default, help}]`` of a config model (or dataclass): for `edgevit list stages -v` and docs.

    ``default`` is ``"(required)"`` for required keys; ``help`` is the field's description.
    """
    rows = []
    if is_config_model(cls):
        for name, f in cls.model_fields.items():
            default = "(required)" if f.is_required() else f.get_default(call_default_factory=True)
            ann = f.annotation
            if f.metadata:
                ann = Annotated[(ann, *f.metadata)]
            rows.append({"name": name, "type": _type_name(ann), "default": to_dict(default),
                         "help": f.description or ""})
        return rows
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        rows.append({"name": f.name, "type": _type_name(hints[f.name]), "default": default,
                     "help": f.metadata.get("help", "")})
    return rows
