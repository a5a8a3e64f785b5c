"""Why an ONNX export failed: the failing operator, the modules that call it, the underlying cause, what to try.

:func:`failure_message` turns an exporter's exception (torch.export, the dynamo translator or the TorchScript
exporter) into the message of the :class:`~edgevit.errors.ExportError` that
:func:`edgevit.formats.onnx.export.export_onnx` raises; :data:`BATCH_FIXED` recognises a model that fixes its batch
size.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

_OP_PATTERNS = (
    re.compile(r"OpOverload\(op='([\w.:]+)'"),  # dynamo DispatchError
    re.compile(r"operator '([\w.:]+)'"),  # TorchScript UnsupportedOperatorError
    re.compile(r"target=torch\.ops\.(\w+\.\w+)"),  # dynamo ConversionError
)


def _failing_ops(text: str) -> list[str]:
    ops: list[str] = []
    for pat in _OP_PATTERNS:
        for m in pat.findall(text):
            op = m.replace("::", ".").removesuffix(".default")
            if op not in ops:
                ops.append(op)
    return ops


def _op_core(name: str) -> str:
    """'aten._linalg_eigh.default' / 'aten::linalg_eigh' → 'linalg_eigh'."""
    parts = name.replace("::", ".").split(".")
    core = parts[1] if len(parts) > 1 and parts[0] in ("aten", "prims", "prim") else parts[0]
    return core.lstrip("_")


def _modules_calling(module, example, ops: list[str]) -> dict[str, list[str]]:
    """For each op, the modules (qualified name and type) that call it in one forward pass (best effort)."""
    try:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        wanted = {_op_core(o): o for o in ops}
        stack: list[str] = []
        found: dict[str, list[str]] = {}

        class Recorder(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                op = wanted.get(_op_core(str(func)))
                if op is not None and stack:
                    where = found.setdefault(op, [])
                    if stack[-1] not in where:
                        where.append(stack[-1])
                return func(*args, **(kwargs or {}))

        names = {m: n for n, m in module.named_modules()}

        def pre(mod, args):
            stack.append(f"'{names[mod] or '(top level)'}' ({type(mod).__name__})")

        def post(mod, args, out):
            stack.pop()

        hooks = [h for m in names for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
        try:
            with torch.inference_mode(), Recorder():
                module(example)
        finally:
            for h in hooks:
                h.remove()
        return found
    except Exception:  # diagnosis must never hide the real error
        log.debug("could not locate the failing operator's module", exc_info=True)
        return {}


BATCH_FIXED = re.compile(r"Constraints violated \(batch\)|specialized it to be a constant")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DETAIL = re.compile(r"No ONNX function|not supported|Error when translating|specialized it|data-dependent|guard on")


def failure_message(stage: str, exc: BaseException, module, example, *, exporter: str, opset: int,
                     dynamic_batch: bool) -> str:
    """What failed (stage, operator, module), the underlying cause, and what to try."""
    chain, e = [], exc
    while e is not None and len(chain) < 6:
        chain.append(_ANSI.sub("", f"{type(e).__name__}: {e}"))
        e = e.__cause__ or e.__context__
    text = "\n".join(chain)
    ops = _failing_ops(text)
    where = _modules_calling(module, example, ops) if ops else {}
    name = getattr(module, "edgevit_name", type(module).__name__)
    lines = [f"ONNX export of {name} failed while {stage} ({exporter} exporter, opset {opset})."]
    for op in ops[:3]:
        mods = where.get(op)
        lines.append(f"Failing operator: {op}, called in module {', '.join(mods[:3])}." if mods
                     else f"Failing operator: {op} (module not found by a test forward pass).")
    summary = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    detail = next((ln.strip(" -") for ln in text.splitlines() if _DETAIL.search(ln)), None)
    lines.append(f"Cause: {summary[:400]}")
    if detail and detail not in summary:
        lines.append(f"Detail: {detail[:400]}")
    other = "torchscript" if exporter == "dynamo" else "dynamo"
    if dynamic_batch and BATCH_FIXED.search(text):
        lines.append("The model fixes its batch size, so it cannot be exported with a dynamic batch axis. Try: "
                     "dynamic_batch=False, or compute the batch size from the input (x.shape[0]) in the model.")
    elif ops:
        lines.append(f"Try: a different opset (opset={18 if opset != 18 else 17}, up to 20) or exporter='{other}'; "
                     f"else rewrite that module without the operator (or give torch.onnx a custom translation).")
    else:
        tries = [f"exporter='{other}'", f"a different opset (opset={18 if opset != 18 else 17}, up to 20)"]
        if dynamic_batch:
            tries.append("dynamic_batch=False")
        lines.append("Try: " + "; ".join(tries) + ".")
    return "\n".join(lines)

