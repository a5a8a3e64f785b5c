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
from typing import Any

from ..errors import ConfigError
from ..registry import Registry

log = logging.getLogger(__name__)

TAGS = {"S": "found in a public source", "D": "derived (cores × clock × ops per cycle, or sparse ÷ 2)",
        "R": "recalled from vendor datasheets, to be checked"}

# unit → factor to SI base units (ops/s, bytes/s, seconds, bytes, Hz, watts, plain counts)
UNITS: dict[str, float] = {
    "TFLOPS": 1e12, "GFLOPS": 1e9, "TOPS": 1e12, "GOPS": 1e9,
    "TB/s": 1e12, "GB/s": 1e9, "MB/s": 1e6,
    "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9,
    "GB": 2.0**30, "MB": 2.0**20, "KB": 2.0**10,
    "GHz": 1e9, "MHz": 1e6, "W": 1.0, "count": 1.0, "ratio": 1.0,
}
# which units each role accepts
_COMPUTE_UNITS = ("TFLOPS", "GFLOPS", "TOPS", "GOPS")
_BANDWIDTH_UNITS = ("TB/s", "GB/s", "MB/s")
_TIME_UNITS = ("s", "ms", "us", "ns")
DTYPES = ("fp32", "fp16", "bf16", "int8", "int4", "fp8")
_NUMBER_KEYS = {"value", "unit", "tag", "source"}
_TOP_KEYS = {"name", "title", "processor", "notes", "default_mode", "facts", "peak", "memory_bandwidth",
             "launch_overhead", "modes"}
_MODE_KEYS = {"description", "nvpmodel", "facts", "peak", "memory_bandwidth", "launch_overhead"}
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


@functools.cache
def load_profile(name: str) -> HardwareProfile:
    """A registered profile by name (``jetson-orin-nano-8gb``) or a path to a profile YAML file."""
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


def parse_profile(doc: Any, path: Path) -> HardwareProfile:
    """Validate a profile document; errors name the file and the key path."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a hardware profile must be a mapping, got {type(doc).__name__}")
    _check_keys(doc, _TOP_KEYS, path, "")
    _no_bare_numbers(doc, path, "")
    for key in ("name", "title", "processor"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise ConfigError(f"{path}: key '{key}' is required and must be a non-empty string")
    if doc["name"] != path.stem:
        raise ConfigError(f"{path}: key 'name' is '{doc['name']}' but the file is named '{path.name}'; make them agree")
    if doc["processor"] not in ("gpu", "cpu", "npu", "dsp"):
        raise ConfigError(f"{path}: key 'processor' must be one of gpu, cpu, npu, dsp; got '{doc['processor']}'")
    top = _parse_mode_fields(doc, path, "")
    raw_modes = doc.get("modes") or {DEFAULT_MODE: {}}
    if not isinstance(raw_modes, dict):
        raise ConfigError(f"{path}: key 'modes' must be a mapping of mode name → numbers")
    modes: dict[str, PowerMode] = {}
    for mname, mdoc in raw_modes.items():
        mname = str(mname)
        where = f"modes.{mname}."
        if not isinstance(mdoc, dict):
            raise ConfigError(f"{path}: key '{where[:-1]}' must be a mapping")
        _check_keys(mdoc, _MODE_KEYS, path, where)
        own = _parse_mode_fields(mdoc, path, where)
        peak = {**top["peak"], **own["peak"]}
        mode = PowerMode(
            name=mname, description=str(mdoc.get("description", "")), nvpmodel=mdoc.get("nvpmodel"),
            peak=peak, memory_bandwidth=own["memory_bandwidth"] or top["memory_bandwidth"],
            launch_overhead=own["launch_overhead"] or top["launch_overhead"], facts=own["facts"],
        )
        if not mode.peak:
            raise ConfigError(f"{path}: mode '{mname}' has no 'peak' numbers (give them in the mode or at the top)")
        if mode.memory_bandwidth is None:
            raise ConfigError(f"{path}: mode '{mname}' has no 'memory_bandwidth' (use value: null with a source "
                              f"saying why when it is unknown)")
        modes[mname] = mode
    default = str(doc.get("default_mode") or next(iter(modes)))
    if default not in modes:
        raise ConfigError(f"{path}: key 'default_mode' is '{default}', not one of the modes ({', '.join(modes)})")
    return HardwareProfile(name=doc["name"], title=doc["title"], processor=doc["processor"], path=path,
                           modes=modes, default_mode=default, facts=top["facts"], notes=str(doc.get("notes", "")))


def _check_keys(d: dict, allowed: set[str], path: Path, where: str) -> None:
    extra = sorted(str(k) for k in d if k not in allowed)
    if extra:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(where + k for k in extra)}; "
                          f"allowed here: {', '.join(sorted(allowed))}")


def _no_bare_numbers(node: Any, path: Path, where: str) -> None:
    """Every number must sit in a {value, unit, tag, source} block: reject bare ones anywhere."""
    if isinstance(node, dict):
        if "value" in node:
            return  # a number block: checked by _quantity
        for k, v in node.items():
            _no_bare_numbers(v, path, f"{where}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _no_bare_numbers(v, path, f"{where}{i}.")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        raise ConfigError(f"{path}: key '{where[:-1]}' is a bare number ({node}); write it as "
                          f"{{value: {node}, unit: ..., tag: S|D|R, source: '...'}}")


def _quantity(d: Any, path: Path, key: str, units: tuple[str, ...] | None = None) -> Quantity:
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: key '{key}' must be a mapping {{value, unit, tag, source}}, got {d!r}")
    missing = sorted(_NUMBER_KEYS - set(d))
    extra = sorted(set(d) - _NUMBER_KEYS)
    if missing or extra:
        raise ConfigError(f"{path}: key '{key}' must have exactly value, unit, tag, source"
                          + (f"; missing {', '.join(missing)}" if missing else "")
                          + (f"; unknown {', '.join(extra)}" if extra else ""))
    value = d["value"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
        raise ConfigError(f"{path}: key '{key}.value' must be a non-negative number or null, got {value!r}")
    allowed = units or tuple(UNITS)
    if d["unit"] not in allowed:
        raise ConfigError(f"{path}: key '{key}.unit' is '{d['unit']}'; allowed: {', '.join(allowed)}")
    if d["tag"] not in TAGS:
        raise ConfigError(f"{path}: key '{key}.tag' is {d['tag']!r}; allowed: "
                          + "; ".join(f"{t} = {m}" for t, m in TAGS.items()))
    if not isinstance(d["source"], str) or not d["source"].strip():
        raise ConfigError(f"{path}: key '{key}.source' must say where the number comes from")
    return Quantity(value=None if value is None else float(value), unit=d["unit"], tag=d["tag"], source=d["source"])


def _parse_mode_fields(d: dict, path: Path, where: str) -> dict:
    peak_doc = d.get("peak") or {}
    if not isinstance(peak_doc, dict):
        raise ConfigError(f"{path}: key '{where}peak' must be a mapping dtype → number block")
    peak = {}
    for dtype, q in peak_doc.items():
        if dtype not in DTYPES:
            raise ConfigError(f"{path}: key '{where}peak.{dtype}' is not a known dtype ({', '.join(DTYPES)})")
        peak[dtype] = _quantity(q, path, f"{where}peak.{dtype}", _COMPUTE_UNITS)
    facts_doc = d.get("facts") or {}
    if not isinstance(facts_doc, dict):
        raise ConfigError(f"{path}: key '{where}facts' must be a mapping name → number block")
    facts = {str(k): _quantity(q, path, f"{where}facts.{k}") for k, q in facts_doc.items()}
    bw = d.get("memory_bandwidth")
    lo = d.get("launch_overhead")
    return {
        "peak": peak, "facts": facts,
        "memory_bandwidth": _quantity(bw, path, f"{where}memory_bandwidth", _BANDWIDTH_UNITS) if bw else None,
        "launch_overhead": _quantity(lo, path, f"{where}launch_overhead", _TIME_UNITS) if lo else None,
    }


_register_dir(PROFILES_DIR)
