"""One door for optional heavy backends: ``require("openvino", extra="openvino", feature="OpenVINO export")``."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingBackendError


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingBackendError` naming the pip extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingBackendError(
            f"{feature} needs the Python package '{module}', which is not installed or failed to import "
            f"({type(exc).__name__}: {exc}). Install it with: pip install 'edgevit[{extra}]'"
        ) from exc


def available(module: str) -> bool:
    """True when ``module`` can be found, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
