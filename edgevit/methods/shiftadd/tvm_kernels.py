"""matshift and matmask as TVM tensor-expression (TE) kernels, substituted into the Relax module that edgevit's TVM
export imports from ``torch.export`` (methods.md §3: the reference end-to-end TVM path never inserted its kernels;
this one does).

With :func:`~edgevit.methods.shiftadd.kernels.use_kernels` on, the exported program holds one
``edgevit::matshift`` node per shift linear and ``edgevit::matmask`` nodes for MatAdd's products with the binary
codes. :func:`convert_map` gives ``from_exported_program`` a converter for each that emits a ``call_tir`` to a TE
PrimFunc (``bb.emit_te``) named ``matshift`` / ``matmask``; these are ordinary (unscheduled) TIR functions, so
edgevit's MetaSchedule step (:func:`edgevit.formats.tvm.tuning.lower_and_tune`) tunes them with the rest of the
model for the target (``llvm`` here, ``cuda`` where a GPU exists).

- matshift: ``x_int = int32(round(clamp(x·2^16)))``; ``acc[i, j] = Σ_k select(s == 0, 0, select(s > 0, x_int >> −p,
  −(x_int >> −p)))`` in int32 (arithmetic shift); ``y = float(acc)·2^-16 + b``.
- matmask: ``out[b, i, j] = Σ_k select(mask[b, i, k] > 0, x[b, k, j], 0)``.

:func:`kernel_functions` lists the kernel PrimFuncs of a Relax module (for tests and the export record).
"""

from __future__ import annotations

from typing import Any

from .shift import FRAC_BITS

KERNEL_NAMES = ("matshift", "matmask")


def te_matshift(x, sign, shift, bias):
    """TE compute of matshift: ``x`` (M, K) float32, ``sign``/``shift`` (N, K) int8, ``bias`` (N,) → (M, N)."""
    from tvm import te
    from tvm import tirx as tir

    m, k_dim = x.shape
    n = sign.shape[0]
    scale = float(2**FRAC_BITS)
    xi = te.compute((m, k_dim), lambda i, k: tir.Cast("int32", tir.round(tir.max(tir.min(
        x[i, k] * tir.const(scale, "float32"), tir.const(2147483520.0, "float32")),
        tir.const(-2147483648.0, "float32")))), name="x_fixed")
    k = te.reduce_axis((0, k_dim), name="k")

    def term(i, j):
        shifted = xi[i, k] >> tir.Cast("int32", -shift[j, k])
        return tir.Select(sign[j, k] == tir.const(0, "int8"), tir.const(0, "int32"),
                          tir.Select(sign[j, k] > tir.const(0, "int8"), shifted, -shifted))

    acc = te.compute((m, n), lambda i, j: te.sum(term(i, j), axis=k), name="shift_acc")
    return te.compute((m, n), lambda i, j: tir.Cast("float32", acc[i, j]) * tir.const(1.0 / scale, "float32")
                      + bias[j], name="matshift")


def te_matmask(mask, x):
    """TE compute of matmask: ``mask`` (B, I, K), ``x`` (B, K, J) → (B, I, J) sums of the rows the mask selects."""
    from tvm import te
    from tvm import tirx as tir

    b, i_dim, k_dim = mask.shape
    j_dim = x.shape[2]
    k = te.reduce_axis((0, k_dim), name="k")
    return te.compute((b, i_dim, j_dim), lambda bb, i, j: te.sum(
        tir.Select(mask[bb, i, k] > tir.const(0, mask.dtype), x[bb, k, j], tir.const(0, x.dtype)), axis=k),
        name="matmask")


def convert_map() -> dict[str, Any]:
    """``custom_convert_map`` for ``tvm.relax.frontend.torch.from_exported_program``: the two custom operators →
    ``call_tir`` of the TE kernels."""

    def matshift(node, importer):
        args = [importer.env[a] for a in node.args]
        return importer.block_builder.emit_te(te_matshift, *args, primfunc_name_hint="matshift")

    def matmask(node, importer):
        args = [importer.env[a] for a in node.args]
        return importer.block_builder.emit_te(te_matmask, *args, primfunc_name_hint="matmask")

    return {"matshift.default": matshift, "matmask.default": matmask}


def kernel_functions(mod) -> dict[str, int]:
    """``{"matshift": n, "matmask": n}``: how many TIR functions of the Relax module ``mod`` are (or were fused
    from) each kernel, by name (shape-identical calls share one function)."""
    names = [gv.name_hint for gv in mod.get_global_vars()]
    return {k: sum(1 for n in names if k in n) for k in KERNEL_NAMES}


def kernel_calls(mod) -> dict[str, int]:
    """``{"matshift": n, "matmask": n}``: the ``call_tir`` sites of each kernel in the Relax ``main`` function."""
    from tvm import ir, relax

    calls = dict.fromkeys(KERNEL_NAMES, 0)
    call_tir = ir.Op.get("relax.call_tir")

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir) and isinstance(expr.args[0], relax.GlobalVar):
            for k in KERNEL_NAMES:
                if expr.args[0].name_hint.startswith(k):
                    calls[k] += 1

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return calls
