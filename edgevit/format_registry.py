"""The format registry (core floor). Each format is one folder, ``edgevit/formats/<name>/``, holding

- ``spec.py``: a :class:`FormatSpec` — artefact kind, file suffixes, and where its exporter, runtimes, metadata
  reader, stage module and CLI sub-command live (as ``"module:attribute"`` strings, so nothing heavy is imported);
- ``export.py`` (torch or ONNX → file), ``runtime.py`` (a :class:`~edgevit.runtimes.base.Runtime` subclass that
  depends on the format's spec, never on its exporter), ``stage.py`` (its recipe stage), ``cli.py`` (an
  :class:`ExportCommand`: the declaration of ``edgevit export <name>``, which :mod:`edgevit.cli` turns into a
  parser; the format folder never imports the CLI floor).

Adding a format = adding its folder + one name in :data:`FORMATS` below. Every other list (artefact kinds and
suffixes, runtimes, exporters, stages, CLI sub-commands) is derived from the specs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import RegistryError

# the registration: one line per format folder (order = order of `edgevit export` sub-commands and stages)
FORMATS: tuple[str, ...] = ("onnx", "ort_mobile", "tensorrt", "openvino", "tvm", "cascade")

# the torch artefact is not an exported format but has a kind and suffixes of its own
TORCH_SUFFIXES = (".safetensors", ".pt", ".pth")


@dataclass(frozen=True)
class FormatSpec:
    """What the rest of edgevit needs to know about a format, without importing its backend.

    ``exporter``, ``runtimes`` values, ``metadata_reader`` and ``cli`` are ``"module:attribute"`` references (``cli``
    names the format's :class:`ExportCommand`);
    ``stage`` is a module whose import registers the format's stage(s). ``backends``: runtimes that run this format
    through the format's own runtime — ``load_runtime(name, artefact)`` with a name listed here loads the format's
    (first) runtime with ``backend=name`` (the early-exit cascade runs its segment graphs on onnxruntime or
    openvino).
    """

    name: str
    kind: str
    suffixes: tuple[str, ...]
    description: str = ""
    exporter: str | None = None
    runtimes: dict[str, str] = field(default_factory=dict)
    metadata_reader: str | None = None
    stage: str | None = None
    cli: str | None = None
    backends: tuple[str, ...] = ()


def resolve(ref: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def lazy_ref(ref: str) -> Callable[[], Any]:
    """A loader that imports ``ref`` (``"module:attr"``) only when called."""

    def load():
        return resolve(ref)

    load.__qualname__ = f"lazy({ref})"
    return load


_SPECS: dict[str, FormatSpec] = {}


def format_specs() -> list[FormatSpec]:
    """The spec of every registered format, in :data:`FORMATS` order."""
    if not _SPECS:
        for name in FORMATS:
            spec = importlib.import_module(f"edgevit.formats.{name}.spec").SPEC
            if spec.name != name:
                raise RegistryError(f"format folder '{name}' declares a spec named '{spec.name}'")
            _SPECS[name] = spec
    return list(_SPECS.values())


def get_format(name: str) -> FormatSpec:
    """The spec of format ``name``; raises :class:`RegistryError` naming the registered formats."""
    for spec in format_specs():
        if spec.name == name:
            return spec
    raise RegistryError(f"unknown format '{name}'. Allowed: {', '.join(FORMATS)}")


def kinds() -> dict[str, tuple[str, ...]]:
    """Artefact kind → file suffixes identifying it (``torch`` first, then every format's)."""
    out = {"torch": TORCH_SUFFIXES}
    for spec in format_specs():
        out[spec.kind] = spec.suffixes
    return out


def kind_of_path(path: str | Path) -> str | None:
    """The artefact kind of a file name ('model.onnx' → 'onnx'); None when no format claims its suffix."""
    name = Path(path).name
    for kind, suffixes in kinds().items():
        if any(name.endswith(s) for s in suffixes):
            return kind
    return None


def exporters() -> dict[str, str]:
    """Format name → exporter reference, for the formats that have a stand-alone exporter."""
    return {s.name: s.exporter for s in format_specs() if s.exporter}


def runtime_refs() -> dict[str, str]:
    """Runtime name → runtime class reference, over every format."""
    out: dict[str, str] = {}
    for spec in format_specs():
        out.update(spec.runtimes)
    return out


def metadata_readers() -> dict[str, str]:
    """Artefact kind → reference of ``fn(path) -> dict`` returning its metadata (spec and source keys)."""
    return {s.kind: s.metadata_reader for s in format_specs() if s.metadata_reader}


def stage_modules() -> list[str]:
    """Modules whose import registers the formats' recipe stages."""
    return [s.stage for s in format_specs() if s.stage]


def cli_providers() -> list[str]:
    """References (``"module:attr"``) of the formats' :class:`ExportCommand` declarations, in :data:`FORMATS`
    order; :mod:`edgevit.cli` builds ``edgevit export <name>`` from each."""
    return [s.cli for s in format_specs() if s.cli]


@dataclass(frozen=True)
class ExportAction:
    """An action of an ``edgevit export <format>`` command that replaces the export when its switch flag is given
    (tensorrt's ``--preflight``).

    ``run(onnx, options)`` gets the positional ONNX file (``None`` when not given; no model is built) and the
    command's validated options model; it returns ``(record, text, exit_code)``: the CLI prints ``text``, writes
    ``record`` to ``--json`` and exits with ``exit_code``. It raises :class:`~edgevit.errors.ConfigError` (exit
    code 2) for arguments it cannot act on.
    """

    flag: str
    help: str
    run: Callable[[Path | None, Any], tuple[Any, str, int]]


@dataclass(frozen=True)
class ExportCommand:
    """The declaration of ``edgevit export <name>``, kept in the format's folder (``formats/<name>/cli.py``) and
    turned into an argparse sub-command by :mod:`edgevit.cli.export`; it imports neither the CLI floor nor a backend.

    The CLI adds, in this order: the source flags (``source="model"``: ``--model`` required; ``"either"``: an
    ONNX file as positional argument or ``--model``, exactly one; ``"optional-model"``: ``--model`` optional,
    ``check`` says what stands in for it), each with ``--checkpoint/--arch/--pretrained``; ``--out``
    (``out_help``, required unless ``out_required=False``); one flag per field of ``options`` (a
    :class:`~edgevit.config.ConfigModel`: ``--field-name``, help = the field's description verbatim, choices from
    ``Literal``, ``ge=1`` → positive integers, ``ge=0`` → integers ≥ 0, ``json_schema_extra={"metavar": ...}``);
    ``action.flag``; with ``parity_data`` the dataset flags ``--data/--data-dir/--split/--limit``; with ``towers``
    ``--tower image|text|both``, ``--classes`` and ``--gallery`` (a dual encoder's towers, each alone:
    :func:`edgevit.methods.vlm.deploy.export_towers`); ``--json``.

    Running it: validate ``options`` (ConfigError naming the flag → exit 2), the source rule, ``action`` when its
    flag is given, ``check(model_given, out, options)`` (raises ConfigError), then build the model from
    ``--model`` and, with ``parity_data``, load ``options.parity_samples`` real images (None when
    ``options.no_parity``), and call ``run(source, out, options, parity_images) -> record`` where ``source`` is the
    torch model, the ONNX file's :class:`~pathlib.Path` or None. The CLI prints ``summary(record, options)`` (one
    line) and writes the record to ``--json`` (``json_help``).
    """

    name: str
    help: str
    options: type
    run: Callable[[Any, Path | None, Any, Any], Any]
    summary: Callable[[Any, Any], str]
    source: Literal["model", "either", "optional-model"] = "model"
    description: str | None = None
    out_help: str = "output path"
    out_required: bool = True
    json_help: str = "write the export record here"
    parity_data: bool = True
    check: Callable[[bool, Path | None, Any], None] | None = None
    action: ExportAction | None = None
    towers: bool = False


def get_exporter(name: str) -> Callable[..., Any]:
    """The export function of format ``name`` (``fn(model_or_file, out, **options) -> record``); raises
    :class:`RegistryError` naming the formats that have an exporter."""
    refs = exporters()
    if name not in refs:
        raise RegistryError(f"unknown exporter '{name}'. Allowed: {', '.join(refs)}")
    return resolve(refs[name])
