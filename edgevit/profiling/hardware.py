"""Hardware profiles: peak compute, memory bandwidth and launch overhead of target devices, read from YAML.

The numbers live in ``hardware_profiles/*.yaml`` (shipped inside the package as ``edgevit/hardware_profiles``),
never in code. Every number there is a ``{value, unit, tag, source}`` block; see ``hardware_profiles/README.md``.

    >>> from edgevit.profiling.hardware import load_profile
    >>> p = load_profile("jetson-orin-nano-8gb")
    >>> p.peak_ops("fp16", mode="original")   # ops/s (a MAC counts as 2 ops)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ..config import ConfigModel, error_message
from ..errors import ConfigError
from ..registry import Registry, lazy

log = logging.getLogger(__name__)

TAGS = {"S": "found in a public source", "D": "derived (cores × clock × ops per cycle, or sparse ÷ 2)",
        "R": "recalled from vendor datasheets, to be checked",
        "M": "measured or read on this machine at run time (the `host` profile; the source says how)"}

# unit → factor to SI base units (ops/s, bytes/s, seconds, bytes, Hz, watts, plain counts)
UNITS: dict[str, float] = {
    "TFLOPS": 1e12, "GFLOPS": 1e9, "TOPS": 1e12, "GOPS": 1e9,
    "TB/s": 1e12, "GB/s": 1e9, "MB/s": 1e6,
    "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9,
    "GB": 2.0**30, "MB": 2.0**20, "KB": 2.0**10,
    "GHz": 1e9, "MHz": 1e6, "W": 1.0, "count": 1.0, "ratio": 1.0,
}
DTYPES = ("fp32", "fp16", "bf16", "int8", "int4", "fp8")
PROCESSORS = ("gpu", "cpu", "npu", "dsp")
DEFAULT_MODE = "default"


def _profiles_dir() -> Path:
    """``edgevit/hardware_profiles`` (a symlink to the repo's top-level folder in a checkout, a real folder in a
    wheel); the top-level ``hardware_profiles/`` when the symlink is missing (e.g. a checkout without symlinks)."""
    pkg = Path(__file__).resolve().parent.parent / "hardware_profiles"
    if pkg.is_dir():
        return pkg
    return Path(__file__).resolve().parent.parent.parent / "hardware_profiles"


PROFILES_DIR = _profiles_dir()


@dataclass(frozen=True)
class Quantity:
    """One hardware number with its unit, provenance tag (S/D/R) and source text. ``value`` None = not available."""

    value: float | None
    unit: str
    tag: str
    source: str

    @property
    def si(self) -> float | None:
        """The value in SI base units (ops/s, bytes/s, s, bytes, Hz)."""
        return None if self.value is None else float(self.value) * UNITS[self.unit]

    def to_dict(self) -> dict:
        return {"value": self.value, "unit": self.unit, "tag": self.tag, "source": self.source}


@dataclass(frozen=True)
class PowerMode:
    """The numbers of one power/clock mode (single-mode devices have one mode called 'default')."""

    name: str
    description: str = ""
    nvpmodel: str | None = None
    peak: dict[str, Quantity] = field(default_factory=dict)
    memory_bandwidth: Quantity | None = None
    launch_overhead: Quantity | None = None
    facts: dict[str, Quantity] = field(default_factory=dict)


@dataclass(frozen=True)
class HardwareProfile:
    """A target device: modes with peak compute per dtype, memory bandwidth and (optional) launch overhead."""

    name: str
    title: str
    processor: str
    path: Path
    modes: dict[str, PowerMode]
    default_mode: str
    facts: dict[str, Quantity] = field(default_factory=dict)
    notes: str = ""

    @property
    def description(self) -> str:
        """One line for listings: the title and, for several modes, their names (default first)."""
        if len(self.modes) == 1:
            return self.title
        others = [m for m in self.modes if m != self.default_mode]
        return f"{self.title} — modes: {self.default_mode} (default), {', '.join(others)}"

    def mode(self, name: str | None = None) -> PowerMode:
        """The named mode (default: ``default_mode``); unknown names raise with the allowed ones."""
        name = name or self.default_mode
        if name not in self.modes:
            raise ConfigError(f"hardware profile '{self.name}' has no mode '{name}'. "
                              f"Allowed: {', '.join(self.modes)} ({self.path})")
        return self.modes[name]

    def mode_for_nvpmodel(self, nvpmodel_name: str) -> PowerMode | None:
        """The mode whose ``nvpmodel`` name matches what ``nvpmodel -q`` printed (None when none does)."""
        for m in self.modes.values():
            if m.nvpmodel and m.nvpmodel.lower() == str(nvpmodel_name).lower():
                return m
        return None

    def peak(self, dtype: str, mode: str | None = None) -> Quantity:
        """The peak-compute :class:`Quantity` for ``dtype``; raises when the profile has none or it is null."""
        m = self.mode(mode)
        q = m.peak.get(dtype)
        if q is None:
            raise ConfigError(f"hardware profile '{self.name}' (mode '{m.name}') gives no peak for dtype '{dtype}'. "
                              f"Available: {', '.join(k for k, v in m.peak.items() if v.value is not None)}")
        if q.value is None:
            raise ConfigError(f"hardware profile '{self.name}' (mode '{m.name}') has no {dtype} compute: {q.source}")
        return q

    def peak_ops(self, dtype: str, mode: str | None = None) -> float:
        """Dense peak in ops/s (a multiply-accumulate counts as 2 ops)."""
        return float(self.peak(dtype, mode).si)

    def bandwidth(self, mode: str | None = None) -> float | None:
        """Memory bandwidth in bytes/s, or None when the profile does not know it."""
        q = self.mode(mode).memory_bandwidth
        return q.si if q is not None else None

    def launch_overhead_s(self, mode: str | None = None) -> float | None:
        """Per-kernel launch overhead in seconds, or None when the profile gives none."""
        q = self.mode(mode).launch_overhead
        return q.si if q is not None else None

    def numbers(self) -> Iterator[tuple[str, Quantity]]:
        """Every number of the profile as ``(key path, Quantity)``."""
        for k, q in self.facts.items():
            yield f"facts.{k}", q
        for m in self.modes.values():
            for k, q in m.peak.items():
                yield f"modes.{m.name}.peak.{k}", q
            for k in ("memory_bandwidth", "launch_overhead"):
                q = getattr(m, k)
                if q is not None:
                    yield f"modes.{m.name}.{k}", q
            for k, q in m.facts.items():
                yield f"modes.{m.name}.facts.{k}", q

    def to_dict(self) -> dict:
        return {
            "name": self.name, "title": self.title, "processor": self.processor, "path": str(self.path),
            "default_mode": self.default_mode, "notes": self.notes,
            "facts": {k: q.to_dict() for k, q in self.facts.items()},
            "modes": {n: {"description": m.description, "nvpmodel": m.nvpmodel,
                          "peak": {k: q.to_dict() for k, q in m.peak.items()},
                          "memory_bandwidth": m.memory_bandwidth.to_dict() if m.memory_bandwidth else None,
                          "launch_overhead": m.launch_overhead.to_dict() if m.launch_overhead else None,
                          "facts": {k: q.to_dict() for k, q in m.facts.items()}}
                      for n, m in self.modes.items()},
        }


# --------------------------------------------------------------------------------------------------- loading

HARDWARE: Registry[Path] = Registry("hardware profile")


def _register_dir(directory: Path) -> None:
    if not directory.is_dir():
        log.warning("hardware profile folder %s is missing; no built-in profiles are available", directory)
        return
    for f in sorted(directory.glob("*.yaml")):
        HARDWARE.register(f.stem, f)


def register_profile(path: str | Path, *, replace: bool = False) -> str:
    """Add a YAML profile file to :data:`HARDWARE` under its ``name`` (validated first); returns the name."""
    path = Path(path)
    prof = _load_file(path)
    HARDWARE.register(prof.name, path, replace=replace)
    load_profile.cache_clear()
    return prof.name


def list_profiles() -> list[HardwareProfile]:
    """The registered hardware profiles, loaded and sorted by name (``HARDWARE.names()`` gives just the names)."""
    return [load_profile(n) for n in HARDWARE.names()]


HOST_NAME = "host"  # THIS machine, detected at run time (``edgevit.profiling.host``), not a YAML file
_HOST_PROFILE = lazy("edgevit.profiling.host", "host_profile")


@functools.cache
def load_profile(name: str) -> HardwareProfile:
    """A registered profile by name (``jetson-orin-nano-8gb``), ``host`` (this machine, detected at run time:
    :func:`edgevit.profiling.host.host_profile`) or a path to a profile YAML file."""
    if name == HOST_NAME:  # loaded by name (registry.lazy): the host module builds on this one
        return _HOST_PROFILE()()
    if name not in HARDWARE and (str(name).endswith((".yaml", ".yml")) or Path(name).is_file()):
        return _load_file(Path(name))
    return _load_file(HARDWARE.get(name))


def _load_file(path: Path) -> HardwareProfile:
    import yaml

    if not path.is_file():
        raise ConfigError(f"hardware profile file {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_profile(doc, path)


# --------------------------------------------------------------------------------------------------- schema
# The YAML document as pydantic models: the one declaration of what a profile file may hold (``profile_schema()``
# gives its JSON schema). :func:`parse_profile` turns a validated document into a :class:`HardwareProfile`.
_NUMBER_KEYS = ("value", "unit", "tag", "source")


class NumberDoc(ConfigModel):
    """One number block ``{value, unit, tag, source}``; ``value: null`` = not available (the source says why)."""

    value: float | None = Field(..., ge=0, allow_inf_nan=False,
                                description="the number in `unit` (≥ 0), or null when the device has none / unknown")
    unit: Literal[tuple(UNITS)] = Field(..., description="unit of `value`")  # type: ignore[valid-type]
    tag: Literal[tuple(TAGS)] = Field(..., description="; ".join(f"{t} = {m}" for t, m in TAGS.items()))
    source: str = Field(..., description="where the number comes from (a datasheet, a derivation)")

    @model_validator(mode="before")
    @classmethod
    def _block(cls, data: Any) -> Any:
        if isinstance(data, (int, float)) and not isinstance(data, bool):  # pydantic reports only ValueErrors
            raise ValueError(  # noqa: TRY004
                f"is a bare number ({data}); write it as {{value: {data}, unit: ..., tag: S|D|R, source: '...'}}")
        if isinstance(data, dict):
            missing = [k for k in _NUMBER_KEYS if k not in data]
            extra = [str(k) for k in data if k not in _NUMBER_KEYS]
            if missing or extra:
                raise ValueError("must have exactly value, unit, tag, source"
                                 + (f"; missing {', '.join(missing)}" if missing else "")
                                 + (f"; unknown {', '.join(extra)}" if extra else ""))
        return data

    @field_validator("source")
    @classmethod
    def _has_source(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must say where the number comes from")
        return v

    def quantity(self) -> Quantity:
        return Quantity(value=self.value, unit=self.unit, tag=self.tag, source=self.source)


class ComputeDoc(NumberDoc):
    """A peak-compute number (dense; a MAC counts as 2 ops)."""

    unit: Literal["TFLOPS", "GFLOPS", "TOPS", "GOPS"] = Field(..., description="unit of `value`")


class BandwidthDoc(NumberDoc):
    """A memory bandwidth."""

    unit: Literal["TB/s", "GB/s", "MB/s"] = Field(..., description="unit of `value`")


class TimeDoc(NumberDoc):
    """A duration (per-kernel launch overhead)."""

    unit: Literal["s", "ms", "us", "ns"] = Field(..., description="unit of `value`")


class ModeDoc(ConfigModel):
    """One power/clock mode: what it gives overrides the top level."""

    description: str = Field("", description="one line about the mode")
    nvpmodel: str | None = Field(None, description="the name `nvpmodel -q` prints for this mode (Jetson)")
    facts: dict[str, NumberDoc] | None = Field(None, description="descriptive numbers (not used by the predictor)")
    peak: dict[Literal[DTYPES], ComputeDoc] | None = Field(  # type: ignore[valid-type]
        None, description="dense peak compute per dtype")
    memory_bandwidth: BandwidthDoc | None = Field(None, description="memory bandwidth")
    launch_overhead: TimeDoc | None = Field(None, description="per-kernel launch overhead (optional)")


class ProfileDoc(ConfigModel):
    """A hardware profile file. Numbers at the top level are inherited by every mode."""

    name: str = Field(..., min_length=1, description="the profile's name: the file name without .yaml")
    title: str = Field(..., min_length=1, description="the device, in words")
    processor: Literal[PROCESSORS] = Field(..., description="what the peak numbers describe")  # type: ignore
    notes: str = Field("", description="free text")
    default_mode: str | None = Field(None, description="the mode used when none is asked for (default: the first)")
    facts: dict[str, NumberDoc] | None = Field(None, description="descriptive numbers (not used by the predictor)")
    peak: dict[Literal[DTYPES], ComputeDoc] | None = Field(  # type: ignore[valid-type]
        None, description="dense peak compute per dtype (for every mode)")
    memory_bandwidth: BandwidthDoc | None = Field(None, description="memory bandwidth (for every mode)")
    launch_overhead: TimeDoc | None = Field(None, description="per-kernel launch overhead (optional)")
    modes: dict[str, ModeDoc] | None = Field(None, description="power/clock modes (default: one mode 'default')")

    @model_validator(mode="after")
    def _every_mode_complete(self):
        modes = self.modes or {DEFAULT_MODE: ModeDoc()}
        for mname, m in modes.items():
            where = "modes" if self.modes else "peak"
            if not (self.peak or m.peak):
                raise ValueError(f"{where}: mode '{mname}' has no 'peak' numbers (give them in the mode or at the "
                                 f"top)")
            if (m.memory_bandwidth or self.memory_bandwidth) is None:
                raise ValueError(f"{'modes' if self.modes else 'memory_bandwidth'}: mode '{mname}' has no "
                                 f"'memory_bandwidth' (use value: null with a source saying why when it is unknown)")
        if self.default_mode and self.default_mode not in modes:
            raise ValueError(f"default_mode: '{self.default_mode}' is not one of the modes ({', '.join(modes)})")
        return self


def profile_schema() -> dict:
    """JSON schema of a hardware profile YAML file (for editors)."""
    return ProfileDoc.model_json_schema()


def _profile_error(exc: ValidationError, path: Path) -> ConfigError:
    """``<file>: key 'modes.super.peak.fp16.tag': 'X' is not allowed; allowed values: 'S', 'D', 'R'`` per problem."""
    lines = []
    for line in error_message(exc, "", ProfileDoc).splitlines():
        loc, sep, text = line.partition(": ")
        if not sep or " " in loc:
            lines.append(f"{path}: {line}")
        elif loc == "<root>":
            lines.append(f"{path}: {text}")
        else:
            loc = loc.replace(".[key]", "")
            lines.append(f"{path}: key '{loc}'{' ' if text.startswith(('is ', 'must ', 'has ')) else ': '}{text}")
    return ConfigError("\n".join(lines))


def parse_profile(doc: Any, path: Path) -> HardwareProfile:
    """Validate a profile document (:class:`ProfileDoc`); errors name the file and the key path."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a hardware profile must be a mapping, got {type(doc).__name__}")
    try:
        d = ProfileDoc.model_validate(doc)
    except ValidationError as exc:
        raise _profile_error(exc, path) from None
    if d.name != path.stem:
        raise ConfigError(f"{path}: key 'name' is '{d.name}' but the file is named '{path.name}'; make them agree")

    def quantities(numbers: dict | None) -> dict[str, Quantity]:
        return {str(k): q.quantity() for k, q in (numbers or {}).items()}

    top_peak = quantities(d.peak)
    modes: dict[str, PowerMode] = {}
    for mname, m in (d.modes or {DEFAULT_MODE: ModeDoc()}).items():
        bw = m.memory_bandwidth or d.memory_bandwidth
        lo = m.launch_overhead or d.launch_overhead
        modes[mname] = PowerMode(name=mname, description=m.description, nvpmodel=m.nvpmodel,
                                 peak={**top_peak, **quantities(m.peak)}, memory_bandwidth=bw.quantity(),
                                 launch_overhead=lo.quantity() if lo is not None else None,
                                 facts=quantities(m.facts))
    return HardwareProfile(name=d.name, title=d.title, processor=d.processor, path=path, modes=modes,
                           default_mode=d.default_mode or next(iter(modes)), facts=quantities(d.facts),
                           notes=d.notes)


_register_dir(PROFILES_DIR)
HARDWARE.register(HOST_NAME, Path(__file__).with_name("host.py"))  # built at run time by load_profile("host")
