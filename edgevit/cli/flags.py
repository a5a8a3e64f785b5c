"""CLI flags generated from a config model (:class:`edgevit.config.ConfigModel`): one declaration per option.

:func:`add_config_flags` adds one argparse flag per field — help from the field's description, choices from
``Literal``, the type and default from the annotation, ``positive`` integers where the field says ``ge=1`` — and
:func:`config_from_args` builds the validated model back from the parsed arguments, so the CLI, the recipe (and
``--set``) and the library validate a value the same way. Only the command line spelling lives here: a command
passes ``flags={"calibration_method": "--calib-method"}`` where its flag differs from ``--field-name``.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Iterable
from typing import Any, Literal, Union, get_args, get_origin

from ..config import strip_annotated
from .common import non_negative, positive

_KEY = "_edgevit_config_flags"


def _unwrap_optional(tp):
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _bound(field, name: str):
    for m in field.metadata:
        v = getattr(m, name, None)
        if v is not None:
            return v
    return None


def _scalar_type(tp, field=None):
    """(argparse type callable, choices) for a scalar annotation."""
    if get_origin(tp) is Literal:
        choices = list(get_args(tp))
        return type(choices[0]), choices
    if tp is int:
        if field is not None and (_bound(field, "ge") == 1 or _bound(field, "gt") == 0):
            return positive, None
        if field is not None and _bound(field, "ge") == 0:
            return non_negative, None
        return int, None
    if tp is float:
        return float, None
    return str, None


def _comma_list(item_type, choices):
    def parse(text: str) -> list:
        try:
            vals = [item_type(v.strip()) for v in text.split(",") if v.strip()]
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list like a,b; got {text!r}") from None
        bad = [v for v in vals if choices and v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"{', '.join(map(str, bad))} not allowed; choose from "
                                             f"{', '.join(map(str, choices))}")
        return vals

    return parse


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, model, *, exclude: Iterable[str] = (),
                     flags: dict[str, str] | None = None, helps: dict[str, str] | None = None,
                     comma: Iterable[str] = (), show_defaults: bool = True) -> dict[str, str]:
    """Add one flag per field of ``model`` (a ConfigModel class) to ``parser``; returns ``{field: flag}``.

    ``flags`` renames flags (default ``--field-name``; a boolean defaulting to true becomes ``--no-field-name``,
    storing false); ``helps`` overrides help texts; list fields take several values (``nargs='+'``) unless named in
    ``comma`` (then one comma-separated value, ``--runtimes a,b``). The field's default is the flag's default;
    ``show_defaults`` appends it to the help text (``(default 18)``); without it the description is the help text
    verbatim. A field's ``json_schema_extra={"metavar": "FILE"}`` sets the flag's metavar.
    """
    flags, helps, comma, exclude = dict(flags or {}), dict(helps or {}), set(comma), set(exclude)
    made = {}
    for name, f in model.model_fields.items():
        if name in exclude:
            continue
        default = f.get_default(call_default_factory=True)
        tp = _unwrap_optional(f.annotation)
        help_text = helps.get(name, f.description or "")
        kw: dict[str, Any] = {"dest": name, "default": default}
        if tp is bool:
            flag = flags.get(name) or (flag_name(f"no_{name}") if default else flag_name(name))
            kw["action"] = "store_false" if default else "store_true"
            if default and help_text and name not in helps:
                help_text = f"switch off: {help_text}"
        else:
            flag = flags.get(name) or flag_name(name)
            if get_origin(tp) in (list, tuple):
                (item,) = get_args(tp)[:1] or (str,)
                item_type, choices = _scalar_type(strip_annotated(item), None)
                if name in comma:
                    kw["type"] = _comma_list(item_type, choices)
                    kw["metavar"] = "A,B"
                else:
                    kw.update(type=item_type, nargs="+")
                    if choices:
                        kw["choices"] = choices
            else:
                kw["type"], choices = _scalar_type(tp, f)
                if choices:
                    kw["choices"] = choices
            if show_defaults and default not in (None, [], ""):
                shown = ",".join(map(str, default)) if isinstance(default, list) else default
                help_text = f"{help_text} (default {shown})" if help_text else f"default {shown}"
            if "choices" not in kw:
                extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
                kw["metavar"] = extra.get("metavar") or kw.get("metavar") or flag.lstrip("-").replace("-", "_").upper()
        kw["help"] = help_text
        parser.add_argument(flag, **kw)
        made[name] = flag
    registry = dict(parser.get_default(_KEY) or {})
    registry[model.__name__] = {**registry.get(model.__name__, {}), **made}
    parser.set_defaults(**{_KEY: registry})
    return made


def config_from_args(model, args: argparse.Namespace, *, command: str, extra: dict | None = None):
    """The validated ``model`` of the flags :func:`add_config_flags` added, plus ``extra`` field values.

    Raises :class:`~edgevit.errors.ConfigError` naming the flag (``edgevit quantize: --calib-samples: ...``) or
    the key (fields set through ``extra``), with the same checks a recipe's stage config gets.
    """
    from ..config import from_dict

    made = (getattr(args, _KEY, None) or {}).get(model.__name__, {})
    values = {name: getattr(args, name) for name in made if hasattr(args, name)}
    values.update(extra or {})
    return from_dict(model, values, command, label=lambda key: f"{command}: {made[key]}" if key in made else
                     f"{command}: {key}")
