"""Graph inspection and surgery for the ViT guardrails, on ONNX (QDQ) and OpenVINO IR (FakeQuantize) graphs.

- :func:`onnx_guarded_nodes` / :func:`ov_guarded_nodes`: the nodes each guardrail keeps in floating point
  (LayerNorm, Softmax, GELU, residual Adds, patch embedding, head), found by op type and structure; the patch
  embedding through :func:`stem_convs`, one rule for both graph kinds.
- :func:`strip_qdq_before`: removes the Quantize/Dequantize pairs that feed given ONNX nodes (ONNX Runtime's QDQ
  quantiser also quantises MatMul/Conv *outputs*, which would put a QDQ pair in front of a Softmax or a GELU).
- :func:`onnx_quantized_layers` / :func:`ov_quantized_layers`: nodes whose activation inputs are quantised, and
  :func:`onnx_bypass` / :func:`ov_bypass`: the same graph with one layer's activation quantisers removed, for the
  per-layer sensitivity pass.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

log = logging.getLogger(__name__)

ONNX_CONV = ("Conv", "ConvTranspose")
ONNX_DENSE = ("MatMul", "Gemm")
ONNX_WEIGHTED = (*ONNX_DENSE, *ONNX_CONV)
# every OpenVINO op with a weight a quantiser can feed: depthwise / grouped convolutions are GroupConvolution
OV_CONV = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData")
OV_DENSE = ("MatMul",)
OV_WEIGHTED = (*OV_DENSE, *OV_CONV)
SHAPE_OPS = ("Shape", "Size", "ShapeOf")  # their outputs describe a tensor, they are not activations
ONNX_GUARD_TYPES = {
    "layernorm": ("LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization", "ReduceMean"),
    "softmax": ("Softmax",),
    "gelu": ("Gelu", "FastGelu", "BiasGelu"),
}
OV_GUARD_TYPES = {
    "layernorm": ("MVN", "NormalizeL2"),
    "softmax": ("Softmax",),
    "gelu": ("Gelu",),
}


# ---------------------------------------------------------------------------------------------------- ONNX


def _onnx_index(model):
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return producer, consumers, consts


def _is_const(name: str, producer: dict, consts: set, depth: int = 0) -> bool:
    """True when a tensor is an initializer / Constant, possibly behind a DequantizeLinear or Cast."""
    if name in consts:
        return True
    p = producer.get(name)
    if p is not None and depth < 3 and p.op_type in ("DequantizeLinear", "Cast", "Identity", "Transpose"):
        return _is_const(p.input[0], producer, consts, depth + 1)
    return False


def onnx_guarded_nodes(model, guardrails: dict[str, bool]) -> dict[str, list[str]]:
    """``{guardrail: [node names]}`` of the ONNX graph for the guardrails that are on."""
    producer, consumers, consts = _onnx_index(model)
    nodes = list(model.graph.node)
    out: dict[str, list[str]] = {}
    for key, types in ONNX_GUARD_TYPES.items():
        if guardrails.get(key):
            out[key] = [n.name for n in nodes if n.op_type in types]
    if guardrails.get("gelu"):  # erf-decomposed GELU: x/√2 → Erf → +1 → ·x → ·0.5 (torch's exporter at opset < 20)
        names = set(out["gelu"])
        for erf in (n for n in nodes if n.op_type == "Erf"):
            div = producer.get(erf.input[0])
            if div is None:
                continue
            names.update({erf.name, div.name})
            x = div.input[0]
            names.update(c.name for c in consumers.get(x, []) if c.op_type in ("Mul", "Div"))
            for add in consumers.get(erf.output[0], []):
                names.add(add.name)
                for mul in consumers.get(add.output[0], []):
                    names.add(mul.name)
                    names.update(m.name for m in consumers.get(mul.output[0], []) if m.op_type == "Mul")
        out["gelu"] = sorted(names)
    if guardrails.get("layernorm"):  # decomposed LayerNorm: the Sub that centres the same input as a ReduceMean
        names = set(out["layernorm"])
        for rm in (n for n in nodes if n.op_type == "ReduceMean"):
            names.update(c.name for c in consumers.get(rm.input[0], []) if c.op_type == "Sub")
        out["layernorm"] = sorted(names)
    if guardrails.get("residual_add"):
        out["residual_add"] = [n.name for n in nodes if n.op_type == "Add" and len(n.input) == 2
                               and not any(_is_const(i, producer, consts) for i in n.input)
                               and not _in_gelu(n, out.get("gelu", []))]
    if guardrails.get("patch_embed"):
        out["patch_embed"] = onnx_patch_embed(model)
    if guardrails.get("head"):
        out["head"] = onnx_head(model)
    return out


def _in_gelu(node, gelu_names: list[str]) -> bool:
    return node.name in gelu_names


def stem_convs(nodes: Iterable[tuple[str, str, list[str], list[str]]], graph_inputs: Iterable[str], *,
               attention: bool) -> list[str]:
    """The convolutions of a model's patch embedding / convolutional stem, found structurally (one rule for ONNX and
    OpenVINO graphs).

    ``nodes``: ``(name, kind, inputs, outputs)`` in topological order, ``kind`` one of ``"conv"``, ``"dense"``
    (MatMul/Gemm), ``"shape"`` (Shape/ShapeOf: output is not an activation) or ``"other"``; ``inputs``/``outputs``
    are tensor ids. ``graph_inputs``: the ids of the model's image input(s). ``attention``: whether the graph has
    attention (Softmax, fused attention or an activation×activation MatMul), i.e. is a transformer.

    - no attention (a CNN): only the first convolution fed by the graph input is the stem — every other
      convolution is the network itself and is quantised;
    - a transformer: the convolutions on the single chain from the input to the first MatMul/Gemm (a ViT's patch
      embedding, or a conv stem of several convs). The chain ends at the first MatMul/Gemm or at the first node that
      joins two activations which went through different numbers of convolutions (a residual or squeeze-excitation
      join: the start of the network's own blocks, e.g. in a hybrid CNN-transformer); joins inside an activation
      function (an erf-decomposed GELU: ``x · (1 + erf(x/√2)) / 2``) do not end it.
    """
    depth = {t: 0 for t in graph_inputs}  # activation tensor → convolutions on the longest path from the input
    convs: list[str] = []
    for name, kind, inputs, outputs in nodes:
        acts = [t for t in inputs if t in depth]
        if not acts:
            continue
        if kind == "dense":
            break
        if kind == "shape":
            continue
        if len({depth[t] for t in acts}) > 1:
            break
        d = depth[acts[0]]
        if kind == "conv":
            convs.append(name)
            if not attention:
                break
            d += 1
        for o in outputs:
            depth[o] = d
    return convs


def onnx_patch_embed(model) -> list[str]:
    """The Conv nodes of the patch embedding / stem (:func:`stem_convs`): in a ViT the convs on the chain from the
    input to the first MatMul/Gemm, in a CNN only the first conv on the input."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]

    def kind(op: str) -> str:
        return ("conv" if op in ONNX_CONV else "dense" if op in ONNX_DENSE else "shape" if op in SHAPE_OPS
                else "other")

    nodes = [(n.name, kind(n.op_type), list(n.input), list(n.output)) for n in model.graph.node]
    attention = any(n.op_type == "Softmax" for n in model.graph.node) or bool(onnx_attention_matmuls(model))
    return stem_convs(nodes, inputs, attention=attention)


def onnx_head(model) -> list[str]:
    """The last MatMul/Gemm in graph order (the classifier head)."""
    last = [n.name for n in model.graph.node if n.op_type in ONNX_DENSE]
    return last[-1:]


def onnx_attention_matmuls(model) -> list[str]:
    """MatMuls whose two inputs are both activations (Q·Kᵀ and attention·V)."""
    producer, _, consts = _onnx_index(model)
    return [n.name for n in model.graph.node if n.op_type == "MatMul"
            and not any(_is_const(i, producer, consts) for i in n.input)]


def onnx_nodes_matching(model, *, types: Iterable[str] = (), names: Iterable[str] = (),
                        patterns: Iterable[str] = ()) -> list[str]:
    types, names = set(types), set(names)
    regs = [re.compile(p) for p in patterns]
    return [n.name for n in model.graph.node
            if n.op_type in types or n.name in names or any(r.search(n.name) for r in regs)]


def strip_qdq_before(model, node_names: Iterable[str]) -> int:
    """Feed the named nodes their float inputs instead of DequantizeLinear(QuantizeLinear(x)); prune orphans.

    Only activation pairs are removed (a DQ of a constant weight stays). Returns how many inputs were rewired.
    """
    wanted = set(node_names)
    producer, _, consts = _onnx_index(model)
    rewired = 0
    for n in model.graph.node:
        if n.name not in wanted:
            continue
        for k, name in enumerate(n.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear" or _is_const(q.input[0], producer, consts):
                continue
            n.input[k] = q.input[0]
            rewired += 1
    prune_dangling(model)
    return rewired


def prune_dangling(model) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads (repeat until stable), then the initializers (scales, zero
    points, quantised weights) that no node, subgraph or graph output reads any more, with their graph-input entries
    (ONNX Runtime warns about every unused initializer when it loads the file)."""
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = _used_names(model.graph) | outputs
    unused = [t for t in model.graph.initializer if t.name not in used]
    for t in unused:
        model.graph.initializer.remove(t)
    names = {t.name for t in unused}
    for i in [i for i in model.graph.input if i.name in names]:
        model.graph.input.remove(i)


def _used_names(g) -> set[str]:
    """Every tensor name read by a node of graph ``g`` or of its subgraphs (If/Loop/Scan bodies)."""
    used = set()
    for n in g.node:
        used.update(n.input)
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                used |= _used_names(sub)
    return used


def onnx_quantized_inputs(model) -> dict[str, tuple[str, list[int]]]:
    """``{node name: (op type, [input indices fed by a DequantizeLinear of an activation])}``."""
    producer, _, consts = _onnx_index(model)
    out = {}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        idx = []
        for k, name in enumerate(n.input):
            dq = producer.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear" and not _is_const(dq.input[0], producer, consts):
                idx.append(k)
        if idx:
            out[n.name] = (n.op_type, idx)
    return out


def onnx_quantized_layers(model) -> list[str]:
    """Names of the weighted / matmul nodes whose activation inputs are quantised (the sensitivity candidates)."""
    return [name for name, (op, _) in onnx_quantized_inputs(model).items() if op in ONNX_WEIGHTED]


def onnx_bypass(model, layer: str):
    """A copy of the QDQ graph with ``layer``'s activation inputs fed in float."""
    import copy

    m = copy.deepcopy(model)
    strip_qdq_before(m, [layer])
    return m


# ------------------------------------------------------------------------------------------------ OpenVINO


def _ov_is_const(output, depth: int = 0) -> bool:
    node = output.get_node()
    t = node.get_type_name()
    if t == "Constant":
        return True
    if depth < 4 and t in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose", "FakeQuantize"):
        return all(_ov_is_const(node.input_value(i), depth + 1) for i in range(node.get_input_size()))
    return False


def ov_guarded_nodes(model, guardrails: dict[str, bool]) -> dict[str, list[str]]:
    """``{guardrail: [friendly names]}`` of an ``ov.Model`` for the guardrails that are on."""
    ops = list(model.get_ordered_ops())
    out: dict[str, list[str]] = {}
    for key, types in OV_GUARD_TYPES.items():
        if guardrails.get(key):
            out[key] = [o.get_friendly_name() for o in ops if o.get_type_name() in types]
    if guardrails.get("residual_add"):
        out["residual_add"] = [o.get_friendly_name() for o in ops if o.get_type_name() == "Add"
                               and not any(_ov_is_const(o.input_value(i)) for i in range(o.get_input_size()))]
    if guardrails.get("patch_embed"):
        out["patch_embed"] = ov_patch_embed(model)
    if guardrails.get("head"):
        out["head"] = ov_head(model)
    return out


def ov_patch_embed(model) -> list[str]:
    """Friendly names of the (Group)Convolutions of the patch embedding / stem (:func:`stem_convs`)."""

    def tid(output) -> str:
        return f"{output.get_node().get_name()}:{output.get_index()}"

    def kind(t: str) -> str:
        return "conv" if t in OV_CONV else "dense" if t in OV_DENSE else "shape" if t in SHAPE_OPS else "other"

    ops = list(model.get_ordered_ops())
    nodes = [(o.get_friendly_name(), kind(o.get_type_name()), [tid(o.input_value(i)) for i in range(o.get_input_size())],
              [f"{o.get_name()}:{k}" for k in range(o.get_output_size())]) for o in ops]
    inputs = [f"{p.get_name()}:0" for p in model.get_parameters()]
    attention = any(o.get_type_name() == "Softmax" for o in ops) or bool(ov_attention_ops(model))
    return stem_convs(nodes, inputs, attention=attention)


def ov_head(model) -> list[str]:
    """The last MatMul in topological order (the classifier head)."""
    last = [o.get_friendly_name() for o in model.get_ordered_ops() if o.get_type_name() in OV_DENSE]
    return last[-1:]


def ov_attention_ops(model) -> list[str]:
    """ScaledDotProductAttention ops and MatMuls with two activation inputs."""
    out = []
    for o in model.get_ordered_ops():
        t = o.get_type_name()
        if t == "ScaledDotProductAttention" or (t == "MatMul" and not any(
                _ov_is_const(o.input_value(i)) for i in range(o.get_input_size()))):
            out.append(o.get_friendly_name())
    return out


def ov_quantized_inputs(model) -> dict[str, tuple[str, list[int]]]:
    """``{friendly name: (op type, [input indices fed by a FakeQuantize of an activation])}``."""
    out = {}
    for o in model.get_ordered_ops():
        if o.get_type_name() in ("FakeQuantize", "Constant", "Convert"):
            continue
        idx = []
        for i in range(o.get_input_size()):
            src = o.input_value(i).get_node()
            if src.get_type_name() == "FakeQuantize" and not _ov_is_const(src.input_value(0)):
                idx.append(i)
        if idx:
            out[o.get_friendly_name()] = (o.get_type_name(), idx)
    return out


def ov_quantized_layers(model) -> list[str]:
    return [name for name, (op, _) in ov_quantized_inputs(model).items()
            if op in (*OV_WEIGHTED, "ScaledDotProductAttention")]


def ov_bypass(model, layer: str):
    """A clone of the quantised ``ov.Model`` with ``layer``'s activation FakeQuantize inputs bypassed."""
    m = model.clone()
    for o in m.get_ordered_ops():
        if o.get_friendly_name() != layer:
            continue
        for i in range(o.get_input_size()):
            src = o.input_value(i).get_node()
            if src.get_type_name() == "FakeQuantize" and not _ov_is_const(src.input_value(0)):
                o.input(i).replace_source_output(src.input_value(0))
    m.validate_nodes_and_infer_types()
    return m
