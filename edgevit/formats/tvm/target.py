"""TVM targets for edgevit: which CPU a module is built for, and whether this machine can run it.

A TVM library is machine code for one target. For ``kind: llvm`` the target's ``mcpu`` decides which instruction
sets the generated kernels may use; a library built for a CPU with AVX-512 or AMX dies with SIGILL on a CPU
without them, and a library for another architecture (aarch64 vs x86_64) does not load at all. So every export
records the target and the instruction-set features it needs, and :class:`~edgevit.formats.tvm.runtime.TvmRuntime`
refuses — with a message naming both machines — to load a library this host cannot run.

How ``target="llvm"`` picks the CPU (``host_target``):

1. ``mcpu`` = LLVM's host CPU name, the same detection as ``llc -mcpu=native`` / ``clang -march=native``
   (``tvm.target.codegen.llvm_get_system_cpu()``, e.g. ``znver4`` on AMD Zen 4);
2. that model's SIMD features (from LLVM) are checked against the features this machine really reports
   (``/proc/cpuinfo`` flags on Linux): virtual machines often hide features of the physical CPU model
   (AVX-512 is a common one). When any is missing, the first generic x86-64 level whose features are all present
   is used instead (``x86-64-v4`` = AVX-512 F/BW/CD/DQ/VL, ``x86-64-v3`` = AVX2+FMA, ``x86-64-v2`` = SSE4.2,
   ``x86-64``) and the reason is recorded;
3. ``num-cores`` = the CPUs this process may use (``os.sched_getaffinity``); MetaSchedule tunes the kernels'
   parallel loops for that many threads.

For a library that runs on any AVX2 machine, export with ``target={"kind": "llvm", "mcpu": "x86-64-v3"}``
(``--mcpu x86-64-v3`` on the CLI). Only the SIMD instruction-set features in :data:`X86_ISA` / :data:`ARM_ISA`
are compared; LLVM's tuning flags (``fast-*``, ``slow-*``) do not change which instructions a CPU executes.

Everything here imports TVM lazily and the host facts (``/proc/cpuinfo``) need no TVM at all, so the runtime's
compatibility check runs before TVM loads the library.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...errors import ConfigError, ExportError

log = logging.getLogger(__name__)

# SIMD / matrix instruction-set features (LLVM spelling) whose absence makes generated code fault
X86_ISA = frozenset({
    "sse", "sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "sse4a", "avx", "avx2", "fma", "f16c", "bmi", "bmi2",
    "lzcnt", "popcnt", "movbe", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512vnni",
    "avx512bf16", "avx512ifma", "avx512vbmi", "avx512vbmi2", "avx512bitalg", "avx512vpopcntdq", "avx512fp16",
    "avx512vp2intersect", "avxvnni", "avxifma", "avxvnniint8", "avxneconvert", "amx-tile", "amx-bf16", "amx-int8",
    "amx-fp16", "gfni", "vaes", "vpclmulqdq",
})
ARM_ISA = frozenset({"neon", "fp-armv8", "fullfp16", "dotprod", "rdm", "lse", "sve", "sve2", "i8mm", "bf16", "sme"})

# /proc/cpuinfo flag → LLVM feature name, where they differ beyond '_' / '.' / '-'
_CPUINFO_ALIASES = {
    "pni": "sse3", "sse41": "sse4.1", "sse42": "sse4.2", "bmi1": "bmi", "abm": "lzcnt", "avxvnni": "avxvnni",
    "pclmulqdq": "pclmul", "shani": "sha", "rdrand": "rdrnd", "lahflm": "sahf",
    # aarch64 'Features' line
    "asimd": "neon", "fp": "fp-armv8", "fphp": "fullfp16", "asimdhp": "fullfp16", "asimddp": "dotprod",
    "asimdrdm": "rdm", "atomics": "lse", "crc32": "crc", "lrcpc": "rcpc",
}
# generic x86-64 micro-architecture levels, best first (LLVM ≥ 12 knows them)
X86_LEVELS = ("x86-64-v4", "x86-64-v3", "x86-64-v2", "x86-64")
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "i686": "i386", "i586": "i386"}


def _canon(feature: str) -> str:
    return re.sub(r"[-_.]", "", feature.lower())


_ISA_BY_CANON = {_canon(f): f for f in X86_ISA | ARM_ISA}


def normalise_arch(name: str | None) -> str | None:
    """'x86_64' for x86_64/amd64, 'aarch64' for aarch64/arm64, … (the first field of a triple works too)."""
    if not name:
        return None
    arch = name.split("-")[0].lower()
    return _ARCH_ALIASES.get(arch, arch)


def isa_features(features) -> set[str]:
    """The instruction-set features among ``features`` (LLVM or /proc/cpuinfo spelling), in LLVM spelling."""
    out = set()
    for f in features:
        c = _canon(str(f).lstrip("+"))
        c = _canon(_CPUINFO_ALIASES.get(c, c))
        if c in _ISA_BY_CANON:
            out.add(_ISA_BY_CANON[c])
    return out


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str | None, frozenset[str] | None]:
    """(CPU model name, ISA features in LLVM spelling) from /proc/cpuinfo; (None, None) where there is none."""
    path = Path("/proc/cpuinfo")
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None, None
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model is None:
            model = value.strip()
        elif key in ("flags", "features") and flags is None:
            flags = value.split()
    return model, (frozenset(isa_features(flags)) if flags is not None else None)


def host_cpu_features() -> tuple[frozenset[str], str]:
    """(ISA features of this machine in LLVM spelling, where they came from)."""
    _, flags = _cpuinfo()
    if flags is not None:
        return flags, "/proc/cpuinfo"
    from tvm.target import codegen  # no /proc/cpuinfo (macOS, …): LLVM's view of the host CPU model

    return frozenset(isa_features(codegen.llvm_get_cpu_features(None))), "LLVM host CPU model"


def host_info() -> dict[str, Any]:
    """This machine: architecture, LLVM triple and CPU name (when TVM imports), model name and ISA features."""
    model, _ = _cpuinfo()
    feats, where = host_cpu_features()
    info: dict[str, Any] = {"machine": normalise_arch(platform.machine()), "cpu_model_name": model,
                            "isa_features": sorted(feats), "features_from": where, "llvm_triple": None,
                            "llvm_cpu": None}
    try:
        from tvm.target import codegen

        info["llvm_triple"] = str(codegen.llvm_get_system_triple())
        info["llvm_cpu"] = str(codegen.llvm_get_system_cpu())
    except Exception:
        log.debug("TVM's LLVM host queries are unavailable", exc_info=True)
    return info


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def target_isa_features(target) -> set[str]:
    """ISA features an ``llvm`` target's code may use (its mcpu's features, with ``mattr`` applied)."""
    from tvm.target import codegen

    return isa_features(codegen.llvm_get_cpu_features(target))


def host_target(num_cores: int | None = None, *, mcpu: str | None = None) -> tuple[dict, dict]:
    """(target dict for this machine, note on how mcpu was chosen). See the module docstring."""
    import tvm
    from tvm.target import codegen

    cores = int(num_cores or usable_cores())
    host, where = host_cpu_features()
    if mcpu:
        return {"kind": "llvm", "mcpu": mcpu, "num-cores": cores}, {"mcpu_source": "given"}
    detected = str(codegen.llvm_get_system_cpu())
    missing = target_isa_features(tvm.target.Target({"kind": "llvm", "mcpu": detected})) - host
    if detected and detected != "generic" and not missing:
        return ({"kind": "llvm", "mcpu": detected, "num-cores": cores},
                {"mcpu_source": f"LLVM host detection (like llc -mcpu=native): {detected}, its SIMD features all "
                                f"present in {where}"})
    arch = normalise_arch(platform.machine())
    why = (f"LLVM detected '{detected}' but this machine lacks its features {', '.join(sorted(missing))} ({where}; "
           f"typical in a VM)" if missing else f"LLVM detected no specific CPU ('{detected}')")
    if arch == "x86_64":
        for level in X86_LEVELS:
            if not target_isa_features(tvm.target.Target({"kind": "llvm", "mcpu": level})) - host:
                log.warning("TVM target: %s; using the generic level %s instead", why, level)
                return {"kind": "llvm", "mcpu": level, "num-cores": cores}, {"mcpu_source": f"{why}; fell back to "
                                                                                           f"{level}"}
    log.warning("TVM target: %s; compiling for the generic CPU of this architecture (slower code)", why)
    return {"kind": "llvm", "num-cores": cores}, {"mcpu_source": f"{why}; generic CPU"}


def _gpu_arch() -> str | None:
    """``sm_XY`` of GPU 0 via nvidia-smi (None when there is no NVIDIA GPU or driver here)."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"sm_{out[0].replace('.', '')}" if out else None


def resolve_target(target: Any = "llvm", *, mcpu: str | None = None, num_cores: int | None = None):
    """``(tvm.target.Target, JSON-able dict of it, notes)`` from ``"llvm"`` (this CPU), ``"cuda"``, a dict, a JSON
    dict string or a TVM target tag. ``mcpu`` / ``num_cores`` override those fields of an llvm target."""
    import tvm

    notes: dict[str, Any] = {}
    if isinstance(target, str) and target.strip().startswith("{"):
        try:
            target = json.loads(target)
        except ValueError as exc:
            raise ConfigError(f"TVM target {target!r} is not valid JSON ({exc}); write it like "
                              f'{{"kind": "llvm", "mcpu": "x86-64-v3"}}') from exc
    if target is None or target in ("llvm", "host", "cpu"):
        spec, notes = host_target(num_cores, mcpu=mcpu)
    elif target == "cuda":
        if not tvm.runtime.enabled("cuda"):
            raise ExportError(
                "target 'cuda': this TVM build has no CUDA support (tvm.runtime.enabled('cuda') is False; the PyPI "
                "apache-tvm wheel is CPU-only). Build TVM from source with USE_CUDA=ON on the GPU machine, or export "
                "for the CPU (--target llvm)."
            )
        arch = _gpu_arch()
        host, _ = host_target(num_cores)
        spec = {"kind": "cuda", **({"arch": arch} if arch else {}), "host": host}
        notes = {"gpu_arch": arch or "unknown (no nvidia-smi): TVM's default"}
    elif isinstance(target, dict):
        spec = dict(target)
        if spec.get("kind") == "llvm":
            if mcpu:
                spec["mcpu"] = mcpu
            if num_cores or "num-cores" not in spec:
                spec["num-cores"] = int(num_cores or usable_cores())
            if "mcpu" not in spec:
                log.warning("TVM target %s has no mcpu: LLVM's generic CPU (SSE2 only on x86-64) gives slow code; "
                            "use target='llvm' for this CPU or set mcpu (e.g. x86-64-v3)", spec)
        notes = {"mcpu_source": "given"}
    elif isinstance(target, str):
        spec = target  # a TVM target tag such as "nvidia/jetson-orin-nano"
    else:
        raise ConfigError(f"TVM target must be 'llvm', 'cuda', a dict or a JSON string, got {type(target).__name__}")
    try:
        tgt = tvm.target.Target(spec)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"TVM cannot build target {spec!r}: {str(exc).splitlines()[0][:300]}. Use 'llvm' (this CPU), 'cuda', or "
            f'a dict such as {{"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 4}} (TVM ≥ 0.22 no longer parses '
            f'"llvm -mcpu=..." strings)'
        ) from exc
    return tgt, target_to_dict(tgt), notes


def target_to_dict(tgt) -> dict:
    """A JSON-able dict of a ``tvm.target.Target`` (round-trips through ``tvm.target.Target(d)``)."""
    return json.loads(json.dumps(_plain(tgt.export())))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "items"):
        return {str(k): _plain(v) for k, v in x.items()}
    if hasattr(x, "__iter__"):
        return [_plain(v) for v in x]
    return str(x)


def llvm_part(target_dict: dict) -> dict | None:
    """The llvm (CPU) part of a target dict: the target itself, or a cuda target's ``host``."""
    if target_dict.get("kind") == "llvm":
        return target_dict
    host = target_dict.get("host")
    return host if isinstance(host, dict) and host.get("kind") == "llvm" else None


def describe_target(target_dict: dict) -> str:
    kind = target_dict.get("kind", "?")
    if kind == "llvm":
        return (f"llvm mcpu={target_dict.get('mcpu', 'generic')}"
                + (f" mtriple={target_dict['mtriple']}" if target_dict.get("mtriple") else ""))
    return f"{kind} {target_dict.get('arch', '')}".strip()


def incompatibility(meta: dict) -> str | None:
    """Why this machine cannot run a library with export metadata ``meta`` (None when it can).

    Checks the architecture (target ``mtriple``, else the build machine's), the SIMD features the target's CPU
    uses (recorded at export as ``required_isa_features``) against this machine's, and a GPU for ``cuda``.
    """
    target = meta.get("target") or {}
    kind = target.get("kind")
    here = normalise_arch(platform.machine())
    if kind == "cuda":
        import shutil

        if not shutil.which("nvidia-smi") and not Path("/dev/nvidia0").exists():
            return "it was built for an NVIDIA GPU (target kind cuda) and this machine has no NVIDIA GPU or driver"
    cpu = llvm_part(target)
    if cpu is None:
        return None
    build = meta.get("build_host") or {}
    arch = normalise_arch(cpu.get("mtriple")) or normalise_arch(build.get("llvm_triple")) or build.get("machine")
    if arch and here and arch != here:
        return f"it contains {arch} machine code and this machine is {here}"
    required = set(meta.get("required_isa_features") or [])
    if not required and cpu.get("mcpu"):
        try:
            import tvm

            required = target_isa_features(tvm.target.Target(cpu))
        except Exception:  # noqa: BLE001 - without TVM/LLVM the recorded list is all we have
            required = set()
    have, where = host_cpu_features()
    missing = sorted(required - have)
    if missing:
        return (f"its code may use CPU features this machine lacks: {', '.join(missing)} (this machine's features "
                f"from {where})")
    return None
