"""edgevit: make small Vision Transformers and vision-language models fit edge devices.

Importing edgevit is cheap: torch, onnxruntime and the optional backends load only when used.
"""

from __future__ import annotations

from .versions import __version__

__all__ = ["__version__", "create_model", "distill", "early_exit", "export", "load_recipe", "profile", "quantize",
           "run_recipe"]

# the public API (edgevit.api), loaded on first use so that `import edgevit` stays free of torch
_API = ("distill", "early_exit", "export", "profile", "quantize")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgevit' has no attribute {name!r}")


def create_model(name_or_path: str, **kwargs):
    """See :func:`edgevit.models.create`."""
    from .models import create

    return create(name_or_path, **kwargs)


def load_recipe(path, overrides=None):
    """See :func:`edgevit.recipe.load_recipe`."""
    from .recipe import load_recipe as _load

    return _load(path, overrides)


def run_recipe(recipe, out_dir, **kwargs):
    """See :func:`edgevit.pipeline.run`."""
    from .pipeline import run

    return run(recipe, out_dir, **kwargs)
