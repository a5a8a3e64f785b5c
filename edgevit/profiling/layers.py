"""Per-layer profiles mapped back to the model: which block, and which part of it, the time goes to.

A runtime that can profile its nodes has a ``profile_nodes(batch, *, runs, warmup)`` method returning a
:class:`NodeProfile` (ONNX Runtime: its profiler's chrome-trace JSON, ``SessionOptions.enable_profiling``; OpenVINO:
the CPU plugin's performance counters, ``PERF_COUNT``, with the kernel each node ran (``exec_type``) and its
precision; torch: ``torch.profiler`` with a ``record_function`` range per module, opened and closed by module
hooks). :func:`profile_layers` runs it in a separate run from the latency measurement (profilers add overhead)
and :func:`summarize_nodes` maps every runtime node to the source module:

1. the node's own module path where the runtime knows it (torch ranges);
2. else the source graph's node it came from — looked up by the runtime node's name, its output tensors (ONNX
   Runtime keeps them through fusions) and the original layers OpenVINO fused into it (``originalLayersNames``),
   also with suffixes such as ``/WithoutBiases`` stripped — whose module path comes from the file: edgevit's ONNX
   export writes it on every node (``edgevit.module``, :mod:`edgevit.formats.onnx.scopes`), TorchScript exports
   and OpenVINO IRs converted from torch carry it in their names (``/blocks/blocks.0/attn/qkv/MatMul``,
   ``__module.blocks.0.attn.qkv/aten::linear/MatMul``; :func:`scope_from_name`);
3. else, when the source graph records no module paths at all, its position between the LayerNorms
   (:func:`structural_scopes`: in a pre-norm ViT block ``i`` spans norm1 → attention → norm2 → MLP, so a node is
   placed by the last LayerNorm among its ancestors);
4. else the scope of the runtime node's neighbours (a layout reorder or a node the runtime split off takes its
   consumer's, else its producer's).

Whatever is still unplaced is reported as ``unmapped`` with its time and share — never dropped. Each node records
how it was mapped (``mapped_by``).

Groups (:func:`classify_scope`): ``embed`` (patch embedding, class token, position embedding), ``block N`` (parts
``attention``, ``mlp``, ``norm``, ``residual``: adds, layer scale), ``head`` (final norm, pooling, classifier),
``unmapped``. Per group: ms per inference and share of the profiled sum; per profile: the sum, the wall time of the
profiled runs, and the ratio of the sum to the end-to-end median (and fastest run) measured without the profiler.

Times are per inference: per node the median over the profiled runs (a run in which another process took the core
moves no block; OpenVINO's counters are running averages, so there the median over chunks of 10 runs), and a group's time is the sum of its nodes' medians, so groups add up exactly to the profile's
``sum_ms``. The sum leaves out what happens between nodes (scheduling, the runtime's own overhead, waiting for the
core); it is compared with the end-to-end latency measured without the profiler.

:func:`per_layer_table` renders the comparison (one column per runtime/precision), :func:`per_layer_figure` /
:func:`per_layer_png` a stacked bar per runtime by block for reports.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError

log = logging.getLogger(__name__)

GROUP_EMBED, GROUP_HEAD, GROUP_UNMAPPED = "embed", "head", "unmapped"
PARTS = ("attention", "mlp", "norm", "residual")
BOUNDARY_TYPES = ("LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization", "MVN")
# containers whose numbered children are the transformer blocks (timm: blocks / stages.N.blocks; HF: layer)
_BLOCK = re.compile(r"(?:^|\.)(?:blocks|layers|layer|resblocks|block)\.(\d+)(?=\.|$)")
_PARAM = re.compile(r"^(?:p_)?([A-Za-z_]\w*(?:\.\w+)*)\.(?:weight|bias)(?:_\w+)?$")  # a parameter's tensor name
_EMBED_NAMES = ("patch_embed", "stem", "conv_stem", "embeddings", "pos_embed", "cls_token", "reg_token", "pos_drop",
                "patch_drop", "norm_pre", "rope", "dist_token")
_HEAD_NAMES = ("norm", "fc_norm", "head", "head_drop", "pre_logits", "head_norm", "classifier", "global_pool",
               "attn_pool", "head_dist")
_ATTN_WORDS = ("attn", "attention", "self_attn", "token_mixer", "mixer", "mhsa")
_MLP_WORDS = ("mlp", "ffn", "feed_forward", "fc1", "fc2", "channel_mixer", "intermediate", "output")
_NORM_WORDS = ("norm", "ln", "layernorm", "layer_norm")
#: What the sum of per-node times is checked against (the tests, and a warning in :func:`profile_layers`):
#: - ``sum_ms <= profiled_ms * SUM_MAX_OVER_WALL``: the nodes of the profiled runs cannot take longer than those runs
#:   (catches time in the wrong unit, nodes counted twice, running averages read as single runs);
#: - ``sum_ms >= latency_min_ms * SUM_MIN_OF_FASTEST``: the nodes hold most of the work of the fastest end-to-end
#:   run measured without the profiler (catches nodes lost in the trace or the mapping) — unless that end-to-end
#:   measurement's stability verdict (:mod:`edgevit.profiling.stability`) is ``contended``: then every run waited
#:   for a core (seen here: the fastest of 100 runs at 4.6× the nodes' sum) and the record says so instead.
#: On a quiet machine the sum is a little below the whole run (the nodes leave out the runtime's work between them:
#: ONNX Runtime's executor, OpenVINO's input/output handling, Python). On a shared machine both sides move: measured
#: here at load ~15 on 2 cores, sum / fastest end-to-end run was 0.55-2.8 for OpenVINO and 0.8-1.3 for ONNX Runtime,
#: so no tight two-sided tolerance holds there; the verdict on the machine's stability belongs with the numbers.
SUM_MAX_OVER_WALL = 1.05
SUM_MIN_OF_FASTEST = 0.35
METHOD = ("per-node times from the runtime's own profiler (ONNX Runtime enable_profiling, OpenVINO PERF_COUNT, "
          "torch.profiler record_function ranges per module) in a run separate from the latency measurement; per "
          "node the median over the profiled runs (OpenVINO: over chunks of 10 runs, its counters being running "
          "averages); "
          "nodes mapped to source modules by recorded module paths, names, fused-layer lists, the position between "
          "LayerNorms, then neighbours")


# --------------------------------------------------------------------------------------------- records


@dataclass
class GraphNode:
    """A node of the model as stored in the file (the ONNX graph, the OpenVINO IR): its name, op type, input and
    output tensor names, and the torch module path it came from when the file records it (``blocks.0.attn.qkv``;
    ``""`` for an op of the model's own ``forward``; None when unknown)."""

    name: str
    op_type: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    scope: str | None = None


@dataclass
class NodeTiming:
    """One node as the runtime executed it: ``times_ms[r]`` its time in profiled run ``r`` (0 when it did not run),
    the kernel (``exec_type``, OpenVINO's implementation name such as ``brgemm_avx512_amx_bf16``) and precision,
    ``keys`` (names under which the source graph knows it: its own name, output tensors, the original layers fused
    into it), its input/output tensor names in the runtime graph, and ``scope`` when the runtime knows the module."""

    name: str
    op_type: str
    times_ms: np.ndarray
    exec_type: str | None = None
    precision: str | None = None
    keys: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    scope: str | None = None


@dataclass
class NodeProfile:
    """What a runtime's ``profile_nodes`` returns: per-node times of ``runs`` profiled inferences of one batch, the
    wall time of each profiled run (``run_ms``), the source graph to map nodes onto (None for torch, whose nodes are
    modules), the profiler used, and ``info`` (runtime details: precision, providers, threads)."""

    runtime: str
    batch: int
    nodes: list[NodeTiming]
    run_ms: np.ndarray
    source_graph: list[GraphNode] | None = None
    profiler: str = ""
    precision: str | None = None
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ scope names


def scope_from_name(name: str) -> str | None:
    """The module path a node name carries, or None.

    - OpenVINO's torch frontend: ``__module.blocks.0.attn.qkv/aten::linear/MatMul`` → ``blocks.0.attn.qkv``;
      ``aten::add/Add`` (an op of the model's own forward) → ``""``; weights ``self.blocks.0.attn.qkv.weight`` →
      ``blocks.0.attn.qkv``; names NNCF derives from these (``…/fq_output_0``) parse the same;
    - the TorchScript ONNX exporter: ``/blocks/blocks.0/attn/qkv/MatMul`` → ``blocks.0.attn.qkv``;
      ``/Concat`` → ``""``.
    """
    if not name:
        return None
    m = re.search(r"__module\.([^/]*)", name)
    if m:
        return m.group(1)
    if re.match(r"^(?:aten|prim)::", name):
        return ""
    m = re.match(r"^self\.(.+)\.(?:weight|bias|running_mean|running_var)$", name)
    if m:
        return m.group(1)
    if name.startswith("/"):
        comps = [c for c in name.split("/")[1:-1] if c]
        path = ""
        for c in comps:
            last = path.rsplit(".", 1)[-1] if path else ""
            if path and last and c.startswith(last + "."):
                path = path[: len(path) - len(last)] + c  # "blocks" then "blocks.0": the qualified child
            else:
                path = f"{path}.{c}" if path else c
        return path
    return None


def classify_scope(scope: str, *, after_blocks: bool = False) -> tuple[str, str | None, str]:
    """``(group, block path, part)`` of a module path. ``blocks.3.attn.qkv`` → ``("block", "blocks.3",
    "attention")``; ``patch_embed.proj.0`` → ``("embed", None, "embed")``; ``head`` → ``("head", None, "head")``.
    Ops of the model's own forward (``""``) and unknown top-level modules go to ``embed`` before the blocks and to
    ``head`` after them (``after_blocks``)."""
    m = _BLOCK.search(scope)
    if m:
        block = scope[: m.end()]
        rest = scope[m.end():].lstrip(".")
        first = rest.split(".")[0] if rest else ""
        words = rest.lower().split(".")
        if first in _ATTN_WORDS or any(w in _ATTN_WORDS for w in words):
            part = "attention"
        elif first in _MLP_WORDS or any(w in ("mlp", "ffn", "feed_forward", "channel_mixer") for w in words):
            part = "mlp"
        elif first.lower() in _NORM_WORDS or re.fullmatch(r"(?:norm|ln)_?\d*", first.lower() or "-"):
            part = "norm"
        else:
            part = "residual"
        return "block", block, part
    top = scope.split(".")[0] if scope else ""
    if top in _EMBED_NAMES:
        return GROUP_EMBED, None, GROUP_EMBED
    if top in _HEAD_NAMES:
        return GROUP_HEAD, None, GROUP_HEAD
    return (GROUP_HEAD, None, GROUP_HEAD) if after_blocks else (GROUP_EMBED, None, GROUP_EMBED)


# ------------------------------------------------------------------------------------- source-graph scopes


def _is_boundary(node: GraphNode, consumers: Mapping[str, list[GraphNode]]) -> bool:
    if node.op_type in BOUNDARY_TYPES:
        return True
    if node.op_type == "ReduceMean":  # a decomposed LayerNorm starts with mean(x) feeding x − mean(x)
        ins = set(node.inputs)
        return any(c.op_type in ("Sub", "Subtract") and ins & set(c.inputs)
                   for o in node.outputs for c in consumers.get(o, []))
    return False


def structural_scopes(graph: Sequence[GraphNode]) -> dict[str, str]:
    """Module paths from the graph's structure alone, for files that record none: the LayerNorms in graph order
    split a pre-norm ViT into ``blocks.i.norm1`` → ``blocks.i.attn`` → ``blocks.i.norm2`` → ``blocks.i.mlp``, with a
    final LayerNorm (an odd count) as ``norm`` (head). Each node takes the place of the last LayerNorm among its
    ancestors (itself included); nodes with none before them are ``patch_embed``. Returns ``{}`` when the graph has
    fewer than two LayerNorms (not a transformer this rule understands)."""
    consumers: dict[str, list[GraphNode]] = {}
    for n in graph:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)
    boundaries = [n.name for n in graph if _is_boundary(n, consumers)]
    if len(boundaries) < 2:
        return {}
    index = {name: k for k, name in enumerate(boundaries)}
    n_blocks = len(boundaries) // 2
    last: dict[str, int] = {}  # tensor → last boundary index among its producer's ancestors
    out: dict[str, str] = {}
    for n in graph:  # graph order is topological
        k = max([last.get(i, -1) for i in n.inputs] + [index.get(n.name, -1)])
        for o in n.outputs:
            last[o] = k
        if k < 0:
            out[n.name] = "patch_embed"
        elif k >= 2 * n_blocks:
            out[n.name] = "norm"
        else:
            block, second = divmod(k, 2)
            if n.name in index:
                out[n.name] = f"blocks.{block}.norm{second + 1}"
            else:
                out[n.name] = f"blocks.{block}.{'mlp' if second else 'attn'}"
    return out


def source_scopes(graph: Sequence[GraphNode]) -> tuple[dict[str, tuple[str, str]], dict[str, bool]]:
    """``({node name or output tensor: (module path, how)}, {node name: after the blocks})`` for a source graph.
    ``how``: ``metadata`` (recorded in the file), ``name`` (parsed from the node name), ``structure``
    (:func:`structural_scopes`, used when the file records no module path for any node that does work), or
    ``neighbour`` (a node without one — one a quantiser inserted — takes the scope of the node it feeds, else of
    its producer)."""
    scopes: dict[str, tuple[str, str]] = {}
    for n in graph:
        if n.scope is not None:
            scopes[n.name] = (n.scope, "metadata")
        else:
            s = scope_from_name(n.name)
            if s is not None:
                scopes[n.name] = (s, "name")
    recorded = [n for n in graph if n.name in scopes and scopes[n.name][0]]
    if not recorded:  # nothing but root-level names: place nodes by structure
        for name, s in structural_scopes(graph).items():
            scopes[name] = (s, "structure")
    known = dict(scopes)
    for n in graph:
        if n.name in scopes:
            for o in n.outputs:
                known.setdefault(o, scopes[n.name])
    for n in graph:  # a node a tool added next to a known node or tensor, named after it (quantisers)
        if n.name not in scopes:
            hit = next((known[k] for k in _strip_variants(n.name) if k != n.name and k in known), None)
            if hit is None:  # else the module whose parameter it reads: blocks.0.attn.qkv.weight_quantized
                hit = next(((m.group(1), "name") for i in n.inputs if (m := _PARAM.match(i))), None)
            if hit is not None:
                scopes[n.name] = (hit[0], "name")
    consumers: dict[str, list[str]] = {}
    for n in graph:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n.name)
    for n in reversed(graph):  # a node a tool inserted (a quantised MatMul, a scale) works for the op it feeds
        if n.name not in scopes:
            src = next((scopes[c] for o in n.outputs for c in consumers.get(o, []) if c in scopes), None)
            if src is not None:
                scopes[n.name] = (src[0], "neighbour")
    by_tensor: dict[str, tuple[str, str]] = {}
    for n in graph:  # the rest (nothing after them has a scope) from their producers (topological order)
        if n.name not in scopes:
            src = next((by_tensor[i] for i in n.inputs if i in by_tensor), None)
            if src is not None:
                scopes[n.name] = (src[0], "neighbour")
        if n.name in scopes:
            for o in n.outputs:
                by_tensor[o] = scopes[n.name]
    # after the blocks: some ancestor lies in a block (for the model's own ops: cls concat vs the token select)
    after: dict[str, bool] = {}
    tensor_after: dict[str, bool] = {}
    for n in graph:
        s = scopes.get(n.name)
        in_block = s is not None and _BLOCK.search(s[0]) is not None
        a = any(tensor_after.get(i, False) for i in n.inputs) or in_block
        after[n.name] = a and not in_block
        for o in n.outputs:
            tensor_after[o] = a
    table = dict(scopes)
    for n in graph:
        if n.name in scopes:
            for o in n.outputs:
                table.setdefault(o, scopes[n.name])
    return table, after


def _strip_variants(key: str) -> Iterable[str]:
    """``key`` and the names a runtime derives from it: ``node_Conv_9/WithoutBiases`` → ``node_Conv_9``; ORT's
    ``node_Slice_71/GatherSliceToSplitFusion`` → ``node_Slice_71``; ``getitem_nchwc`` → ``getitem``."""
    yield key
    k = key
    while "/" in k:
        k = k.rsplit("/", 1)[0]
        yield k
    for suffix in ("_nchwc", "_kernel_time", "_output_0"):
        if key.endswith(suffix):
            yield key[: -len(suffix)]
    # ONNX Runtime's quantiser names what it adds after the node or tensor it rewrote: node_linear_quant,
    # node_Conv_9_quant_scales_mul, gelu_QuantizeLinear, getitem_output_quantized_cast, getitem_bias_add
    m = re.match(r"^(.+?)(?:_quant(?:_\w+)?|_QuantizeLinear|_DequantizeLinear|_output_quantized_cast|_bias_add)$",
                 key)
    if m:
        yield m.group(1)


# ------------------------------------------------------------------------------------------- mapping


def map_nodes(profile: NodeProfile) -> list[dict]:
    """One dict per runtime node: ``name``, ``op_type``, ``exec_type``, ``precision``, ``module`` (path or None),
    ``group``, ``block`` (path), ``part``, ``mapped_by`` (``runtime`` / ``metadata`` / ``name`` / ``structure`` /
    ``neighbour`` / ``runtime-neighbour`` / None) — times are added by :func:`summarize_nodes`."""
    table: dict[str, tuple[str, str]] = {}
    after: dict[str, bool] = {}
    if profile.source_graph is not None:
        table, after = source_scopes(profile.source_graph)
    rows = []
    for n in profile.nodes:
        scope, how, src_after = None, None, False
        if n.scope is not None:
            scope, how = n.scope, "runtime"
        else:
            found: list[tuple[str, str, bool]] = []
            for key in (n.name, *n.keys):
                for k in _strip_variants(key):
                    if k in table:
                        found.append((*table[k], after.get(k, False)))
                        break
            if found:
                # a fused node: the module most of its original layers come from (the first on a tie)
                counts: dict[str, int] = {}
                for s, _, _ in found:
                    counts[s] = counts.get(s, 0) + 1
                best = max(counts.values())
                scope, how, src_after = next(f for f in found if counts[f[0]] == best)
        rows.append({"name": n.name, "op_type": n.op_type, "exec_type": n.exec_type, "precision": n.precision,
                     "module": scope, "mapped_by": how, "_after": src_after})
    _fill_from_neighbours(profile.nodes, rows)
    for r in rows:
        after_blocks = r.pop("_after")
        if r["module"] is None:
            r.update(group=GROUP_UNMAPPED, block=None, part=GROUP_UNMAPPED)
        else:
            group, block, part = classify_scope(r["module"], after_blocks=after_blocks)
            r.update(group=group, block=block, part=part)
    _order_blocks(rows)
    return rows


def _fill_from_neighbours(nodes: Sequence[NodeTiming], rows: list[dict]) -> None:
    """A runtime node still without a module (a layout reorder, a node the runtime created) takes one from its
    neighbours in the runtime graph: a module path shared by producer and consumer, else the consumer's (a reorder or a
    LayerNorm's statistics node prepares the next kernel's input) unless that is the model's own forward (``""``),
    else the producer's. Nodes with no placed neighbour stay unmapped."""
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    for k, n in enumerate(nodes):
        for o in n.outputs:
            producer[o] = k
        for i in n.inputs:
            consumers.setdefault(i, []).append(k)
    for _ in range(6):
        changed = False
        for k, n in enumerate(nodes):
            if rows[k]["module"] is not None:
                continue
            ups = [producer[i] for i in n.inputs if i in producer and rows[producer[i]]["module"] is not None]
            downs = [c for o in n.outputs for c in consumers.get(o, []) if rows[c]["module"] is not None]
            up = rows[ups[0]] if ups else None
            down = rows[downs[0]] if downs else None
            # a node the runtime made (a reorder, a LayerNorm's statistics) prepares the next kernel's input: the
            # consumer's module, unless that is the model's own forward ("") and the producer's is a real module
            if down is not None and not (down["module"] == "" and up is not None and up["module"]):
                src = down
            else:
                src = up
            if src is not None:
                rows[k]["module"], rows[k]["mapped_by"], rows[k]["_after"] = src["module"], "runtime-neighbour", \
                    src["_after"]
                changed = True
        if not changed:
            break


def _order_blocks(rows: list[dict]) -> None:
    """Number the blocks 0..N-1 in order of first appearance and name their group ``block N``."""
    order: dict[str, int] = {}
    for r in rows:
        if r["block"] is not None and r["block"] not in order:
            order[r["block"]] = len(order)
    # sort by the numbers in the path so stage 1 block 10 follows stage 1 block 9
    keyed = sorted(order, key=lambda b: [int(x) for x in re.findall(r"\d+", b)])
    index = {b: k for k, b in enumerate(keyed)}
    for r in rows:
        if r["block"] is not None:
            r["block_index"] = index[r["block"]]
            r["group"] = f"block {index[r['block']]}"
        else:
            r["block_index"] = None


def profiled_modules(names: Sequence[str]) -> list[str]:
    """The module paths a torch per-layer profile puts a range on: every block and, inside it, each module where the
    part changes (its attention, MLP, norms: ``blocks.0.attn``, not ``blocks.0.attn.qkv``), plus the top-level
    modules outside the blocks that are not containers of blocks (``patch_embed``, ``norm``, ``head``). Modules
    without parameters or children that sit at a part boundary (dropouts, identities) are included too: they cost
    what they cost."""
    blocks = {classify_scope(n)[1] for n in names} - {None}
    containers = {b.rsplit(".", 1)[0] for b in blocks}
    containers |= {".".join(c.split(".")[:k]) for c in containers for k in range(1, c.count(".") + 1)}
    out = []
    for n in names:
        if n in containers:
            continue
        _, block, part = classify_scope(n)
        parent = n.rsplit(".", 1)[0] if "." in n else ""
        if block is not None:
            if n == block or parent == block or classify_scope(parent)[2] != part:
                out.append(n)
        elif parent == "" or parent in containers:
            out.append(n)
    return out


def nested_exclusive(ranges: Sequence[tuple[str, float, float]], runs: int) -> dict[str, np.ndarray]:
    """Exclusive time per range name and run from ``(name, start, end)`` ranges (µs) of one thread, where the runs
    are ranges named ``run0``, ``run1``… and other ranges nest inside them: a range's time is its length minus the
    ranges directly inside it; a run's exclusive time is reported under ``""``. Returns ``{name: ms per run}``."""
    out: dict[str, np.ndarray] = {}
    ordered = sorted(ranges, key=lambda r: (r[1], -r[2]))
    stack: list[list] = []  # [name, start, end, child time]
    run_index = -1

    def close(item) -> None:
        name, start, end, child = item
        key = "" if re.fullmatch(r"run\d+", name) else name
        if 0 <= run_index < runs:
            out.setdefault(key, np.zeros(runs))[run_index] += (end - start - child) / 1e3
        if stack:
            stack[-1][3] += end - start

    for name, start, end in ordered:
        while stack and stack[-1][2] <= start:
            close(stack.pop())
        if re.fullmatch(r"run\d+", name):
            while stack:
                close(stack.pop())
            run_index = int(name[3:])
        stack.append([name, start, end, 0.0])
    while stack:
        close(stack.pop())
    return out


def summarize_nodes(profile: NodeProfile, *, latency_ms: float | None = None, latency_min_ms: float | None = None,
                    variant: str | None = None, top_nodes: int | None = None) -> dict:
    """The JSON record of one per-layer profile.

    Keys: ``variant`` (``openvino bf16``…), ``runtime``, ``precision``, ``batch``, ``profiler``, ``runs``
    (profiled), ``sum_ms`` (sum over nodes of each node's median time per inference), ``profiled_ms`` /
    ``profiled_min_ms`` (median / fastest wall time of the profiled runs, profiler on), ``latency_ms`` /
    ``latency_min_ms`` (the end-to-end median / fastest run measured without the profiler, when given),
    ``sum_vs_latency`` (``sum_ms / latency_ms``) and ``sum_vs_fastest`` (``sum_ms / latency_min_ms``: on a shared
    machine the median wall time carries the waits for other processes, which per-node medians leave out),
    ``unmapped_ms`` / ``unmapped_share``, ``mapping`` (node count per ``mapped_by``), ``groups`` (one per embed /
    block N / head / unmapped: ``ms``, ``share`` of ``sum_ms``, ``parts`` ms per attention/mlp/norm/residual,
    ``nodes``), ``nodes`` (every node that ran, with its time, kernel, precision, module and group; the
    ``top_nodes`` slowest only when given) and ``info``.
    """
    rows = map_nodes(profile)
    n_runs = len(profile.run_ms)
    times = np.stack([np.asarray(n.times_ms, dtype=np.float64) for n in profile.nodes]) if profile.nodes \
        else np.zeros((0, n_runs))
    mean = np.median(times, axis=1) if times.size else np.zeros(0)  # per node: robust to a preempted run
    sum_ms = float(mean.sum())
    wall = np.asarray(profile.run_ms, dtype=np.float64)
    profiled_ms = float(np.median(wall)) if n_runs else None
    profiled_min_ms = float(wall.min()) if n_runs else None
    for r, ms in zip(rows, mean, strict=True):
        r["ms"] = float(ms)
    # nodes that never ran (OpenVINO's not-executed reshapes) only connected the graph for the mapping
    rows = [r for r, n in zip(rows, profile.nodes, strict=True) if np.any(np.asarray(n.times_ms) > 0)]
    groups: dict[str, dict] = {}
    for r in rows:
        g = groups.setdefault(r["group"], {"group": r["group"], "block": r["block_index"], "module": r["block"],
                                           "ms": 0.0, "parts": {}, "nodes": 0})
        g["ms"] += r["ms"]
        g["nodes"] += 1
        if r["block"] is not None:
            g["parts"][r["part"]] = g["parts"].get(r["part"], 0.0) + r["ms"]
    ordered = sorted(groups.values(), key=_group_order)
    for g in ordered:
        g["share"] = g["ms"] / sum_ms if sum_ms > 0 else 0.0
    unmapped = groups.get(GROUP_UNMAPPED, {"ms": 0.0})["ms"]
    mapping: dict[str, int] = {}
    for r in rows:
        key = r["mapped_by"] or "unmapped"
        mapping[key] = mapping.get(key, 0) + 1
    nodes = sorted(rows, key=lambda r: -r["ms"]) if top_nodes else rows
    precision = profile.precision
    return {
        "variant": variant or " ".join(v for v in (profile.runtime, precision) if v),
        "runtime": profile.runtime, "precision": precision, "batch": profile.batch, "profiler": profile.profiler,
        "runs": n_runs, "sum_ms": sum_ms, "profiled_ms": profiled_ms, "profiled_min_ms": profiled_min_ms,
        "latency_ms": latency_ms, "latency_min_ms": latency_min_ms,
        "sum_vs_latency": sum_ms / latency_ms if latency_ms else None,
        "sum_vs_fastest": sum_ms / latency_min_ms if latency_min_ms else None,
        "unmapped_ms": unmapped, "unmapped_share": unmapped / sum_ms if sum_ms > 0 else 0.0,
        "blocks": sum(1 for g in ordered if g["block"] is not None),
        "mapping": mapping, "groups": ordered,
        "nodes": nodes[:top_nodes] if top_nodes else nodes,
        "info": dict(profile.info), "method": METHOD,
    }


def _group_order(g: Mapping[str, Any]) -> tuple:
    if g["group"] == GROUP_EMBED:
        return (0, 0)
    if g["block"] is not None:
        return (1, g["block"])
    if g["group"] == GROUP_HEAD:
        return (2, 0)
    return (3, 0)


def profile_layers(runtime: Any, x: np.ndarray, *, runs: int = 30, warmup: int = 5, latency_ms: float | None = None,
                   latency_min_ms: float | None = None, latency_stability: str | None = None,
                   variant: str | None = None) -> dict:
    """Per-layer profile of ``runtime`` on the NCHW batch ``x``: ``runtime.profile_nodes(x, runs=, warmup=)``
    then :func:`summarize_nodes`. ``latency_ms``: the end-to-end median of the same runtime and batch measured
    without the profiler (:func:`~edgevit.profiling.latency.profile_runtime`), ``latency_min_ms`` its fastest
    run, to compare the sum with, and ``latency_stability`` that row's stability verdict (recorded; a ``contended``
    end-to-end measurement is not held against the sum, see :data:`SUM_MIN_OF_FASTEST`).

    Raises :class:`ConfigError` when the runtime has no per-layer profiler (ONNX Runtime, OpenVINO and torch
    have one) or ``runs`` < 1."""
    if runs < 1 or warmup < 0:
        raise ConfigError(f"per-layer profiling needs runs ≥ 1 and warmup ≥ 0, got runs={runs}, warmup={warmup}")
    fn = getattr(runtime, "profile_nodes", None)
    if fn is None:
        raise ConfigError(f"the {getattr(runtime, 'name', 'this')} runtime has no per-layer profiler; per-layer "
                          f"profiles are available on onnxruntime, openvino and torch")
    profile = fn(np.ascontiguousarray(x), runs=runs, warmup=warmup)
    out = summarize_nodes(profile, latency_ms=latency_ms, latency_min_ms=latency_min_ms, variant=variant)
    out["latency_stability"] = latency_stability
    if out["profiled_ms"] and out["sum_ms"] > out["profiled_ms"] * SUM_MAX_OVER_WALL:
        log.warning("per-layer %s: the nodes sum to %.3f ms, more than the profiled runs took (%.3f ms): the "
                    "runtime's counters are not per-run times", out["variant"], out["sum_ms"], out["profiled_ms"])
    if latency_min_ms and latency_stability != "contended" and out["sum_ms"] < latency_min_ms * SUM_MIN_OF_FASTEST:
        log.warning("per-layer %s: the nodes sum to %.3f ms, under %.0f%% of the fastest end-to-end run (%.3f ms): "
                    "the profile misses work", out["variant"], out["sum_ms"], SUM_MIN_OF_FASTEST * 100,
                    latency_min_ms)
    log.info("per-layer %s batch %d: sum %.3f ms over %d nodes, %d blocks, unmapped %.1f%%", out["variant"],
             out["batch"], out["sum_ms"], len(out["nodes"]), out["blocks"], out["unmapped_share"] * 100)
    return out


# ---------------------------------------------------------------------------------------- table, rows, plot


def per_layer_rows(profiles: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Flat JSON rows, one per profile × group: ``variant``, ``runtime``, ``precision``, ``batch``, ``group``,
    ``block`` (index or None), ``ms``, ``share``, and ``attention_ms`` / ``mlp_ms`` / ``norm_ms`` / ``residual_ms``
    for blocks."""
    rows = []
    for p in profiles:
        for g in p["groups"]:
            row = {"variant": p["variant"], "runtime": p["runtime"], "precision": p["precision"], "batch": p["batch"],
                   "group": g["group"], "block": g["block"], "ms": g["ms"], "share": g["share"]}
            if g["block"] is not None:
                row.update({f"{part}_ms": g["parts"].get(part, 0.0) for part in PARTS})
            rows.append(row)
    return rows


def per_layer_table(profiles: Sequence[Mapping[str, Any]], *, batch: int | None = None) -> str:
    """A Markdown table comparing the profiles of one batch size block by block: one row per group (embed, block
    0..N-1, head, unmapped) with ms per inference and share of that profile's sum per variant, then the sum, the
    end-to-end latency measured without the profiler, and their ratio."""
    from .tables import format_value, markdown_table

    ps = [p for p in profiles if batch is None or p["batch"] == batch]
    if not ps:
        raise ConfigError(f"no per-layer profile at batch {batch}")
    names = _unique_names(ps)
    groups: list[tuple[tuple, str]] = []
    for p in ps:
        for g in p["groups"]:
            key = (_group_order(g), g["group"])
            if key not in groups:
                groups.append(key)
    groups.sort()
    rows = []
    for _, gname in groups:
        row: dict[str, Any] = {"group": gname}
        for p, name in zip(ps, names, strict=True):
            g = next((g for g in p["groups"] if g["group"] == gname), None)
            row[name] = f"{format_value(g['ms'])} ({g['share'] * 100:.1f}%)" if g else "—"
        rows.append(row)
    rows.append({"group": "sum of nodes", **{n: format_value(p["sum_ms"]) for p, n in zip(ps, names, strict=True)}})
    rows.append({"group": "profiled run (wall)",
                 **{n: format_value(p["profiled_ms"]) for p, n in zip(ps, names, strict=True)}})
    rows.append({"group": "end-to-end median", **{n: format_value(p["latency_ms"]) for p, n in zip(ps, names,
                                                                                                 strict=True)}})
    rows.append({"group": "sum / end-to-end", **{n: (f"{p['sum_vs_latency']:.2f}" if p["sum_vs_latency"] else "—")
                                                  for p, n in zip(ps, names, strict=True)}})
    rows.append({"group": "end-to-end stability", **{n: p.get("latency_stability") or "—"
                                                      for p, n in zip(ps, names, strict=True)}})
    rows.append({"group": "sum / fastest run", **{n: (f"{p['sum_vs_fastest']:.2f}" if p.get("sum_vs_fastest") else "—")
                                                   for p, n in zip(ps, names, strict=True)}})
    return markdown_table(rows, [("group", f"batch {ps[0]['batch']}: ms (share)"), *names])


def _unique_names(ps: Sequence[Mapping[str, Any]]) -> list[str]:
    names, seen = [], {}
    for p in ps:
        n = p["variant"]
        seen[n] = seen.get(n, 0) + 1
        names.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return names


def per_layer_figure(profiles: Sequence[Mapping[str, Any]], *, title: str | None = None):
    """A matplotlib ``Figure``: per batch size one panel, per variant (runtime/precision) one stacked bar of ms per
    inference by group — embed, block 0..N-1 (a sequential colour map, so the same block has the same colour in
    every bar), head, unmapped (grey, hatched) — with the end-to-end median measured without the profiler as a black
    tick. Raises :class:`ImportError` naming the pip package when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("per-layer plots need matplotlib: pip install matplotlib") from exc
    if not profiles:
        raise ConfigError("per_layer_figure: no profiles to plot")
    batches = sorted({p["batch"] for p in profiles})
    n_blocks = max((g["block"] for p in profiles for g in p["groups"] if g["block"] is not None), default=-1) + 1
    cmap = plt.get_cmap("viridis")
    colours = {GROUP_EMBED: "#d62728", GROUP_HEAD: "#ff7f0e", GROUP_UNMAPPED: "#b0b0b0"}
    for b in range(n_blocks):
        colours[f"block {b}"] = cmap(0.1 + 0.8 * b / max(1, n_blocks - 1))
    width = max(4.5, 1.1 * max(sum(1 for p in profiles if p["batch"] == b) for b in batches) + 2.5)
    fig, axes = plt.subplots(1, len(batches), figsize=(width * len(batches), 4.6), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        ps = [p for p in profiles if p["batch"] == batch]
        names = _unique_names(ps)
        for x, p in enumerate(ps):
            bottom = 0.0
            for g in p["groups"]:
                ax.bar(x, g["ms"], bottom=bottom, color=colours.get(g["group"], "#888888"), width=0.7,
                       edgecolor="white", linewidth=0.3, hatch="//" if g["group"] == GROUP_UNMAPPED else None)
                bottom += g["ms"]
            if p.get("latency_ms"):
                ax.plot([x - 0.42, x + 0.42], [p["latency_ms"]] * 2, color="black", linewidth=1.5)
        ax.set_xticks(range(len(ps)), names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("ms per inference")
        ax.set_title(f"batch {batch}", fontsize=10)
    handles = [matplotlib.patches.Patch(color=colours[GROUP_EMBED], label="embed")]
    if n_blocks:
        handles.append(matplotlib.patches.Patch(color=colours["block 0"], label="block 0"))
        if n_blocks > 1:
            handles.append(matplotlib.patches.Patch(color=colours[f"block {n_blocks - 1}"],
                                                    label=f"block {n_blocks - 1}"))
    handles += [matplotlib.patches.Patch(color=colours[GROUP_HEAD], label="head"),
                matplotlib.patches.Patch(facecolor=colours[GROUP_UNMAPPED], hatch="//", label="unmapped"),
                matplotlib.lines.Line2D([], [], color="black", label="end-to-end median")]
    fig.legend(handles=handles, loc="upper right", fontsize=7, frameon=False)
    fig.suptitle(title or "time per block (per-layer profile)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.86, 0.95))
    return fig


def per_layer_png(profiles: Sequence[Mapping[str, Any]], *, title: str | None = None, dpi: int = 110) -> bytes:
    """:func:`per_layer_figure` as PNG bytes (for ``<img src="data:image/png;base64,...">`` in report.html)."""
    import matplotlib.pyplot as plt

    fig = per_layer_figure(profiles, title=title)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()


def host_bf16() -> tuple[bool, str]:
    """``(True, which ISA)`` when this CPU computes bf16 natively (AMX-BF16, AVX512_BF16, Arm BF16), read from the
    detected host (:func:`edgevit.profiling.host.detect_cpu`); else ``(False, why)``. Decides whether a per-layer
    comparison adds an OpenVINO bf16 column."""
    from .host import detect_cpu

    flags = detect_cpu().flags
    for flag, label in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512_BF16"), ("bf16", "BF16")):
        if flag in flags:
            return True, label
    return False, "no AMX-BF16 / AVX512_BF16 / BF16 flag in /proc/cpuinfo"


def per_layer_record(profiles: Sequence[Mapping[str, Any]]) -> dict:
    """The ``per_layer`` section of a profile JSON: ``method``, ``profiles`` (the :func:`summarize_nodes` records)
    and ``rows`` (:func:`per_layer_rows`)."""
    return {"method": METHOD, "profiles": list(profiles), "rows": per_layer_rows(profiles)}

