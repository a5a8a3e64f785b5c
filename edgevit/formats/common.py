"""Helpers shared by the exporters of several formats (torch-side inputs, quiet converters, error summaries).

Nothing heavy is imported at module level: torch and the models are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ExportError
from ..spec import InputSpec

log = logging.getLogger(__name__)


def resolve_torch_source(model: Any, *, what: str = "ONNX"):
    """(torch module, input spec, source name) from a module, a torch Artifact or a model name / path."""
    from ..artifact import Artifact
    from ..models import create, input_spec_of

    if isinstance(model, (str, Path)):
        module = create(str(model))
        return module, input_spec_of(module), str(getattr(module, "edgevit_name", model))
    if isinstance(model, Artifact):
        if model.kind != "torch":
            raise ExportError(f"{what} export needs a torch model, got an artefact of kind '{model.kind}' "
                              f"({model.path}); start from the torch model (the recipe's load step)")
        module = model.load_model()
        return module, model.spec, str(model.source or getattr(module, "edgevit_name", type(module).__name__))
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"{what} export needs a torch.nn.Module, a torch Artifact or a model name, "
                          f"got {type(model).__name__}")
    return model, input_spec_of(model), str(getattr(model, "edgevit_name", type(model).__name__))


def example_input(module, spec: InputSpec, *, batch: int):
    """A random tensor of the spec's shape on the model's device (tracing only: never used for parity)."""
    import torch

    param = next(iter(module.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return torch.from_numpy(spec.example(batch)).to(device=device, dtype=dtype)


@contextlib.contextmanager
def quiet(*, native: bool = False) -> Iterator[None]:
    """Route the exporters' and converters' output to the debug log: Python warnings and ``sys.stdout``/``sys.stderr``.
    ``native=True`` also catches what native code (TVM's C++ ``LOG(WARNING)``, printf) writes straight to file
    descriptors 1 and 2, which a Python-level redirect does not see; that text is logged at DEBUG too (the run's log
    keeps it). Native capture is process-wide for the block (log handlers writing to the terminal meanwhile
    land in the same text), so it is for short native calls such as a TVM compile."""
    buf = io.StringIO()
    fds = _native_output() if native else contextlib.nullcontext(io.StringIO())
    with warnings.catch_warnings(record=True) as caught, fds as native_text, \
            contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        warnings.simplefilter("always")
        yield
    for w in caught:
        log.debug("exporter warning: %s: %s", w.category.__name__, str(w.message)[:500])
    if buf.getvalue().strip():
        log.debug("exporter output:\n%s", buf.getvalue().strip()[-20000:])
    if native_text.getvalue().strip():
        log.debug("native output:\n%s", native_text.getvalue().strip()[-20000:])


@contextlib.contextmanager
def _native_output() -> Iterator[io.StringIO]:
    """Point file descriptors 1 and 2 at a temporary file for the block (process-wide); the text is in the
    yielded buffer afterwards. Where the descriptors cannot be duplicated (an embedding without them), a no-op."""
    import os
    import sys
    import tempfile

    out = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = []
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(tmp.fileno(), fd)
            except OSError:
                break
        try:
            yield out
        finally:
            _flush_c_stdio()
            for fd, dup in reversed(saved):
                os.dup2(dup, fd)
                os.close(dup)
            tmp.seek(0)
            out.write(tmp.read().decode("utf-8", "replace"))


def _flush_c_stdio() -> None:
    """``fflush(NULL)``: native code's buffered ``printf`` output lands in the redirected file, not after it."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


def first_lines(exc: BaseException, n: int = 3, limit: int = 600) -> str:
    """The first ``n`` non-empty lines of an exception's message on one line, at most ``limit`` characters (the
    type name when the message is empty): for error messages that quote a backend's long C++ errors."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines()[:n] if line.strip())
    return (text or type(exc).__name__)[:limit]
