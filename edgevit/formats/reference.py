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


def torch_logits(model, images: np.ndarray) -> np.ndarray:
    """Float32 logits of a torch module on preprocessed NCHW images (inference mode, the module's device)."""
    import torch

    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.inference_mode():
            for k in range(0, len(images), CHUNK):
                x = torch.from_numpy(np.ascontiguousarray(images[k : k + CHUNK]))
                out = model(x.to(device=device, dtype=dtype))
                out = out[0] if isinstance(out, (tuple, list)) else out
                outs.append(out.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outs)


def runtime_logits(runtime, images: np.ndarray) -> np.ndarray:
    """Logits of a loaded edgevit runtime, in chunks (batch 1 first, so a dynamic batch is exercised twice)."""
    bounds = [0, 1, *range(1 + CHUNK, len(images), CHUNK), len(images)] if len(images) > 1 else [0, len(images)]
    outs = [runtime.run(images[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
    return np.concatenate(outs)


def unwrap_torch(model: Any):
    """A torch module from a module, a torch Artifact or None."""
    from ..artifact import Artifact

    if model is None:
        return None
    if isinstance(model, Artifact):
        return model.load_model()
    return model
