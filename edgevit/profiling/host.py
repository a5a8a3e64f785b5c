"""The ``host`` hardware profile: THIS machine, detected at run time (issue 15, part 1).

Measured latency is compared with this profile only; the YAML profiles are predictions for other machines.

What is read, and from where (every number's ``source`` says which one was used):

- CPU model, vendor and ISA flags: ``/proc/cpuinfo`` (``model name`` / ``flags`` on x86, ``CPU part`` /
  ``Features`` on ARM), completed by ``lscpu`` (``Model name``, ``Flags``) when cpuinfo lacks them.
- cores: the logical CPUs in this process's affinity mask (``os.sched_getaffinity``), reduced to physical cores
  through ``/sys/devices/system/cpu/cpuN/topology`` (SMT siblings share one core's vector units).
- clock: cpufreq in ``/sys`` (``cpuinfo_max_freq``, ``base_frequency``), else lscpu's ``CPU max MHz``, else the
  ``@ 2.60GHz`` of an Intel brand string, else cpuinfo's current ``cpu MHz``.
- caches: ``/sys/devices/system/cpu/cpuN/cache/index*`` (else lscpu's cache lines).
- GPUs: ``nvidia-smi`` where present (stated; no GPU peak is derived).
- memory bandwidth: MEASURED (a numpy copy larger than the last-level cache, best of N).
- peak compute per dtype: DERIVED, cores × clock × ops per cycle per core, with the formula and its source in the
  number's ``source``; a dtype the CPU has no arithmetic for gets ``value: null`` and the reason.

The parsers take text (:func:`parse_cpuinfo`, :func:`parse_lscpu`) so recorded outputs of other machines can be
parsed too: :func:`describe_cpu` + :func:`derive_peaks` turn them into the same description and peaks.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .hardware import HardwareProfile, parse_profile

HOST_NAME = "host"
CPU_DIR = Path("/sys/devices/system/cpu")
HOST_PATH = Path(__file__)  # the "file" the host profile comes from: this module (its stem is the profile's name)

# flags that matter per dtype: (flag in /proc/cpuinfo, name shown)
X86_FEATURES = (("fma", "FMA"), ("avx2", "AVX2"), ("avx512f", "AVX-512F"), ("avx512_vnni", "AVX512_VNNI"),
                ("avx_vnni", "AVX_VNNI"), ("avx512_bf16", "AVX512_BF16"), ("avx512_fp16", "AVX512_FP16"),
                ("amx_int8", "AMX-INT8"), ("amx_bf16", "AMX-BF16"), ("amx_fp16", "AMX-FP16"), ("f16c", "F16C"))
ARM_FEATURES = (("asimd", "NEON"), ("asimdhp", "FP16 (asimdhp)"), ("asimddp", "dotprod"), ("i8mm", "i8mm"),
                ("bf16", "BF16"), ("sve", "SVE"), ("sve2", "SVE2"))
# Arm "CPU part" numbers (implementer 0x41) for the cores edge devices carry
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd42": "Cortex-A78AE",
             "0xd40": "Neoverse-V1", "0xd49": "Neoverse-N2", "0xd4f": "Neoverse-V2", "0xd46": "Cortex-A510",
             "0xd47": "Cortex-A710", "0xd4b": "Cortex-A78C", "0xd4d": "Cortex-A715", "0xd80": "Cortex-A520",
             "0xd81": "Cortex-A720"}
ARM_SINGLE_PIPE = {"0xd03", "0xd04", "0xd05", "0xd46", "0xd80"}  # in-order little cores: one 128-bit FMA pipe

INTEL_OPT = "Intel 64 and IA-32 Architectures Optimization Reference Manual"
AMD_OPT = "AMD Software Optimization Guide for the Zen 4 microarchitecture"
ARM_OPT = "Arm Cortex software optimization guide of the core"


# --------------------------------------------------------------------------------------------- parsing


def parse_cpuinfo(text: str) -> dict:
    """``/proc/cpuinfo`` → vendor, model, flags, family/model numbers (x86), implementer/part (ARM), the current
    MHz of every processor and the processor count. The first value of a repeated key wins for single values."""
    first: dict[str, str] = {}
    mhz: list[float] = []
    processors = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            processors += 1
        if key == "cpu MHz":
            try:
                mhz.append(float(value))
            except ValueError:
                pass
        first.setdefault(key, value)
    flags = (first.get("flags") or first.get("Features") or "").split()
    part = first.get("CPU part")
    arm = "CPU implementer" in first or "Features" in first
    model = first.get("model name")
    if model is None and arm and part:
        model = ARM_PARTS.get(part.lower(), f"ARM part {part}")
    vendor = first.get("vendor_id") or ({"0x41": "ARM"}.get((first.get("CPU implementer") or "").lower(),
                                                            first.get("CPU implementer")) if arm else None)
    return {"vendor": vendor, "model": model, "flags": flags, "arch": ("arm" if arm else "x86") if first else None,
            "family": _int(first.get("cpu family")), "model_number": _int(first.get("model")),
            "cpu_part": part.lower() if part else None, "board": first.get("Model") or first.get("Hardware"),
            "mhz": mhz, "processors": processors}


def parse_lscpu(text: str) -> dict:
    """``lscpu`` → its ``Key: value`` lines (first occurrence wins, indented layouts too) and caches as
    ``{"L1d": {"total_bytes": .., "instances": ..}}``."""
    fields: dict[str, str] = {}
    caches: dict[str, dict] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        fields.setdefault(key, value)
        m = re.match(r"(L\d[a-z]?)(?: cache)?$", key)
        c = re.match(r"([\d.]+)\s*([KMG])i?B?(?:\s*\((\d+) instances?\))?", value)
        if m and c and m.group(1) not in caches:
            total = float(c.group(1)) * {"K": 2**10, "M": 2**20, "G": 2**30}[c.group(2)]
            caches[m.group(1)] = {"total_bytes": total, "instances": int(c.group(3) or 1)}
    return {"fields": fields, "caches": caches}


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


# --------------------------------------------------------------------------------------------- description


@dataclass
class Number:
    """A number with its unit, tag and source (becomes a ``{value, unit, tag, source}`` block)."""

    value: float | None
    unit: str
    tag: str
    source: str

    def block(self) -> dict:
        return {"value": self.value, "unit": self.unit, "tag": self.tag, "source": self.source}


@dataclass
class CpuDescription:
    """What was detected about a CPU (this machine's or a recorded one's)."""

    vendor: str | None
    model: str | None
    arch: str  # "x86" | "arm"
    flags: set[str]
    features: list[str]  # the dtype-relevant ISA features present, display names
    logical_cpus: Number
    cores: Number
    clock: Number | None  # the clock the peaks use
    clocks: dict[str, Number] = field(default_factory=dict)  # every clock read: base, max, current
    caches: dict[str, Number] = field(default_factory=dict)
    microarch: Number | None = None
    family: int | None = None
    cpu_part: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def isa_short(self) -> str:
        """``AVX-512/VNNI/BF16/FP16/AMX`` or ``NEON/dotprod/FP16``: what the label shows."""
        f = self.flags
        if self.arch == "arm":
            parts = ["NEON" if "asimd" in f else "no NEON"] + [n for k, n in (("asimddp", "dotprod"),
                     ("i8mm", "i8mm"), ("asimdhp", "FP16"), ("bf16", "BF16"), ("sve", "SVE")) if k in f]
        else:
            parts = ["AVX-512" if "avx512f" in f else "AVX2" if "avx2" in f else "AVX" if "avx" in f else "SSE"]
            parts += [n for k, n in (("vnni", "VNNI"), ("avx512_bf16", "BF16"), ("avx512_fp16", "FP16"),
                                     ("amx_int8", "AMX")) if (k in f or (k == "vnni" and f & {"avx512_vnni",
                                                                                            "avx_vnni"}))]
        return "/".join(parts)

    @property
    def label(self) -> str:
        """``host (AMD EPYC (Zen 4), 2 cores, AVX-512/VNNI/BF16)``: how reports name the measured machine."""
        model = self.model or "unknown CPU"
        cores = self.cores.value
        n = f"{int(cores)} core{'s' if cores != 1 else ''}" if cores else "? cores"
        return f"{HOST_NAME} ({model}, {n}, {self.isa_short})"


def _features(arch: str, flags: set[str]) -> list[str]:
    table = ARM_FEATURES if arch == "arm" else X86_FEATURES
    return [name for flag, name in table if flag in flags]


def _amd_microarch(family: int | None, flags: set[str]) -> str | None:
    if family == 25:
        return "Zen 4" if "avx512f" in flags else "Zen 3"
    if family == 26:
        return "Zen 5"
    if family == 23:
        return "Zen / Zen 2"
    return None


def describe_cpu(cpuinfo: dict, lscpu: dict | None = None, *, affinity: list[int] | None = None,
                 physical_cores: int | None = None, cpufreq: dict[str, float] | None = None,
                 sys_caches: dict[str, Number] | None = None, source: str = "/proc/cpuinfo") -> CpuDescription:
    """Combine parsed cpuinfo / lscpu (and, for this machine, sysfs readings) into a :class:`CpuDescription`.

    ``affinity``: the logical CPUs this process may run on; ``physical_cores``: distinct cores among them (sysfs
    topology); ``cpufreq``: ``{"max_mhz": .., "base_mhz": ..}`` read from /sys; ``sys_caches``: from /sys.
    Without them (a recorded machine), lscpu's CPU count, threads per core and caches stand in.
    """
    lf = (lscpu or {}).get("fields", {})
    notes: list[str] = []
    flags = set(cpuinfo.get("flags") or lf.get("Flags", "").split())
    arch = cpuinfo.get("arch") or ("arm" if "asimd" in flags else "x86")
    model = cpuinfo.get("model") or lf.get("Model name")
    vendor = cpuinfo.get("vendor") or lf.get("Vendor ID")
    model_src = source if cpuinfo.get("model") else "lscpu 'Model name'"
    # cores
    if affinity is not None:
        logical = Number(len(affinity), "count", "M", f"os.sched_getaffinity(0): logical CPUs {_ranges(affinity)}")
    else:
        n = _int(lf.get("CPU(s)")) or cpuinfo.get("processors") or None
        logical = Number(n, "count", "M", "lscpu 'CPU(s)'" if lf.get("CPU(s)") else f"processors in {source}")
    tpc = _int(lf.get("Thread(s) per core"))
    if physical_cores is not None:
        cores = Number(physical_cores, "count", "M", "distinct (package, core) ids of the CPUs in the affinity mask "
                                                     "(/sys/devices/system/cpu/cpuN/topology)")
    elif logical.value and tpc:
        cores = Number(math.ceil(logical.value / tpc), "count", "D",
                       f"{int(logical.value)} logical CPUs ÷ {tpc} thread(s) per core (lscpu)")
    else:
        cores = Number(logical.value, "count", "R", "assumed one logical CPU per core (no topology readable)")
        notes.append("cores: SMT layout unknown, one logical CPU per core assumed")
    # clocks
    clocks: dict[str, Number] = {}
    cpufreq = cpufreq or {}
    if cpufreq.get("max_mhz"):
        clocks["max"] = Number(round(cpufreq["max_mhz"] / 1000, 3), "GHz", "M",
                               "cpufreq cpuinfo_max_freq in /sys (the highest clock the driver allows: boost)")
    elif lf.get("CPU max MHz"):
        clocks["max"] = Number(round(float(lf["CPU max MHz"]) / 1000, 3), "GHz", "M", "lscpu 'CPU max MHz'")
    if cpufreq.get("base_mhz"):
        clocks["base"] = Number(round(cpufreq["base_mhz"] / 1000, 3), "GHz", "M", "cpufreq base_frequency in /sys")
    elif model and (m := re.search(r"@\s*([\d.]+)\s*GHz", model)):
        clocks["base"] = Number(float(m.group(1)), "GHz", "S", "the base clock in the CPU brand string "
                                                               f"('{model}')")
    if cpuinfo.get("mhz"):
        mhz = max(cpuinfo["mhz"])
        clocks["current"] = Number(round(mhz / 1000, 3), "GHz", "M",
                                   f"{source} 'cpu MHz' (the clock at the time of reading; in a VM often the "
                                   "nominal TSC rate, the cores may boost higher)")
    clock = clocks.get("max") or clocks.get("base") or clocks.get("current")
    if clock is None:
        notes.append("no clock readable (no cpufreq, no lscpu 'CPU max MHz', no cpuinfo 'cpu MHz'): no peaks")
    elif clock is clocks.get("current"):
        notes.append("peaks use cpuinfo's current clock (no cpufreq or lscpu max clock readable): boost may be higher")
    # caches
    caches = dict(sys_caches or {})
    if not caches:
        for name, c in ((lscpu or {}).get("caches") or {}).items():
            per = c["total_bytes"] / max(1, c["instances"])
            unit, div = ("MB", 2**20) if per >= 2**20 else ("KB", 2**10)
            caches[f"{name.lower()}_cache"] = Number(round(per / div, 3), unit, "M",
                                                     f"lscpu '{name}': {c['total_bytes'] / div:g} {unit} total over "
                                                     f"{c['instances']} instance(s), per instance")
    micro = None
    if vendor == "AuthenticAMD" and (name := _amd_microarch(cpuinfo.get("family") or _int(lf.get("CPU family")),
                                                             flags)):
        micro = Number(None, "count", "R", f"{name}: assumed from CPU family "
                                           f"{cpuinfo.get('family') or lf.get('CPU family')} and the ISA flags")
        model = f"{model} ({name})" if model and name not in model else model
    elif arch == "arm" and cpuinfo.get("cpu_part"):
        core = ARM_PARTS.get(cpuinfo["cpu_part"])
        if core and model and core not in model:
            model = f"{model} ({core})"
    desc = CpuDescription(vendor=vendor, model=model, arch=arch, flags=flags, features=_features(arch, flags),
                          logical_cpus=logical, cores=cores, clock=clock, clocks=clocks, caches=caches,
                          microarch=micro, family=cpuinfo.get("family") or _int(lf.get("CPU family")),
                          cpu_part=cpuinfo.get("cpu_part"), notes=notes)
    desc.notes.insert(0, f"model from {model_src}")
    return desc


def _ranges(cpus: list[int]) -> str:
    out, cpus = [], sorted(cpus)
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(out)


# --------------------------------------------------------------------------------------------- peaks


def _fp32_per_cycle(d: CpuDescription) -> tuple[float, str, str]:
    """FP32 FLOP per cycle per core, the reason, and the tag (D when the unit count is documented, R assumed)."""
    f = d.flags
    if d.arch == "arm":
        if "asimd" not in f:
            return 2.0, "scalar FP only (no NEON): 1 FMA per cycle", "R"
        if d.cpu_part in ARM_SINGLE_PIPE:
            return 8.0, f"1 × 128-bit NEON FMA pipe × 4 lanes × 2 FLOP ({ARM_OPT}; in-order core)", "D"
        if d.cpu_part is None:
            return 16.0, f"assumed 2 × 128-bit NEON FMA pipes × 4 lanes × 2 FLOP (core unknown; {ARM_OPT})", "R"
        return 16.0, f"2 × 128-bit NEON FMA pipes × 4 lanes × 2 FLOP ({ARM_OPT})", "D"
    if "avx512f" in f:
        if d.vendor == "AuthenticAMD" and d.family == 25:
            return 32.0, f"AVX-512 double-pumped on 2 × 256-bit FMA pipes: 2 × 8 lanes × 2 FLOP ({AMD_OPT})", "D"
        if d.vendor == "AuthenticAMD":
            return 64.0, "AVX-512 on 2 × 512-bit FMA pipes (Zen 5, assumed full-width datapath): 2 × 16 lanes × 2 FLOP", "R"
        return 64.0, (f"AVX-512, 2 FMA units × 16 lanes × 2 FLOP ({INTEL_OPT}; assumed 2 FMA units: server Xeons "
                      "have 2, some client/Silver parts 1)"), "D"
    if "avx2" in f and "fma" in f:
        return 32.0, "AVX2 + FMA, 2 × 256-bit FMA units × 8 lanes × 2 FLOP (Haswell / Zen 2 and later; assumed)", "D"
    if "avx" in f:
        return 16.0, "AVX without FMA: 1 × 256-bit add + 1 × 256-bit multiply per cycle (assumed)", "R"
    return 8.0, "SSE: 1 × 128-bit add + 1 × 128-bit multiply per cycle (assumed)", "R"


def derive_peaks(d: CpuDescription) -> dict[str, Number]:
    """Dense peak compute per dtype (fp32, bf16, fp16, int8) = cores × clock × ops per cycle per core.

    Every ``source`` spells out the formula and where the ops per cycle come from; a dtype without hardware
    arithmetic gets ``value: None`` and says so."""
    f = d.flags
    cores, ghz = d.cores.value, (d.clock.value if d.clock else None)
    clock_src = (f"{ghz} GHz from {d.clock.source}" if d.clock else "no clock readable")
    fp32_cyc, fp32_why, fp32_tag = _fp32_per_cycle(d)

    def peak(per_cycle: float | None, what: str, tag: str, unit: str, why_null: str = "") -> Number:
        if per_cycle is None:
            return Number(None, unit, "D", why_null)
        if not cores or not ghz:
            return Number(None, unit, "D", f"cores or clock unknown ({clock_src}): {what}")
        value = round(cores * ghz * per_cycle, 1)  # G(FL)OPS
        return Number(value, unit, tag, f"{int(cores)} cores × {ghz:g} GHz × {per_cycle:g} {what} "
                                        f"[clock: {clock_src}]")

    out = {"fp32": peak(fp32_cyc, f"FLOP/cycle: {fp32_why}", fp32_tag, "GFLOPS")}
    # int8
    if "amx_int8" in f:
        out["int8"] = peak(2048, f"ops/cycle: AMX-INT8 TMUL, 1024 INT8 MACs/cycle/core ({INTEL_OPT}, AMX chapter)",
                           "D", "GOPS")
    elif f & {"avx512_vnni", "avx_vnni"}:
        which = "AVX512_VNNI" if "avx512_vnni" in f else "AVX_VNNI"
        out["int8"] = peak(4 * fp32_cyc, f"ops/cycle: 4 × the FP32 rate with {which} (VPDPBUSD: 4 INT8 MACs per "
                                         "32-bit lane where FMA does 1)", "D", "GOPS")
    elif d.arch == "arm" and "i8mm" in f:
        out["int8"] = peak(8 * fp32_cyc, "ops/cycle: 8 × the FP32 rate with i8mm (SMMLA: 32 INT8 MACs per 128-bit "
                                         "instruction where FMLA does 4; assumed same issue rate)", "D", "GOPS")
    elif d.arch == "arm" and "asimddp" in f:
        out["int8"] = peak(4 * fp32_cyc, "ops/cycle: 4 × the FP32 rate with dotprod (SDOT: 16 INT8 MACs per "
                                         "128-bit instruction where FMLA does 4)", "D", "GOPS")
    elif d.arch == "arm":
        out["int8"] = peak(2 * fp32_cyc, "ops/cycle: 2 × the FP32 rate without dotprod (SMLAL on 8 × 16-bit lanes; "
                                         "assumed)", "R", "GOPS")
    else:
        out["int8"] = peak(round(fp32_cyc * 4 / 3, 2), "ops/cycle: 4/3 × the FP32 rate without VNNI "
                                                       "(VPMADDUBSW + VPMADDWD + VPADDD: 3 instructions per 4 INT8 "
                                                       "MACs per 32-bit lane; assumed)", "R", "GOPS")
    # bf16
    if "amx_bf16" in f:
        out["bf16"] = peak(1024, f"FLOP/cycle: AMX-BF16 TMUL, 512 BF16 MACs/cycle/core ({INTEL_OPT}, AMX chapter)",
                           "D", "GFLOPS")
    elif "avx512_bf16" in f:
        out["bf16"] = peak(2 * fp32_cyc, "FLOP/cycle: 2 × the FP32 rate with AVX512_BF16 (VDPBF16PS: 2 BF16 MACs "
                                         "per FP32 lane)", "D", "GFLOPS")
    elif d.arch == "arm" and "bf16" in f:
        out["bf16"] = peak(2 * fp32_cyc, "FLOP/cycle: 2 × the FP32 rate with BF16 (BFDOT: 2 MACs per FP32 lane)",
                           "D", "GFLOPS")
    else:
        out["bf16"] = peak(None, "", "D", "GFLOPS", why_null=(
            "no BF16 arithmetic on this CPU (" + ("no BF16 feature" if d.arch == "arm" else
                                                 "no AVX512_BF16, no AMX-BF16") +
            "): BF16 models run at the FP32 rate at best"))
    # fp16
    if "amx_fp16" in f:
        out["fp16"] = peak(1024, f"FLOP/cycle: AMX-FP16 TMUL, 512 FP16 MACs/cycle/core ({INTEL_OPT}, AMX chapter)",
                           "D", "GFLOPS")
    elif "avx512_fp16" in f:
        out["fp16"] = peak(2 * fp32_cyc, "FLOP/cycle: 2 × the FP32 rate with AVX512_FP16 (32 FP16 lanes per 512-bit "
                                         "FMA)", "D", "GFLOPS")
    elif d.arch == "arm" and "asimdhp" in f:
        out["fp16"] = peak(2 * fp32_cyc, "FLOP/cycle: 2 × the FP32 rate with FP16 NEON (asimdhp: 8 FP16 lanes per "
                                         "128-bit FMLA)", "D", "GFLOPS")
    else:
        out["fp16"] = peak(None, "", "D", "GFLOPS", why_null=(
            "no FP16 arithmetic on this CPU (" + ("no asimdhp" if d.arch == "arm" else
                                                 "no AVX512_FP16, no AMX-FP16" +
                                                 ("; F16C only converts" if "f16c" in f else "")) +
            "): FP16 models run at the FP32 rate at best"))
    return out


# --------------------------------------------------------------------------------------------- this machine


def _affinity() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _physical_cores(cpus: list[int]) -> int | None:
    seen = set()
    for c in cpus:
        topo = CPU_DIR / f"cpu{c}/topology"
        core, pkg = _read(topo / "core_id"), _read(topo / "physical_package_id")
        if core is None:
            return None
        seen.add((pkg, core))
    return len(seen) or None


def _cpufreq(cpus: list[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, fname in (("max_mhz", "cpuinfo_max_freq"), ("base_mhz", "base_frequency")):
        vals = [_read(CPU_DIR / f"cpu{c}/cpufreq/{fname}") for c in cpus]
        khz = [int(v) for v in vals if v and v.isdigit()]
        if khz:
            out[key] = max(khz) / 1000
    return out


def _sys_caches(cpu: int) -> dict[str, Number]:
    out: dict[str, Number] = {}
    for idx in sorted((CPU_DIR / f"cpu{cpu}/cache").glob("index*")):
        level, ctype, size = _read(idx / "level"), _read(idx / "type"), _read(idx / "size")
        m = re.fullmatch(r"(\d+)([KMG])", size or "")
        if not (level and ctype and m):
            continue
        kind = {"Data": "d", "Instruction": "i"}.get(ctype, "")
        kb = int(m.group(1)) * {"K": 1, "M": 2**10, "G": 2**20}[m.group(2)]
        value, unit = (kb / 1024, "MB") if kb >= 1024 else (kb, "KB")
        shared = _read(idx / "shared_cpu_list")
        out[f"l{level}{kind}_cache"] = Number(value, unit, "M", f"{idx}/size ({ctype}"
                                              + (f", shared by CPUs {shared}" if shared else "") + ")")
    return out


def _lscpu_text() -> str | None:
    exe = shutil.which("lscpu")
    if exe is None:
        return None
    try:
        res = subprocess.run([exe], capture_output=True, text=True, timeout=10, check=False,
                             env=dict(os.environ, LC_ALL="C"))
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def detect_cpu() -> CpuDescription:
    """This machine's CPU: /proc/cpuinfo + lscpu + /sys + the affinity mask."""
    text = _read(Path("/proc/cpuinfo")) or ""
    lscpu = _lscpu_text()
    cpus = _affinity()
    d = describe_cpu(parse_cpuinfo(text), parse_lscpu(lscpu) if lscpu else None, affinity=cpus,
                     physical_cores=_physical_cores(cpus), cpufreq=_cpufreq(cpus),
                     sys_caches=_sys_caches(cpus[0]) if cpus else None)
    if not text:
        d.notes.append("/proc/cpuinfo not readable")
    if lscpu is None:
        d.notes.append("lscpu not available")
    return d


def measure_bandwidth(last_level_cache_bytes: float | None = None, repeats: int = 5) -> Number:
    """Memory bandwidth MEASURED: ``numpy.copyto`` between two float64 arrays 4× the last-level cache (64 MiB
    at least, 512 MiB at most), best of ``repeats``, (bytes read + bytes written) / seconds, one thread."""
    import numpy as np

    size = int(min(512 * 2**20, max(64 * 2**20, 4 * (last_level_cache_bytes or 0))))
    n = size // 8
    src = np.ones(n)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # first touch: page faults out of the timing
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    gbs = 2 * size / best / 1e9
    return Number(round(gbs, 2), "GB/s", "M",
                  f"measured: numpy.copyto between two {size // 2**20} MiB float64 arrays (4× the last-level cache, "
                  f"64-512 MiB), best of {repeats}, (bytes read + bytes written) / time, one thread: one core's "
                  "streaming bandwidth, write-allocate traffic not counted")


def _gpus() -> list[dict]:
    from .system import _nvidia_smi

    return _nvidia_smi([]) or []


def build_host_profile(desc: CpuDescription, bandwidth: Number, gpus: list[dict] | None = None) -> HostProfile:
    """The ``host`` :class:`HardwareProfile` of a described CPU, validated like every YAML profile."""
    peaks = derive_peaks(desc)
    facts = {"logical_cpus": desc.logical_cpus, "cores": desc.cores, **desc.caches}
    facts.update({f"clock_{k}": v for k, v in desc.clocks.items()})
    gpus = gpus or []
    notes = [f"Detected at run time ({', '.join(desc.features) or 'no dtype-relevant ISA features'})."]
    if gpus:
        notes.append("GPU(s) by nvidia-smi: " + "; ".join(f"{g.get('name')} ({g.get('memory.total')} MiB)"
                                                         for g in gpus)
                     + ". The peaks here are the CPU's; no GPU peak is derived.")
    notes.append("; ".join(desc.notes) + ".")
    doc = {"name": HOST_NAME, "title": desc.label, "processor": "cpu", "notes": " ".join(notes),
           "facts": {k: v.block() for k, v in facts.items()},
           "peak": {k: v.block() for k, v in peaks.items()}, "memory_bandwidth": bandwidth.block()}
    base = parse_profile(doc, HOST_PATH)
    return HostProfile(name=base.name, title=base.title, processor=base.processor, path=base.path,
                       modes=base.modes, default_mode=base.default_mode, facts=base.facts, notes=base.notes,
                       cpu_model=desc.model, label=desc.label, isa=list(desc.features), gpus=list(gpus))


@dataclass(frozen=True)
class HostProfile(HardwareProfile):
    """The ``host`` profile plus what was detected: CPU model, the label reports use, ISA features, GPUs."""

    cpu_model: str | None = None
    label: str = HOST_NAME
    isa: list[str] = field(default_factory=list)
    gpus: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "cpu_model": self.cpu_model, "label": self.label, "isa": self.isa,
                "gpus": self.gpus}


@functools.cache
def host_profile() -> HostProfile:
    """This machine as a hardware profile (detected once per process; the bandwidth measurement takes < 1 s)."""
    desc = detect_cpu()
    llc = max((q.value * (2**20 if q.unit == "MB" else 2**10) for k, q in desc.caches.items()
               if q.value and k.startswith("l3")), default=None)
    return build_host_profile(desc, measure_bandwidth(llc), _gpus())
