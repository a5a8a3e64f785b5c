"""Which torch module each ONNX node came from, kept in the exported file for per-layer profiles.

torch's ``torch.export``-based exporter writes, on every node, ``metadata_props["pkg.torch.onnx.name_scopes"]``:
the chain of module paths down to the node (``['', 'blocks', 'blocks.0', 'blocks.0.attn', 'blocks.0.attn.qkv',
'linear']``). onnxslim drops node metadata when it rewrites the graph, and the exporter's own node names
(``node_MatMul_51``) say nothing of the module. :func:`export_onnx` therefore reads the scopes before simplifying
and writes the deepest module path (``blocks.0.attn.qkv``; ``""`` for an op of the model's own ``forward``) on every
node of the final file as ``metadata_props["edgevit.module"]`` (:data:`SCOPE_KEY`) — matched by node name, else by
output tensor name, else inherited from the node's producers (a node onnxslim created from several). The TorchScript
exporter names nodes by module path (``/blocks/blocks.0/attn/qkv/MatMul``), which is parsed the same way.

:func:`graph_nodes` turns an ONNX file into the runtime-neutral node list that
:mod:`edgevit.profiling.layers` maps runtime profiles onto.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

from ...profiling.layers import GraphNode, scope_from_name

log = logging.getLogger(__name__)

SCOPE_KEY = "edgevit.module"  # node metadata: the torch module path the node came from ("blocks.3.attn.qkv")
TORCH_SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # written by torch's dynamo exporter (a Python list literal)


def node_scope(node: Any) -> str | None:
    """The module path of one ``NodeProto``: :data:`SCOPE_KEY`, else the dynamo exporter's name scopes, else a
    TorchScript-style node name; None when none of them says."""
    props = {p.key: p.value for p in node.metadata_props}
    if SCOPE_KEY in props:
        return props[SCOPE_KEY]
    raw = props.get(TORCH_SCOPES_KEY)
    if raw:
        try:
            scopes = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            scopes = None
        if isinstance(scopes, list) and scopes:
            # [module paths from the root ..., the FX node's own name]: the deepest module is the one before last
            return str(scopes[-2]) if len(scopes) >= 2 else ""
    return scope_from_name(node.name)


def collect_scopes(proto: Any) -> dict[str, str]:
    """``{node name or output tensor name: module path}`` for every node of ``proto`` whose scope is known."""
    out: dict[str, str] = {}
    for n in proto.graph.node:
        s = node_scope(n)
        if s is None:
            continue
        out.setdefault(n.name, s)
        for o in n.output:
            out.setdefault(o, s)
    return out


def stamp_scopes(proto: Any, scopes: dict[str, str]) -> int:
    """Write :data:`SCOPE_KEY` on every node of ``proto`` from ``scopes`` (:func:`collect_scopes` of the graph
    before it was rewritten): by node name, else by an output tensor's name, else the scope of the first producer
    that has one. Other node metadata is kept. Returns how many nodes were left without a scope."""
    producer_scope: dict[str, str] = {}
    missing = 0
    for n in proto.graph.node:  # graph order is topological: producers come first
        s = scopes.get(n.name)
        if s is None:
            s = next((scopes[o] for o in n.output if o in scopes), None)
        if s is None:
            s = next((producer_scope[i] for i in n.input if i in producer_scope), None)
        if s is None:
            missing += 1
            continue
        for o in n.output:
            producer_scope[o] = s
        keep = [(p.key, p.value) for p in n.metadata_props if p.key != SCOPE_KEY]
        del n.metadata_props[:]
        for k, v in [*keep, (SCOPE_KEY, s)]:
            entry = n.metadata_props.add()
            entry.key, entry.value = k, v
    if missing:
        log.debug("%d ONNX nodes have no module scope", missing)
    return missing


def graph_nodes(model: str | Path | Any) -> list[GraphNode]:
    """The nodes of an ONNX file (or ``ModelProto``) in graph order, with their module path where the file records
    it (:func:`node_scope`). Nodes inside subgraphs (If/Loop bodies) are not listed."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False) if isinstance(model, (str, Path)) else model
    return [GraphNode(name=n.name, op_type=n.op_type, inputs=tuple(i for i in n.input if i),
                      outputs=tuple(n.output), scope=node_scope(n)) for n in proto.graph.node]
