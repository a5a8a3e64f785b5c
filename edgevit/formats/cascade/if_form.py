"""The optional second export form of an early-exit cascade: ONE ONNX graph with nested ``If`` nodes.

The segment cascade (``manifest.json`` + one graph per segment and head, :mod:`edgevit.formats.cascade.export`) runs on
every runtime with per-sample exits, but pays one runtime call per graph. :func:`build_if_graph` composes those
same ONNX graphs into a single model::

    t0 = segment_0(image); z1 = exit_1(t0)
    if score(z1) fires:  logits = z1
    else:                t1 = segment_1(t0); z2 = exit_2(t1)
                         if score(z2) fires: logits = z2
                         else: ... logits = segment_K(t_{K-1})

so one ``InferenceSession`` (one thread pool, onnxruntime's or OpenVINO's) runs the whole cascade and only the
taken branch executes. The thresholds are constants of the graph (rebuild it to change them; it takes well under
a second, no torch). Heads whose threshold never fires are left out. The decision is the cascade runtime's
(``max softmax > τ``, or normalised entropy ``< τ``), computed in float32 inside the graph.

It is a **batch-1 form**: an ``If`` takes one branch for the whole batch, so the graph declares its input as
``[1, C, H, W]`` (and edgevit's runtimes treat a file stamped ``edgevit.early_exit_form=if`` as batch 1 even when an
older export left the batch dynamic): every loop over data (eval, parity, profile) then runs it one image at a time
through :func:`edgevit.runtimes.run_batched`, and ``profile --batch 8`` is refused. Use the segment cascade for
batches. Output 0 is the logits ``[1, classes]`` (what every ONNX consumer reads: onnxruntime, OpenVINO, the C++
examples); output 1, ``edgevit_exit`` (int64 ``[1]``), is the exit taken (0-based, the number of exits = the final
head), read by the onnxruntime runtime to report the exit mix.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...results import ExportResult, ParityRecord
from .spec import IF_EXIT_OUTPUT, IF_FORM_KEY
from .thresholds import active_heads, check_thresholds

log = logging.getLogger(__name__)

FORM_KEY, EXIT_OUTPUT = IF_FORM_KEY, IF_EXIT_OUTPUT


def build_if_graph(manifest: str | Path, out_path: str | Path, *, thresholds: Any = None,
                   criterion: str | None = None, parity: bool = True, parity_images: Any = None,
                   parity_samples: int = 64) -> ExportResult:
    """Compose the ONNX cascade at ``manifest`` into one ``If`` graph at ``out_path``.

    ``thresholds``/``criterion`` default to the manifest's. With ``parity`` the If graph (onnxruntime) is compared
    image by image with the segment cascade at the same thresholds on ``parity_images`` (real images: raw uint8,
    preprocessed float32 or an ArrayDataset; required, :class:`~edgevit.errors.ExportError` without them;
    ``parity_samples`` is unused and kept for callers) and :class:`~edgevit.errors.ParityError` is raised when they
    disagree. Raises :class:`ConfigError` for an OpenVINO-IR cascade (compose from the ONNX export) or bad thresholds.

    Returns an :class:`~edgevit.results.ExportResult`: its artefact is the ``onnx`` artefact of the If graph, its
    parity the If graph vs the segment cascade (``extra``: ``inputs``, ``exits_share``; None without ``parity``).
    ``to_dict()`` is the JSON record: ``path``, ``thresholds``, ``criterion``, ``active_exits``, ``opset``,
    ``file_size``, ``source_manifest``, ``parity_vs_cascade`` (the parity record) and the parity summary keys.
    """
    import time

    t0 = time.perf_counter()
    import onnx
    from onnx import TensorProto, compose, helper

    from ...spec import InputSpec
    from ..onnx.export import stamp_metadata
    from .runtime import read_manifest

    m = read_manifest(manifest)
    if m.get("backend") != "onnx":
        raise ConfigError(f"the If form is composed from an ONNX cascade; {m['_dir']} holds an {m.get('backend')} "
                          f"one (export it with `edgevit early-exit export --format onnx`)")
    crit = criterion or m["criterion"]
    th = check_thresholds(m["thresholds"] if thresholds is None else thresholds, len(m["exits"]))
    active = active_heads(th, crit)
    base = Path(m["_dir"])
    graphs, opset, initializers = {}, 0, []
    for i, entry in enumerate(m["segments"] + m["exits"]):
        g = onnx.load(str(base / entry["file"]))
        opset = max(opset, *(o.version for o in g.opset_import if o.domain in ("", "ai.onnx")))
        g = compose.add_prefix(g, f"g{i}_")
        initializers.extend(g.graph.initializer)
        del g.graph.initializer[:]
        graphs[entry["name"]] = g.graph
    if opset < 18:
        raise ConfigError(f"the cascade's graphs use opset {opset}; the If form needs opset ≥ 18 (re-export)")
    num_classes = int(m["num_classes"])
    consts = [helper.make_tensor("ee_axes_last", TensorProto.INT64, [1], [-1])]
    if crit == "entropy":
        consts.append(helper.make_tensor("ee_log_c", TensorProto.FLOAT, [], [math.log(num_classes)]))

    def nodes_of(name: str, feed: str) -> tuple[list, str]:
        """The nodes of graph ``name`` fed from tensor ``feed``, and the name of its output."""
        g = graphs[name]
        return [helper.make_node("Identity", [feed], [g.input[0].name], name=f"{name}_in"), *g.node], g.output[0].name

    def decide(k: int, z: str) -> tuple[list, str]:
        """Nodes computing the boolean scalar 'exit k fires for the whole batch' from logits ``z``."""
        p, s, c = f"ee{k}_prob", f"ee{k}_score", f"ee{k}_fires"
        nodes = [helper.make_node("Softmax", [z], [p], axis=-1, name=f"ee{k}_softmax")]
        tau = helper.make_tensor(f"ee{k}_tau", TensorProto.FLOAT, [], [float(th[k])])
        consts.append(tau)
        if crit == "confidence":  # every sample's max probability > τ  ⇔  min over the batch > τ
            nodes += [helper.make_node("ReduceMax", [p, "ee_axes_last"], [s + "_each"], keepdims=0),
                      helper.make_node("ReduceMin", [s + "_each"], [s], keepdims=0),
                      helper.make_node("Greater", [s, f"ee{k}_tau"], [c])]
        else:  # every sample's normalised entropy < τ  ⇔  max over the batch < τ
            nodes += [helper.make_node("Log", [p], [p + "_log"]), helper.make_node("Mul", [p, p + "_log"], [p + "_pl"]),
                      helper.make_node("ReduceSum", [p + "_pl", "ee_axes_last"], [s + "_neg"], keepdims=0),
                      helper.make_node("Neg", [s + "_neg"], [s + "_ent"]),
                      helper.make_node("Div", [s + "_ent", "ee_log_c"], [s + "_each"]),
                      helper.make_node("ReduceMax", [s + "_each"], [s], keepdims=0),
                      helper.make_node("Less", [s, f"ee{k}_tau"], [c])]
        return nodes, c

    def out_info(name: str):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)

    def chain(k: int, feed: str) -> tuple[list, str, str]:
        """Nodes that run segment k (fed ``feed``) and everything after it; returns (nodes, logits name, exit-index
        name)."""
        nodes, t = nodes_of(m["segments"][k]["name"], feed)
        if k == len(m["segments"]) - 1:
            final = f"ee{k}_exit_index"
            nodes.append(helper.make_node("Constant", [], [final], name=f"ee{k}_final_exit",
                                          value=helper.make_tensor(f"ee{k}_final_value", TensorProto.INT64, [1], [k])))
            return nodes, t, final
        if not active[k]:
            rest, out, ex = chain(k + 1, t)
            return nodes + rest, out, ex
        head_nodes, z = nodes_of(m["exits"][k]["name"], t)
        dec, cond = decide(k, z)
        then_out, else_out, out = f"ee{k}_then", f"ee{k}_else", f"ee{k}_logits"
        then_ex, else_ex, ex = f"ee{k}_then_exit", f"ee{k}_else_exit", f"ee{k}_exit"
        then_g = helper.make_graph(
            [helper.make_node("Identity", [z], [then_out]),
             helper.make_node("Constant", [], [then_ex],
                              value=helper.make_tensor(f"ee{k}_exit_value", TensorProto.INT64, [1], [k]))],
            f"exit_{k + 1}_taken", [], [out_info(then_out), exit_info(then_ex)])
        rest, rest_out, rest_ex = chain(k + 1, t)
        else_g = helper.make_graph(rest + [helper.make_node("Identity", [rest_out], [else_out]),
                                           helper.make_node("Identity", [rest_ex], [else_ex])],
                                   f"after_exit_{k + 1}", [], [out_info(else_out), exit_info(else_ex)])
        node = helper.make_node("If", [cond], [out, ex], name=f"exit_{k + 1}_if", then_branch=then_g,
                                else_branch=else_g)
        return nodes + head_nodes + dec + [node], out, ex

    def exit_info(name: str):
        return helper.make_tensor_value_info(name, TensorProto.INT64, [1])

    spec = InputSpec.from_dict(m["input_spec"])
    first = graphs[m["segments"][0]["name"]].input[0]
    inp = helper.make_tensor_value_info(spec.input_name, first.type.tensor_type.elem_type, None)
    inp.type.CopyFrom(first.type)
    # batch 1, declared: an If takes one branch for the whole batch, so a larger batch would exit together
    inp.type.tensor_type.shape.dim[0].Clear()
    inp.type.tensor_type.shape.dim[0].dim_value = 1
    body, out, ex = chain(0, spec.input_name)
    body.append(helper.make_node("Identity", [out], [spec.output_name], name="cascade_out"))
    body.append(helper.make_node("Identity", [ex], [EXIT_OUTPUT], name="cascade_exit"))
    graph = helper.make_graph(body, "early_exit_cascade_if", [inp],
                              [helper.make_tensor_value_info(spec.output_name, TensorProto.FLOAT, [1, num_classes]),
                               helper.make_tensor_value_info(EXIT_OUTPUT, TensorProto.INT64, [1])],
                              initializer=initializers + consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="edgevit-early-exit-if")
    onnx.checker.check_model(model)
    stamp_metadata(model, spec, m.get("source") or "", "early-exit If form")
    meta = {FORM_KEY: "if", "edgevit.thresholds": ",".join(f"{v:.6g}" for v in th),
            "edgevit.criterion": crit}
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    rec = {"path": str(out_path), "thresholds": [float(v) for v in th], "criterion": crit,
           "active_exits": [int(k + 1) for k in np.flatnonzero(active)], "opset": opset,
           "file_size": out_path.stat().st_size, "source_manifest": str(base / "manifest.json")}
    checked = None
    if parity:
        checked = _parity(base / "manifest.json", out_path, spec, th, crit, parity_images, int8=bool(m.get("int8")))
        rec["parity_vs_cascade"] = checked.to_dict()
    log.info("wrote the If form of %s to %s (%d active exits)", base, out_path, int(active.sum()))
    from ...artifact import Artifact
    from ...versions import library_versions

    art = Artifact(kind="onnx", spec=spec, path=out_path, source=m.get("source"),
                   meta={"early_exit_form": "if", "thresholds": rec["thresholds"], "criterion": crit})
    return ExportResult(artifact=art, parity=checked, seconds=time.perf_counter() - t0, versions=library_versions(),
                        fields=rec)


def _parity(manifest: Path, if_path: Path, spec, th, crit: str, images: Any, int8: bool) -> ParityRecord:
    """The If graph vs the segment cascade, one image at a time (the If form's batch size), on real images. For an
    INT8 cascade onnxruntime may fuse the quantised ops differently in one graph than in many, so top-1 agreement
    (≥ 98%) is checked instead of an fp32 logit tolerance."""
    from ...artifact import Artifact
    from ...runtimes import load_runtime, run_batched
    from ..parity import DEFAULT, check_parity, default_tolerance, parity_inputs
    from .runtime import CascadeRuntime

    x, described = parity_inputs(images, spec, what="early-exit If form")
    casc = CascadeRuntime(Artifact(kind="cascade", spec=spec, path=manifest), backend="onnxruntime",
                          thresholds=th, criterion=crit)
    rt = load_runtime("onnxruntime", Artifact(kind="onnx", spec=spec, path=if_path))
    try:
        ref, exits = casc.run_with_exits(x)  # per-sample exit
        out = run_batched(rt, x)  # the If form's fixed batch: 1
    finally:
        casc.close()
        rt.close()
    res = check_parity(ref, out, tolerance=None if int8 else default_tolerance("fp32", ref),
                       min_top1=0.98 if int8 else DEFAULT, precision="int8" if int8 else "fp32",
                       what=f"early-exit If form {if_path.name} vs the segment cascade (batch 1)")
    res.extra["inputs"] = described
    res.extra["exits_share"] = (np.bincount(exits, minlength=len(th) + 1) / len(exits)).tolist()
    return res
