"""Multiply-accumulate counts for batch 1: from a torch model (a dispatch-level op counter) or an ONNX file.

Both count the matrix products (linear layers, attention's QK^T and AV, convolutions) and leave out element-wise
work (bias, GELU, softmax, LayerNorm), which is a few percent of a ViT's MACs.

The torch side counts the aten ops a forward pass dispatches, with its own formulas for every op it counts
(:data:`TORCH_COUNTED_OPS`), instead of ``torch.utils.flop_counter``'s table: that table misses the CPU attention
kernel (``aten::_scaled_dot_product_flash_attention_for_cpu``) on some torch releases and not on others, so the
same model got different counts on different torch versions. Every ``aten::_scaled_dot_product_*attention*``
variant is counted as B·H·Sq·Sk·(D + Dv), the same as an ONNX ``Attention`` node or its two MatMuls (a causal
mask does not halve it, on either side).
"""

from __future__ import annotations

import functools
import logging
import math
import re
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..spec import InputSpec

log = logging.getLogger(__name__)

# op type → (index of the left/data input, index of the weight/right input) for the ops we count
_MATMUL_OPS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
_CONV_OPS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
COUNTED_OPS = (*_MATMUL_OPS, "Gemm", *_CONV_OPS, "ConvTranspose", "Attention")


def count_macs_torch(model, spec: InputSpec | None = None) -> int:
    """MACs of one forward pass of ``model`` (eval mode, no grad) on a batch-1 random input of ``spec``.

    ``spec`` defaults to the spec attached to the model (``model.edgevit_spec``). See :func:`torch_macs_by_op`.
    """
    return sum(torch_macs_by_op(model, spec).values())


def torch_macs_by_op(model, spec: InputSpec | None = None, *, example=None) -> dict[str, int]:
    """MACs of one forward pass of ``model`` per aten op (``{"aten::addmm": n, ...}``, ops with 0 MACs left out).

    The input is ``example`` (a tensor or a tuple of positional arguments) when given, else a batch-1 random
    array of ``spec`` (default: ``model.edgevit_spec``), on the model's device and float dtype. The model runs in
    eval mode under ``torch.no_grad()``, with the ``nn.MultiheadAttention`` fast path switched off for the call
    so that attention reaches the counter as projections plus SDPA. Ops that look like matrix products but have
    no formula here are logged as a warning and not counted.
    """
    import torch

    if example is None:
        if spec is None:
            from ..models import input_spec_of

            spec = input_spec_of(model)
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.dtype.is_floating_point else torch.float32
        example = torch.from_numpy(spec.example(1)).to(device=device, dtype=dtype)
    args = example if isinstance(example, tuple) else (example,)
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None and hasattr(mha, "get_fastpath_enabled") else None
    was_training = model.training
    model.eval()
    counter = _mac_counter_class()()
    try:
        if fastpath is not None:
            mha.set_fastpath_enabled(False)
        with torch.no_grad(), counter:
            model(*args)
    finally:
        model.train(was_training)
        if fastpath is not None:
            mha.set_fastpath_enabled(fastpath)
    if counter.uncounted:
        log.warning("MAC count of %s leaves out op(s) without a formula: %s", type(model).__name__,
                    ", ".join(sorted(counter.uncounted)))
    return dict(counter.by_op)


# ------------------------------------------------------------------------------------- torch: per-op formulas


def _mm(a, b) -> int:  # [.., m, k] @ [k, n]
    return math.prod(a.shape[:-1]) * a.shape[-1] * b.shape[-1]


def _bmm(a, b) -> int:  # [B, m, k] @ [B, k, n]
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _conv(args, out) -> int:
    x, w, transposed = args[0], args[1], bool(args[6]) if len(args) > 6 else False
    # each output element: Cin/groups × kernel MACs; transposed: each input element scatters into Cout/groups × kernel
    return (x.numel() if transposed else out.numel()) * math.prod(w.shape[1:])


def _sdpa(q, k, v, *, seq_dim: int) -> int:
    """QK^T and AV: (all of q's dims but the last) × Sk × (D + Dv); q/k/v are [B, H, S, D] or [B, S, H, D]."""
    return math.prod(q.shape[:-1]) * k.shape[seq_dim] * (q.shape[-1] + v.shape[-1])


_TORCH_FORMULAS = {
    "aten::mm": lambda a, o: _mm(a[0], a[1]),
    "aten::addmm": lambda a, o: _mm(a[1], a[2]),
    "aten::_addmm_activation": lambda a, o: _mm(a[1], a[2]),
    "aten::_int_mm": lambda a, o: _mm(a[0], a[1]),
    "aten::_scaled_mm": lambda a, o: _mm(a[0], a[1]),
    "aten::bmm": lambda a, o: _bmm(a[0], a[1]),
    "aten::baddbmm": lambda a, o: _bmm(a[1], a[2]),
    "aten::addbmm": lambda a, o: _bmm(a[1], a[2]),
    "aten::mv": lambda a, o: a[0].numel(),
    "aten::addmv": lambda a, o: a[1].numel(),
    "aten::dot": lambda a, o: a[0].numel(),
    "aten::convolution": _conv,
    "aten::_convolution": _conv,
    # flash/efficient kernels called directly take [B, S, H, D]; every aten::_scaled_dot_product_* takes [B, H, S, D]
    "aten::_flash_attention_forward": lambda a, o: _sdpa(*a[:3], seq_dim=-3),
    "aten::_efficient_attention_forward": lambda a, o: _sdpa(*a[:3], seq_dim=-3),
}
_SDPA = re.compile(r"aten::_scaled_dot_product_\w*attention\w*")
# names that suggest a matrix product: an op like this without a formula is reported, not silently dropped
_LOOKS_LIKE_MATMUL = re.compile(r"attention|convolution|conv\d|linear|matmul|gemm|(^|::|_)b?mm($|_)")

#: aten ops that :func:`torch_macs_by_op` counts (plus every non-backward ``aten::_scaled_dot_product_*attention*``)
TORCH_COUNTED_OPS = (*_TORCH_FORMULAS, "aten::_scaled_dot_product_*attention*")


def _torch_op_macs(name: str, args, out) -> int | None:
    """MACs of one aten call, or None when the op has no formula here."""
    formula = _TORCH_FORMULAS.get(name)
    if formula is not None:
        return int(formula(args, out))
    if _SDPA.fullmatch(name) and "backward" not in name:
        return int(_sdpa(*args[:3], seq_dim=-2))
    return None


@functools.cache
def _mac_counter_class():
    """The dispatch mode class, built on first use so that importing this module does not import torch."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class MacCounter(TorchDispatchMode):
        """Adds up :func:`_torch_op_macs` over every op dispatched inside the ``with`` block."""

        def __init__(self):
            super().__init__()
            self.by_op: dict[str, int] = {}
            self.uncounted: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func._schema.name
            macs = _torch_op_macs(name, args, out)
            if macs is None:
                if _LOOKS_LIKE_MATMUL.search(name) and "backward" not in name:
                    self.uncounted.add(name)
            elif macs:
                self.by_op[name] = self.by_op.get(name, 0) + macs
            return out

    return MacCounter


def count_macs_onnx(path: str | Path, *, strict: bool = False) -> int:
    """MACs of the MatMul/Gemm/Conv(/Attention) nodes of an ONNX model at batch 1.

    Dynamic batch dimensions are set to 1 and shapes are inferred with ONNX shape inference. Nodes whose shapes
    stay unknown are skipped with a warning naming them, or raise :class:`ConfigError` when ``strict``.
    """
    return onnx_cost(path, strict=strict)["macs"]


def onnx_cost(path: str | Path, *, strict: bool = False) -> dict:
    """Per-node cost of an ONNX model at batch 1, for MAC counts and a per-node roofline.

    Returns ``{"macs", "macs_by_op", "weight_bytes", "weight_elements", "weight_itemsize",
    "nodes": [{"name", "op", "macs", "bytes", "inputs", "outputs", "input_shapes", "const_inputs"}], "skipped"}``
    where a node's ``bytes`` is the size of its inputs and outputs (weights included) — the traffic it would
    cause without fusion or cache reuse; ``input_shapes`` holds each input's shape (None where unknown) and
    ``const_inputs`` whether each input is a weight (an initializer or a ``Constant`` node's output).
    """
    import onnx

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"ONNX file {path} does not exist")
    model = onnx.load(str(path), load_external_data=False)
    if model.functions:
        from onnx import inliner

        model = inliner.inline_local_functions(model)
    _fix_batch(model)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types; inference is best effort here
        log.warning("ONNX shape inference failed on %s (%s: %s); counting with declared shapes only",
                    path, type(exc).__name__, exc)
    g = model.graph
    shapes: dict[str, tuple | None] = {}
    elem: dict[str, int] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        shapes[vi.name] = _shape_of(vi)
        elem[vi.name] = vi.type.tensor_type.elem_type
    weight_bytes = weight_elems = 0
    consts = {init.name for init in g.initializer}
    for init in g.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
        elem[init.name] = init.data_type
        weight_bytes += math.prod(init.dims) * _itemsize(init.data_type)
        weight_elems += math.prod(init.dims)
    for node in g.node:  # Constant nodes carry weights too in some exports
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.t is not None:
                    shapes[node.output[0]] = tuple(int(d) for d in attr.t.dims)
                    elem[node.output[0]] = attr.t.data_type
                    consts.add(node.output[0])

    def nbytes(name: str) -> int:
        s = shapes.get(name)
        return math.prod(s) * _itemsize(elem.get(name, 1)) if s is not None else 0

    nodes, by_op, skipped = [], {}, []
    for i, node in enumerate(g.node):
        name = node.name or f"{node.op_type}_{i}"
        try:
            macs = _node_macs(node, shapes)
        except _Unknown as exc:
            skipped.append(f"{name} ({node.op_type}: {exc})")
            macs = 0
        if macs:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
        moved = sum(nbytes(n) for n in node.input if n) + sum(nbytes(n) for n in node.output if n)
        nodes.append({"name": name, "op": node.op_type, "macs": macs, "bytes": moved,
                      "inputs": list(node.input), "outputs": list(node.output),
                      "input_shapes": [shapes.get(n) if n else None for n in node.input],
                      "const_inputs": [bool(n) and n in consts for n in node.input]})
    if skipped:
        msg = (f"{path}: {len(skipped)} node(s) with unknown shapes were not counted: {', '.join(skipped[:5])}"
               + (f" … (+{len(skipped) - 5} more)" if len(skipped) > 5 else ""))
        if strict:
            raise ConfigError(msg + ". Export with static shapes (or only a dynamic batch) to count them.")
        log.warning(msg)
    return {"macs": int(sum(by_op.values())), "macs_by_op": by_op, "weight_bytes": int(weight_bytes),
            "weight_elements": int(weight_elems),
            "weight_itemsize": round(weight_bytes / weight_elems, 3) if weight_elems else None,
            "nodes": nodes, "skipped": skipped}


class _Unknown(Exception):
    """A shape needed to count a node is unknown."""


def _fix_batch(model) -> None:
    """Set the first dimension of every graph input to 1 when it is symbolic (the dynamic batch)."""
    init_names = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in init_names or not inp.type.HasField("tensor_type"):
            continue
        dims = inp.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1


def _shape_of(vi) -> tuple | None:
    t = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return tuple(dims)


def _itemsize(onnx_dtype: int) -> int:
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(onnx_dtype)).itemsize
    except Exception:  # noqa: BLE001 - unknown/undefined dtypes (e.g. 4-bit) counted as one byte
        return 1


def _need(shapes: dict, name: str) -> tuple:
    s = shapes.get(name)
    if s is None:
        raise _Unknown(f"shape of '{name}' unknown")
    return s


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _node_macs(node, shapes: dict) -> int:
    op = node.op_type
    if node.domain not in ("", "ai.onnx", "com.microsoft"):
        return 0
    if op in _MATMUL_OPS:
        ia, ib = _MATMUL_OPS[op]
        a, b = _need(shapes, node.input[ia]), _need(shapes, node.input[ib])
        k = a[-1]
        out = shapes.get(node.output[0])
        if out is None:  # broadcast the batch dims ourselves
            batch = np.broadcast_shapes(a[:-2], b[:-2]) if len(a) >= 2 and len(b) >= 2 else ()
            m = a[-2] if len(a) >= 2 else 1
            n = b[-1] if len(b) >= 2 else 1
            out = (*batch, m, n)
        return math.prod(out) * k
    if op == "Gemm":
        a, b = _need(shapes, node.input[0]), _need(shapes, node.input[1])
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return m * n * k
    if op in _CONV_OPS:
        w = _need(shapes, node.input[_CONV_OPS[op]])
        y = _need(shapes, node.output[0])
        return math.prod(y) * math.prod(w[1:])  # each output element: Cin/group × kernel MACs
    if op == "ConvTranspose":
        x, w = _need(shapes, node.input[0]), _need(shapes, node.input[1])
        return math.prod(x) * math.prod(w[1:])  # each input element scatters into Cout/group × kernel outputs
    if op == "Attention":  # ai.onnx Attention (opset 23): QK^T and AV
        q, k, v = (_need(shapes, node.input[i]) for i in range(3))
        if len(q) == 4:  # [B, H, S, D]
            return q[0] * q[1] * q[2] * k[2] * (q[3] + v[3])
        hq, hkv = _attr(node, "q_num_heads", 0), _attr(node, "kv_num_heads", 0)
        if not hq or not hkv:
            raise _Unknown("3-D Attention without q_num_heads/kv_num_heads")
        return q[0] * q[1] * k[1] * (q[2] + hq * v[2] // hkv)
    return 0
