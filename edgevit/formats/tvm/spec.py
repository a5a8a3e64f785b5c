"""TVM: a compiled Relax library (``.so``) with its export metadata in ``<lib>.so.tvm.json``."""

from __future__ import annotations

from pathlib import Path

from ...format_registry import FormatSpec

META_SUFFIX = ".tvm.json"
FORMAT = "edgevit.tvm"

SPEC = FormatSpec(
    name="tvm", kind="tvm", suffixes=(".so",),
    description="Apache TVM Relax library, MetaSchedule-tuned (database cached and reused)",
    exporter="edgevit.formats.tvm.export:export_tvm",
    runtimes={"tvm": "edgevit.formats.tvm.runtime:TvmRuntime"},
    stage="edgevit.formats.tvm.stage",
    cli="edgevit.formats.tvm.cli:COMMAND",
)


def metadata_path(library: str | Path) -> Path:
    """``model.so`` → ``model.so.tvm.json`` (the export metadata the TVM runtime reads)."""
    p = Path(library)
    return p.with_name(p.name + META_SUFFIX)
