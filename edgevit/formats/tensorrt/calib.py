"""INT8 calibration caches in TensorRT's text format, computed by edgevit from real data (no TensorRT needed).

TensorRT's implicit INT8 mode needs one symmetric dynamic range ``amax`` per network tensor. Its calibrators
(``IInt8EntropyCalibrator2`` in the Python API, and the calibrator inside ``trtexec --int8 --calib=FILE``) read
and write those ranges as a *calibration cache*, a text file of the form::

    TRT-100300-EntropyCalibration2
    input: 3c8e4b1f
    /blocks.0/norm1/LayerNormalization_output_0: 3d1a2b3c
    ...

- line 1: ``TRT-<version tag>-<algorithm>``; the tag is ``major*10000 + minor*100 + patch`` for TensorRT ≥ 10
  (``10.3.0`` → ``100300``) and ``major*1000 + minor*100 + patch`` before (``8.6.1`` → ``8601``). TensorRT
  ignores a cache whose header does not fit the calibrator reading it, so the header must name
  ``EntropyCalibration2`` for ``trtexec --calib`` (whose calibrator is an ``IInt8EntropyCalibrator2``) and the
  tag should be the device's TensorRT version (the bundle's ``build.sh`` rewrites it when they differ);
- one line per tensor: ``<tensor name>: <scale>`` where ``scale = amax / 127`` written as the 8 hex digits of
  the float32's big-endian bit pattern (``struct.pack('>f', scale).hex()``). Tensor names are the ONNX tensor
  names, which is what TensorRT's ONNX parser calls the network tensors.

How edgevit computes ``amax`` (:func:`activation_ranges`): the ONNX graph is run with onnxruntime (graph
optimisations off, so the tensors are the ONNX graph's own) with every float intermediate tensor exposed as an
output, on preprocessed real calibration images (by default 300 class-balanced Fashion-MNIST *train* images from
:func:`edgevit.data.calibration_subset`). Per tensor, ``method`` is

- ``entropy`` (default): the KL-divergence threshold search published for TensorRT's entropy calibration
  (histogram of |x| in 2048 bins, candidate thresholds from 128 to 2048 bins, each reference distribution
  compared with its 128-level quantised version; the threshold with the smallest KL divergence wins).
  TensorRT's own ``IInt8EntropyCalibrator2`` internals are not public, so scales are close to, not bit-identical
  with, a calibration run on the device;
- ``max``: ``amax = max |x|`` over the calibration set (TensorRT's ``MinMaxCalibration`` idea);
- ``percentile``: the ``percentile``-th percentile of |x| (99.99 by default) from the same histogram.

Whatever the method, the header says ``EntropyCalibration2`` (see above: otherwise ``trtexec --calib`` would
discard the file and calibrate on random data); the method is recorded in the bundle's manifest and in
``calibration.json``. Float initializers and ``Constant`` outputs get ``amax = max |w|`` (TensorRT turns
constants used as activations, e.g. MatMul weights and position embeddings, into constant-layer tensors that need
a range too; Conv/Gemm kernel weights are quantised per channel by TensorRT itself and their entries are unused).
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError, ExportError

log = logging.getLogger(__name__)

CALIB_METHODS = ("entropy", "max", "percentile")
# TensorRT in JetPack 6.0 / 6.1 / 6.2 (Jetson Orin); JetPack 5.1.x ships 8.5.2
DEFAULT_TRT_VERSION = "10.3.0"
CACHE_ALGORITHM = "EntropyCalibration2"
NUM_BINS = 2048
NUM_QUANT_BINS = 128
_FLOAT_TYPES = {1, 10, 11, 16}  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")
_LINE = re.compile(r"^(.+): ([0-9a-fA-F]{1,8})$")
# bytes of intermediate outputs held at once while calibrating (decides the batch size)
MEMORY_BUDGET = 768 * 1024**2


# ------------------------------------------------------------------------------------------- file format


def trt_version_tag(version: str | int) -> str:
    """TensorRT's numeric version tag: ``"10.3.0"`` → ``"100300"``, ``"8.6.1"`` → ``"8601"``; digits stay."""
    text = str(version).strip()
    if text.isdigit():
        return text
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)*", text)
    if not m:
        raise ConfigError(f"TensorRT version must look like 10.3.0 or 8.6.1 (or a numeric tag like 100300), "
                          f"got {version!r}")
    major, minor, patch = int(m[1]), int(m[2]), int(m[3] or 0)
    return str(major * (10000 if major >= 10 else 1000) + minor * 100 + patch)


def cache_header(trt_version: str | int = DEFAULT_TRT_VERSION, algorithm: str = CACHE_ALGORITHM) -> str:
    """``TRT-<tag>-<algorithm>``, the first line of a calibration cache."""
    return f"TRT-{trt_version_tag(trt_version)}-{algorithm}"


def scale_to_hex(scale: float) -> str:
    """The 8 hex digits of float32 ``scale`` in big-endian byte order (TensorRT's cache encoding)."""
    return struct.pack(">f", float(scale)).hex()


def hex_to_scale(text: str) -> float:
    """Inverse of :func:`scale_to_hex` (TensorRT writes no leading zeros, so short strings are left-padded)."""
    return struct.unpack(">f", bytes.fromhex(text.strip().zfill(8)))[0]


def write_calibration_cache(path: str | Path, amax: dict[str, float], *,
                            trt_version: str | int = DEFAULT_TRT_VERSION) -> Path:
    """Write ``{tensor: amax}`` as a TensorRT calibration cache (scale = amax / 127). Returns the path."""
    path = Path(path)
    lines = [cache_header(trt_version)]
    for name, a in amax.items():
        if "\n" in name or not np.isfinite(a) or a <= 0:
            raise ExportError(f"calibration cache: tensor {name!r} has an invalid range {a!r} (must be finite and > 0)")
        lines.append(f"{name}: {scale_to_hex(a / 127.0)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def read_calibration_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """``(header, {tensor: scale})`` from a TensorRT calibration cache; raises :class:`ExportError` if malformed."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read calibration cache {path}: {exc}") from exc
    if not lines or not _HEADER.match(lines[0].strip()):
        first = lines[0][:80] if lines else "(empty file)"
        raise ExportError(f"{path} is not a TensorRT calibration cache: the first line must be "
                          f"'TRT-<version>-<algorithm>', found {first!r}")
    scales: dict[str, float] = {}
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        m = _LINE.match(line.rstrip())
        if not m:
            raise ExportError(f"{path}:{i}: expected '<tensor name>: <8 hex digits>', found {line[:120]!r}")
        scales[m[1]] = hex_to_scale(m[2])
    return lines[0].strip(), scales


def rewrite_header(path: str | Path, out: str | Path, trt_version: str | int) -> Path:
    """Copy a cache with its header's version tag replaced (the scales do not depend on TensorRT's version)."""
    header, _ = read_calibration_cache(path)
    algo = _HEADER.match(header)[2]
    body = Path(path).read_text().splitlines()[1:]
    out = Path(out)
    out.write_text("\n".join([cache_header(trt_version, algo), *body]) + "\n")
    return out


# ------------------------------------------------------------------------------------------- thresholds


def entropy_threshold(hist: np.ndarray, bin_width: float, *, num_quant_bins: int = NUM_QUANT_BINS) -> float:
    """KL-divergence calibration threshold for a histogram of |x| (bins of ``bin_width`` starting at 0).

    For each candidate ``i`` (``num_quant_bins`` … ``len(hist)`` bins kept), the reference distribution P is
    ``hist[:i]`` with every count beyond it added to its last bin, and Q is ``hist[:i]`` merged into
    ``num_quant_bins`` levels and spread back evenly over the non-empty bins of each level. The threshold is
    the upper edge of the kept bins, ``i * bin_width``, for the ``i`` with the smallest KL(P‖Q). Computed in
    closed form per level from cumulative sums, so all ~1900 candidates cost a few milliseconds.
    """
    h = np.asarray(hist, dtype=np.float64)
    nbins = len(h)
    total = h.sum()
    if total <= 0 or nbins <= num_quant_bins:
        return float(nbins * bin_width)
    with np.errstate(divide="ignore", invalid="ignore"):
        hlogh = np.where(h > 0, h * np.log(h), 0.0)
    c = np.concatenate([[0.0], np.cumsum(h)])  # c[k] = sum h[:k]
    nz = np.concatenate([[0.0], np.cumsum(h > 0)])  # non-empty bins in h[:k]
    hl = np.concatenate([[0.0], np.cumsum(hlogh)])

    i = np.arange(num_quant_bins, nbins + 1)  # candidates: number of bins kept
    m = i // num_quant_bins  # bins per level; the last level takes the remainder
    j = np.arange(num_quant_bins + 1)
    edges = np.minimum(m[:, None] * j[None, :], i[:, None])
    edges[:, -1] = i
    s = c[edges[:, 1:]] - c[edges[:, :-1]]  # level sums of h[:i]   (R, L)
    n = nz[edges[:, 1:]] - nz[edges[:, :-1]]  # non-empty bins per level
    q_tot = c[i]  # mass inside the kept bins
    tail = total - q_tot  # mass beyond them, folded into the last kept bin of P
    last = h[i - 1]
    p_last = last + tail

    with np.errstate(divide="ignore", invalid="ignore"):
        # sum_b p_b log p_b with p = counts / total
        ent = (hl[i - 1] - np.log(total) * c[i - 1]) / total
        ent = ent + np.where(p_last > 0, (p_last / total) * np.log(p_last / total), 0.0)
        # q per non-empty bin of level l: s_l / (n_l * q_tot)
        log_q = np.where((s > 0) & (n > 0), np.log(s / np.maximum(n, 1)) - np.log(q_tot)[:, None], 0.0)
        # mass of P in each level excluding the last kept bin (handled separately)
        s_wo_last = s.copy()
        s_wo_last[:, -1] -= last
        cross = (s_wo_last * log_q).sum(axis=1) / total
        # last kept bin: q > 0 only if it is non-empty itself; an empty bin receiving the tail makes KL infinite
        cross_last = np.where(last > 0, (p_last / total) * log_q[:, -1], np.where(p_last > 0, -np.inf, 0.0))
        kl = ent - cross - cross_last
    kl = np.where(np.isfinite(kl), kl, np.inf)
    best = int(np.argmin(kl))
    return float(i[best] * bin_width)


def percentile_threshold(hist: np.ndarray, bin_width: float, percentile: float) -> float:
    """The ``percentile``-th percentile of |x| from its histogram (upper edge of the bin that reaches it)."""
    h = np.asarray(hist, dtype=np.float64)
    cum = np.cumsum(h)
    if cum[-1] <= 0:
        return float(len(h) * bin_width)
    k = int(np.searchsorted(cum, cum[-1] * percentile / 100.0))
    return float(min(k + 1, len(h)) * bin_width)


# ------------------------------------------------------------------------------------------- activations


def _float_tensors(model):
    """(graph inputs, node outputs, {constant name: max|w|}, shape-inferred model): float tensors in graph order."""
    import onnx
    from onnx import numpy_helper

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        log.debug("ONNX shape inference failed; using the value_info already in the graph", exc_info=True)
        inferred = model
    types: dict[str, int] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    inits = {t.name: t for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits and types.get(i.name) in _FLOAT_TYPES]
    consts: dict[str, float] = {}
    used = {x for node in model.graph.node for x in node.input}
    for name, t in inits.items():
        if t.data_type in _FLOAT_TYPES and name in used:
            w = numpy_helper.to_array(t)
            consts[name] = float(np.abs(w).max()) if w.size else 0.0
    outputs = []
    for node in model.graph.node:
        for out in node.output:
            if not out or types.get(out) not in _FLOAT_TYPES:
                continue
            if node.op_type == "Constant":
                attr = next((a for a in node.attribute if a.name == "value"), None)
                if attr is not None:
                    w = numpy_helper.to_array(attr.t)
                    consts[out] = float(np.abs(w).max()) if w.size else 0.0
                continue
            outputs.append(out)
    return inputs, outputs, consts, inferred


def _per_sample_bytes(model, names: list[str]) -> int:
    """Rough bytes per sample of the exposed outputs (symbolic dims other than the first count as 64)."""
    total = 0
    shapes = {vi.name: vi for vi in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    for name in names:
        vi = shapes.get(name)
        if vi is None or not vi.type.HasField("tensor_type"):
            total += 1 << 20
            continue
        dims = vi.type.tensor_type.shape.dim
        n = 1
        for k, d in enumerate(dims):
            if k == 0:
                continue
            n *= d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 64
        total += 4 * n
    return max(total, 1)


class _ExposedSession:
    """An onnxruntime session over the graph with every float intermediate tensor as an output."""

    def __init__(self, onnx_path: Path):
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(onnx_path), load_external_data=True)
        inputs, outputs, self.constants, inferred = _float_tensors(model)
        if len(inputs) != 1:
            raise ExportError(f"calibration supports graphs with one float input; {onnx_path} has {len(inputs)} "
                              f"({', '.join(inputs) or 'none'})")
        self.input_name = inputs[0]
        inp = next(i for i in model.graph.input if i.name == self.input_name)
        dims = inp.type.tensor_type.shape.dim
        self.static_batch = dims[0].dim_value if len(dims) and dims[0].HasField("dim_value") else None
        existing = {o.name for o in model.graph.output}
        for name in outputs:
            if name not in existing:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
        self.names = outputs
        self.sample_bytes = _per_sample_bytes(inferred, outputs)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the ONNX graph's tensors
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), sess_options=so,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises pybind errors
            raise ExportError(f"onnxruntime could not load {onnx_path} with its intermediate tensors exposed for "
                              f"calibration ({type(exc).__name__}: {str(exc)[:300]})") from exc
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
        outs = self.session.run(self.output_names, {self.input_name: batch})
        yield self.input_name, batch
        for name, arr in zip(self.output_names, outs):
            yield name, np.asarray(arr)


def _batches(images: np.ndarray, batch_size: int) -> Iterable[np.ndarray]:
    for k in range(0, len(images), batch_size):
        yield np.ascontiguousarray(images[k : k + batch_size])


def activation_ranges(onnx_path: str | Path, images: np.ndarray, *, method: str = "entropy",
                      percentile: float = 99.99, num_bins: int = NUM_BINS, batch_size: int | None = None) -> dict:
    """Per-tensor ``amax`` of an ONNX graph on preprocessed calibration images (see the module docstring).

    ``images`` are float32 NCHW batches already preprocessed to the model's input spec (real data: the ranges
    are only as good as the data), or for a graph of an early-exit cascade the real inputs it receives (the tokens
    ``[N, T, D]`` that the segment before it outputs on real images). Returns ``{"amax": {tensor: amax}, "tensors": {tensor: {amax, max_abs,
    kind, clipped_fraction}}, "method", "n", "input", "zero_tensors", "seconds"}``; ``kind`` is ``input``,
    ``activation`` or ``constant``. Tensors that are all zeros get ``amax = 1.0`` (any scale represents zero
    exactly) and are listed in ``zero_tensors``.
    """
    import time

    if method not in CALIB_METHODS:
        raise ConfigError(f"calibration method '{method}' is not one of {', '.join(CALIB_METHODS)}")
    if method == "percentile" and not 0 < percentile <= 100:
        raise ConfigError(f"calibration percentile must lie in (0, 100], got {percentile}")
    images = np.asarray(images)
    if images.dtype != np.float32 or images.ndim < 2 or len(images) == 0:
        raise DataError(f"calibration inputs must be a non-empty float32 batch of the graph's input: NCHW images "
                        f"preprocessed with edgevit.data.preprocess, or the tokens a cascade graph receives "
                        f"[N, T, D]; got {images.dtype} {images.shape}")
    t0 = time.perf_counter()
    sess = _ExposedSession(Path(onnx_path))
    if sess.static_batch:  # a fixed-batch graph runs in chunks of exactly that size; the tail is padded
        from ...runtimes.base import pad_batch

        batch_size = sess.static_batch
        full = -(-len(images) // batch_size) * batch_size
        if full > len(images):  # every image is used; the padding repeats a few of them (max |x| is unchanged)
            log.info("calibration: %s has a fixed batch of %d; padding %d images to %d with repeats", onnx_path,
                     batch_size, len(images), full)
            images = pad_batch(images, full)
    elif batch_size is None:
        batch_size = int(max(1, min(64, MEMORY_BUDGET // sess.sample_bytes)))
    # pass 1: max |x| per tensor
    max_abs: dict[str, float] = {}
    for batch in _batches(images, batch_size):
        for name, arr in sess.run(batch):
            a = float(np.abs(arr).max()) if arr.size else 0.0
            if not np.isfinite(a):
                raise ExportError(f"calibration: tensor {name!r} of {onnx_path} holds inf/NaN on real inputs; the "
                                  f"model overflows in float32 and cannot be quantised as it is")
            max_abs[name] = max(max_abs.get(name, 0.0), a)
    # pass 2: histograms of |x| over [0, max]
    hists: dict[str, np.ndarray] = {}
    if method != "max":
        for batch in _batches(images, batch_size):
            for name, arr in sess.run(batch):
                top = max_abs[name]
                if top <= 0:
                    continue
                scaled = np.abs(arr.ravel().astype(np.float32, copy=False)) * np.float32(num_bins / top)
                idx = np.minimum(scaled.astype(np.int32), num_bins - 1)
                h = np.bincount(idx, minlength=num_bins)
                hists[name] = hists[name] + h if name in hists else h
    amax: dict[str, float] = {}
    info: dict[str, dict] = {}
    zero = []
    for name, top in max_abs.items():
        if top <= 0:
            a = 1.0
            zero.append(name)
        elif method == "max":
            a = top
        elif method == "entropy":
            a = entropy_threshold(hists[name], top / num_bins)
        else:
            a = percentile_threshold(hists[name], top / num_bins, percentile)
        a = float(min(a, top)) if top > 0 else a
        clipped = None
        if name in hists and top > 0:
            h = hists[name]
            clipped = float(h[min(int(a / top * num_bins), num_bins):].sum() / max(h.sum(), 1))
        amax[name] = a
        info[name] = {"amax": a, "max_abs": top, "kind": "input" if name == sess.input_name else "activation",
                      "clipped_fraction": clipped}
    for name, top in sess.constants.items():
        a = top if top > 0 else 1.0
        if top <= 0:
            zero.append(name)
        amax.setdefault(name, a)
        info.setdefault(name, {"amax": a, "max_abs": top, "kind": "constant", "clipped_fraction": 0.0})
    return {"amax": amax, "tensors": info, "method": method,
            "percentile": percentile if method == "percentile" else None,
            "num_bins": num_bins if method != "max" else None, "n": len(images), "input": sess.input_name,
            "zero_tensors": zero, "batch_size": batch_size, "seconds": round(time.perf_counter() - t0, 3)}


def calibration_images(spec, *, dataset: str, split: str = "train", samples: int = 300,
                       data_dir: str | None = None, seed: int = 0) -> tuple[np.ndarray, dict]:
    """``samples`` class-balanced real images of ``dataset`` (a dataset name or ImageFolder directory)/``split``, preprocessed to ``spec``, and where from.

    The same helper as every INT8 path of edgevit: :func:`edgevit.data.calibration.calibration_data`.
    """
    from ...data.calibration import calibration_data

    if samples <= 0:
        raise ConfigError(f"calibration samples must be positive, got {samples}")
    return calibration_data(spec, dataset, split=split, samples=samples, data_dir=data_dir, seed=seed,
                            what="TensorRT INT8 calibration")


def compute_calibration_cache(onnx_path: str | Path, images: np.ndarray, out_path: str | Path, *,
                              method: str = "entropy", percentile: float = 99.99,
                              trt_version: str | int = DEFAULT_TRT_VERSION) -> dict:
    """Compute ranges on ``images`` and write the cache plus ``<cache stem>.json`` with per-tensor detail."""
    from ...artifact import write_json

    ranges = activation_ranges(onnx_path, images, method=method, percentile=percentile)
    out_path = write_calibration_cache(out_path, ranges["amax"], trt_version=trt_version)
    detail = Path(out_path).with_suffix(".json")
    write_json(detail, {"header": cache_header(trt_version), "method": ranges["method"],
                        "percentile": ranges["percentile"], "n": ranges["n"], "input": ranges["input"],
                        "scale_definition": "scale = amax / 127 (symmetric INT8)", "tensors": ranges["tensors"]})
    inp = ranges["tensors"][ranges["input"]]
    log.info("calibration cache %s: %d tensors (%s, %d images) in %.1f s", out_path, len(ranges["amax"]), method,
             ranges["n"], ranges["seconds"])
    return {"file": str(out_path), "detail_file": str(detail), "header": cache_header(trt_version),
            "method": method, "percentile": ranges["percentile"], "n": ranges["n"], "tensors": len(ranges["amax"]),
            "activations": sum(1 for v in ranges["tensors"].values() if v["kind"] != "constant"),
            "constants": sum(1 for v in ranges["tensors"].values() if v["kind"] == "constant"),
            "input": ranges["input"], "input_amax": inp["amax"], "input_max_abs": inp["max_abs"],
            "zero_tensors": ranges["zero_tensors"], "seconds": ranges["seconds"], "batch_size": ranges["batch_size"]}
