"""Models: ``create(name_or_path)`` for timm names, local checkpoints and edgevit's registered models.

The input spec travels with the model as ``model.edgevit_spec`` (see :func:`input_spec_of`).
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from ..errors import ModelLoadError
from ..registry import Registry
from ..spec import InputSpec

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


class ModelEntry:
    """A registered edgevit model: a builder, an input spec, and (optionally) packaged weights."""

    def __init__(self, name: str, build: Callable, spec: InputSpec, weights: str | None, description: str):
        self.name, self.build, self.spec, self.weights, self.description = name, build, spec, weights, description

    def weights_path(self) -> Path | None:
        return WEIGHTS_DIR / self.weights if self.weights else None


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, build: Callable, spec: InputSpec, *, weights: str | None = None, description: str = ""):
    MODELS.register(name, ModelEntry(name, build, spec, weights, description))


def _register_builtin() -> None:
    from ..data.fashion_mnist import MEAN, STD
    from . import fmnist

    spec = InputSpec(input_size=(1, 28, 28), mean=MEAN, std=STD, interpolation="bilinear", num_classes=10)
    register_model("fmnist-vit", lambda: fmnist.build("fmnist-vit"), spec, weights="fmnist-vit.safetensors",
                   description="12-block ViT (dim 128, conv stem, 49 tokens) trained on Fashion-MNIST; shipped teacher")
    register_model("fmnist-vit-tiny", lambda: fmnist.build("fmnist-vit-tiny"), spec,
                   description="6-block ViT (dim 96, conv stem) student for distillation; untrained")
    register_model("fmnist-vit-nano", lambda: fmnist.build("fmnist-vit-nano"), spec,
                   description="4-block ViT (dim 64, conv stem) student for distillation, ~13x fewer parameters "
                               "than fmnist-vit; untrained")


_register_builtin()


def input_spec_of(model) -> InputSpec:
    """The model's input spec: the attached one, else resolved from timm's pretrained config."""
    spec = getattr(model, "edgevit_spec", None)
    if spec is not None:
        return spec
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    return InputSpec(
        input_size=tuple(cfg["input_size"]), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"), crop_pct=float(cfg.get("crop_pct", 1.0)),
        num_classes=getattr(model, "num_classes", None),
    )


def attach_spec(model, spec: InputSpec):
    model.edgevit_spec = spec
    return model


def _is_path(name: str) -> bool:
    return name.endswith(CHECKPOINT_SUFFIXES) or "/" in name or Path(name).exists()


def read_state_dict(path: str | Path) -> tuple[dict, dict]:
    """``(state_dict, metadata)`` from a .safetensors file, or a .pt/.pth through ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118 - safe_open is not a dict
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"{path} is not a readable safetensors checkpoint: {exc}") from exc
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"{path} is not a checkpoint edgevit can load safely (torch.load with weights_only=True failed: "
            f"{str(exc).splitlines()[0][:200]}). Save the state dict with safetensors, or torch.save(model.state_dict())."
        ) from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "module"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise ModelLoadError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    return obj, {}


def load_state_dict_strict(model, state: dict, *, source: str) -> None:
    """Load ``state`` into ``model``; on mismatch raise an error listing a few missing/unexpected keys."""
    own = model.state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        def few(xs):
            return ", ".join(xs[:5]) + (f" … (+{len(xs) - 5} more)" if len(xs) > 5 else "") if xs else "none"

        raise ModelLoadError(
            f"checkpoint {source} does not fit the model {type(model).__name__}: "
            f"{len(missing)} missing keys ({few(missing)}); {len(unexpected)} unexpected keys ({few(unexpected)}); "
            f"{len(wrong)} shape mismatches ({few(wrong)}). Check that the architecture (--arch) matches the checkpoint."
        )
    model.load_state_dict(state, strict=True)


def _timm_model(name: str, *, pretrained: bool, num_classes: int | None):
    import timm

    if not timm.is_model(name):
        known = MODELS.names() + timm.list_models()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModelLoadError(
            f"unknown model '{name}': not an edgevit model ({', '.join(MODELS.names())}), not a timm model name, "
            f"and not a checkpoint file.{hint} See `edgevit list models`."
        )
    kw = {} if num_classes is None else {"num_classes": num_classes}
    try:
        return timm.create_model(name, pretrained=pretrained, **kw)
    except Exception as exc:  # network errors come in many types
        if pretrained:
            raise ModelLoadError(
                f"could not download pretrained weights for '{name}' ({type(exc).__name__}: {str(exc)[:200]}). "
                f"This machine may have no model hub access: pass a local file with --checkpoint PATH instead."
            ) from exc
        raise


def create(name_or_path: str, *, checkpoint: str | Path | None = None, pretrained: bool = False,
           num_classes: int | None = None, arch: str | None = None):
    """Build a model in eval mode with its input spec attached.

    - an edgevit model name (``fmnist-vit``): built and loaded with its packaged weights (if it has any);
    - a timm name (``deit_tiny_patch16_224``): random init unless ``pretrained=True`` (needs a hub);
    - a checkpoint path (``.safetensors``/``.pt``/``.pth``): the architecture comes from ``arch``, or from the
      ``arch`` metadata edgevit writes into safetensors files;
    - ``checkpoint=`` loads those weights into the named architecture (strict; mismatches are listed).
    """
    if name_or_path is None:
        raise ModelLoadError("no model given: pass a model name or a checkpoint path")
    name = str(name_or_path)
    meta: dict = {}
    if name not in MODELS and _is_path(name):
        if checkpoint is not None:
            raise ModelLoadError("give either a checkpoint path as the model or --checkpoint, not both")
        checkpoint = name
        _, meta = read_state_dict(checkpoint) if str(checkpoint).endswith(".safetensors") else ({}, {})
        name = arch or meta.get("arch")
        if not name:
            raise ModelLoadError(
                f"{checkpoint} does not say which architecture it belongs to; pass --arch NAME "
                f"(an edgevit or timm model name)"
            )
    elif arch is not None and arch != name:
        raise ModelLoadError(f"--arch {arch} conflicts with the model name {name}")

    if num_classes is None and name not in MODELS and str(checkpoint or "").endswith(".safetensors"):
        meta = meta or read_state_dict(checkpoint)[1]  # a timm head size other than its default (e.g. a student)
        num_classes = json.loads(meta.get("input_spec", "{}")).get("num_classes")
    spec = None
    if name in MODELS:
        entry = MODELS.get(name)
        model = entry.build()
        spec = entry.spec
        if checkpoint is None and entry.weights_path() is not None:
            wp = entry.weights_path()
            if not wp.exists():
                raise ModelLoadError(f"packaged weights of '{name}' are missing ({wp}); reinstall edgevit")
            state, _ = read_state_dict(wp)
            load_state_dict_strict(model, state, source=str(wp))
    else:
        model = _timm_model(name, pretrained=pretrained, num_classes=num_classes)
    if checkpoint is not None:
        state, meta = read_state_dict(checkpoint)
        load_state_dict_strict(model, state, source=str(checkpoint))
        if "input_spec" in meta:
            spec = InputSpec.from_dict(json.loads(meta["input_spec"]))
    model.eval()
    model.edgevit_name = name
    attach_spec(model, spec or input_spec_of(model))
    return model


def save_checkpoint(model, path: str | Path) -> Path:
    """Write ``model``'s weights as safetensors with its architecture name and input spec as metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "arch": str(getattr(model, "edgevit_name", "")),
            "input_spec": json.dumps(input_spec_of(model).to_dict())}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=meta)
    return path


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def list_models(include_timm: bool = False) -> list[dict]:
    rows = [{"name": n, "source": "edgevit", "weights": bool(e.weights), "description": e.description}
            for n, e in MODELS.items()]
    if include_timm:
        import timm

        rows += [{"name": n, "source": "timm", "weights": False, "description": ""} for n in timm.list_models()]
    return rows
