"""TensorRT preflight for an ONNX file: which operators TensorRT cannot parse, and which stay out of INT8.

Needs only ``onnx`` (no TensorRT): the graph's operators are checked against TensorRT's documented support matrix,
kept as data in ``edgevit/formats/tensorrt/data/tensorrt_onnx_ops.yaml`` with its source URL and TensorRT version. It reports

- ``unsupported``: operators the table lists as unsupported or does not list at all, and operators of non-default
  domains (``com.microsoft`` …), which need a TensorRT plugin — the engine build would fail on these;
- ``restricted``: supported operators whose table entry carries a restriction (worth checking on failure);
- ``version_dependent``: operators that older TensorRT releases (JetPack 5/6) lack, with the note why;
- ``int8_fallback``: ViT patterns that stay out of TensorRT's implicit INT8 mode or lose their fusion there
  (LayerNormalization, Softmax, Erf/Gelu, residual Add of two activations, MatMul of two activations), with
  the reason and the node names — why an INT8 ViT engine may be slower or less accurate than FP16;
- ``opset`` and whether it is inside the table's range.

``ok`` is true when nothing is unsupported and the opset is in range.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from ...errors import ExportError

log = logging.getLogger(__name__)

OPS_FILE = Path(__file__).resolve().parent / "data" / "tensorrt_onnx_ops.yaml"
DEFAULT_DOMAINS = ("", "ai.onnx")
MAX_NODES_LISTED = 8


@functools.lru_cache(maxsize=4)
def load_op_table(path: str | None = None) -> dict:
    """The operator table (``supported``, ``unsupported``, ``version_notes``, ``int8_fallback``, source)."""
    import yaml

    p = Path(path) if path else OPS_FILE
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ExportError(f"cannot read TensorRT operator table {p}: {exc}; reinstall edgevit") from exc
    for key in ("supported", "unsupported", "source_url", "tensorrt_version", "opset_min", "opset_max"):
        if key not in data:
            raise ExportError(f"TensorRT operator table {p} has no '{key}' entry; reinstall edgevit")
    return data


def _load(model_or_path: Any):
    import onnx

    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, "<model>"
    p = Path(model_or_path)
    if not p.exists():
        raise ExportError(f"TensorRT preflight: {p} does not exist; export the ONNX file first (edgevit export onnx)")
    try:
        return onnx.load(str(p), load_external_data=False), str(p)
    except Exception as exc:  # DecodeError etc.
        raise ExportError(f"TensorRT preflight: {p} is not a readable ONNX file ({type(exc).__name__}: {exc})") from exc


def _names(nodes: list) -> list[str]:
    return [n.name or f"<{n.op_type} #{i}>" for i, n in enumerate(nodes[:MAX_NODES_LISTED])]


def tensorrt_preflight(model_or_path: Any, *, table: str | None = None) -> dict:
    """Check an ONNX file (or ``onnx.ModelProto``) against TensorRT's operator table; see the module docstring."""
    model, where = _load(model_or_path)
    t = load_op_table(table)
    supported: dict[str, str | None] = t["supported"] or {}
    listed_no = set(t.get("unsupported") or [])
    notes: dict[str, str] = t.get("version_notes") or {}
    fallback: dict[str, dict] = t.get("int8_fallback") or {}

    graph = model.graph
    nodes = list(graph.node)
    for n in nodes:
        if n.op_type in ("If", "Loop", "Scan"):
            for a in n.attribute:
                if a.g is not None and len(a.g.node):
                    nodes.extend(a.g.node)
    opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None)
    counts = Counter((n.domain if n.domain not in DEFAULT_DOMAINS else "ai.onnx", n.op_type) for n in nodes)

    by_op: dict[tuple[str, str], list] = {}
    for n in nodes:
        by_op.setdefault((n.domain if n.domain not in DEFAULT_DOMAINS else "ai.onnx", n.op_type), []).append(n)

    unsupported, restricted, version_dependent = [], [], []
    for (domain, op), members in sorted(by_op.items()):
        entry = {"op": op, "domain": domain, "count": len(members), "nodes": _names(members)}
        if domain != "ai.onnx":
            unsupported.append({**entry, "reason": f"operator of domain '{domain}' is not an ONNX standard operator; "
                                                   f"TensorRT needs a plugin for it (or re-export without it)"})
        elif op in listed_no:
            unsupported.append({**entry, "reason": f"listed as unsupported in TensorRT {t['tensorrt_version']}'s "
                                                   f"ONNX operator table"})
        elif op not in supported:
            unsupported.append({**entry, "reason": f"not in TensorRT {t['tensorrt_version']}'s ONNX operator table"})
        else:
            if supported[op]:
                restricted.append({**entry, "restriction": supported[op]})
            if op in notes:
                version_dependent.append({**entry, "note": notes[op]})

    int8 = _int8_patterns(graph, by_op, fallback)
    opset_ok = opset is not None and t["opset_min"] <= opset <= t["opset_max"]
    result = {
        "onnx": where, "ok": not unsupported and opset_ok,
        "table": {"source_url": t["source_url"], "tensorrt_version": t["tensorrt_version"],
                  "opset_range": [t["opset_min"], t["opset_max"]], "file": str(Path(table) if table else OPS_FILE)},
        "opset": opset, "opset_supported": opset_ok,
        "ops": {f"{op}" if d == "ai.onnx" else f"{d}.{op}": c for (d, op), c in sorted(counts.items())},
        "unsupported": unsupported, "restricted": restricted, "version_dependent": version_dependent,
        "int8_fallback": int8,
    }
    if not opset_ok:
        result["opset_note"] = (f"opset {opset} is outside TensorRT {t['tensorrt_version']}'s range "
                                f"{t['opset_min']}–{t['opset_max']}; re-export with `edgevit export onnx --opset 18`")
    log.info("TensorRT preflight of %s: %d operator types, %d unsupported, %d INT8-fallback patterns", where,
             len(counts), len(unsupported), len(int8))
    return result


def _int8_patterns(graph, by_op: dict, fallback: dict) -> list[dict]:
    """Nodes matching the ViT INT8-fallback patterns of the table (with each pattern's reason)."""
    constants = {t.name for t in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}

    def activations(node) -> int:
        return sum(1 for x in node.input if x and x not in constants)

    found = []
    for op in ("LayerNormalization", "Softmax", "Erf", "Gelu"):
        members = by_op.get(("ai.onnx", op), [])
        if members and op in fallback:
            found.append({"pattern": op, "op": op, "count": len(members), "nodes": _names(members),
                          "reason": " ".join(str(fallback[op]["reason"]).split())})
    adds = [n for n in by_op.get(("ai.onnx", "Add"), []) if activations(n) >= 2]
    if adds and "residual_add" in fallback:
        found.append({"pattern": "residual_add", "op": "Add", "count": len(adds), "nodes": _names(adds),
                      "reason": " ".join(str(fallback["residual_add"]["reason"]).split())})
    mms = [n for n in by_op.get(("ai.onnx", "MatMul"), []) if activations(n) >= 2]
    if mms and "attention_matmul" in fallback:
        found.append({"pattern": "attention_matmul", "op": "MatMul", "count": len(mms), "nodes": _names(mms),
                      "reason": " ".join(str(fallback["attention_matmul"]["reason"]).split())})
    return found


def format_preflight(result: dict) -> str:
    """A few human-readable lines for the CLI."""
    t = result["table"]
    lines = [(f"TensorRT preflight of {result['onnx']} (operator table of TensorRT {t['tensorrt_version']}, "
             f"opset {result['opset']}{'' if result['opset_supported'] else ' — OUT OF RANGE'}):")]
    if result["unsupported"]:
        for u in result["unsupported"]:
            lines.append(f"  UNSUPPORTED {u['domain']}.{u['op']} ×{u['count']} ({', '.join(u['nodes'][:3])}): "
                         f"{u['reason']}")
    else:
        lines.append(f"  all {sum(result['ops'].values())} nodes ({len(result['ops'])} operator types) are in "
                     f"TensorRT's supported-operator table")
    for v in result["version_dependent"]:
        lines.append(f"  version note {v['op']}: {v['note']}")
    for p in result["int8_fallback"]:
        lines.append(f"  INT8 fallback {p['pattern']} ×{p['count']}: {p['reason'][:160]}")
    return "\n".join(lines)
