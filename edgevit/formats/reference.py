"""Shared helpers for converters that start from an ONNX file: resolve it, and compute reference logits."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError

CHUNK = 64


def resolve_onnx(onnx: Any, spec=None):
    """``(path, InputSpec, source)`` of an ONNX file given as a path or an ``onnx`` :class:`Artifact`."""
    from ..artifact import Artifact
    from ..runtimes import open_artifact

    if isinstance(onnx, Artifact):
        if onnx.kind != "onnx" or onnx.path is None:
            raise ExportError(f"expected an ONNX artefact, got kind '{onnx.kind}' ({onnx.path}); export to ONNX first "
                              f"(edgevit export onnx, or the export_onnx stage)")
        return Path(onnx.path), spec or onnx.spec, onnx.source
    p = Path(onnx)
    if p.suffix != ".onnx":
        raise ExportError(f"expected an .onnx file, got {p}; export the model first with `edgevit export onnx`")
    art = open_artifact(p, spec=spec)
    return p, art.spec, art.source


def torch_logits(model, images: np.ndarray, *, what: str = "parity check") -> np.ndarray:
    """Float32 logits ``[N, num_classes]`` of a torch module on preprocessed NCHW float32 images ``[N, C, H, W]``.

    The one torch reference of every parity check: eval mode (restored afterwards), ``torch.inference_mode``, the
    module's device and floating dtype, batches of at most ``CHUNK`` images (batch 1 first, so a dynamic-batch
    model is exercised at two sizes). A tuple/list output gives its first element. Raises
    :class:`~edgevit.errors.ExportError` (naming ``what``) when the module fails on a batch of real inputs.
    """
    import torch

    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.inference_mode():
            for a, b in _bounds(len(images)):
                x = torch.from_numpy(np.ascontiguousarray(images[a:b]))
                try:
                    out = model(x.to(device=device, dtype=dtype))
                except Exception as exc:  # the source model itself does not run on this batch
                    raise ExportError(f"the torch model fails on a batch of {b - a} real inputs during the {what} "
                                      f"({type(exc).__name__}: {str(exc)[:200]}); if it only runs at a fixed batch "
                                      f"size, export with dynamic_batch=False") from exc
                out = out[0] if isinstance(out, (tuple, list)) else out
                outs.append(out.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outs)


def _bounds(n: int) -> list[tuple[int, int]]:
    """Chunk bounds: one sample alone first, then chunks of ``CHUNK``."""
    cuts = [0, 1, *range(1 + CHUNK, n, CHUNK), n] if n > 1 else [0, n]
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def runtime_logits(runtime, images: np.ndarray) -> np.ndarray:
    """Logits ``[N, classes]`` of a loaded edgevit runtime for ``images`` ``[N, C, H, W]``, in chunks: batch 1 first,
    then chunks of ``CHUNK`` (a dynamic batch is exercised twice); a runtime with a fixed batch or a smaller largest
    batch goes through :func:`edgevit.runtimes.run_batched` (its own batch size, the last batch padded)."""
    from ..runtimes.base import run_batched

    lo, hi = getattr(runtime, "batch_limits", (1, None))
    if lo > 1 or (hi is not None and hi < CHUNK):
        return run_batched(runtime, images, CHUNK)
    return np.concatenate([runtime.run(images[a:b]) for a, b in _bounds(len(images))])


def unwrap_torch(model: Any):
    """A torch module from a module, a torch Artifact or None."""
    from ..artifact import Artifact

    if model is None:
        return None
    if isinstance(model, Artifact):
        return model.load_model()
    return model
