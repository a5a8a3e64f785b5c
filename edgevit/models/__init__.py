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

# A checkpoint of a transformed model (a method rewrote its modules) names the transform in this metadata key; the
# transform ("module:function", called with the base model and the metadata) rebuilds the structure to load into.
# Referenced by name so this floor imports no method.
TRANSFORM_KEY = "edgevit.transform"
TRANSFORMS = {"shiftadd": "edgevit.methods.shiftadd.convert:rebuild"}


class ModelEntry:
    """A registered edgevit model: a builder, an input spec, and (optionally) packaged weights."""

    def __init__(self, name: str, build: Callable, spec: InputSpec, weights: str | None, description: str):
        self.name, self.build, self.spec, self.weights, self.description = name, build, spec, weights, description

    def weights_path(self) -> Path | None:
        return WEIGHTS_DIR / self.weights if self.weights else None


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, build: Callable, spec: InputSpec, *, weights: str | None = None, description: str = ""):
    """Register a model; its spec's ``class_names`` (``extra["class_names"]``) name its outputs in logit order (used to
    map an ImageFolder's folders and printed by the C++ example)."""
    MODELS.register(name, ModelEntry(name, build, spec, weights, description))


def _register_builtin() -> None:
    from ..data.fashion_mnist import CLASSES, MEAN, STD
    from . import fmnist

    spec = InputSpec(input_size=(1, 28, 28), mean=MEAN, std=STD, interpolation="bilinear", num_classes=10,
                     extra={"class_names": list(CLASSES)})
    register_model("fmnist-vit", lambda: fmnist.build("fmnist-vit"), spec, weights="fmnist-vit.safetensors",
                   description="12-block ViT (dim 128, conv stem, 49 tokens) trained on Fashion-MNIST; shipped teacher")
    register_model("fmnist-vit-tiny", lambda: fmnist.build("fmnist-vit-tiny"), spec,
                   description="6-block ViT (dim 96, conv stem) student for distillation; untrained")
    register_model("fmnist-vit-micro", lambda: fmnist.build("fmnist-vit-micro"), spec,
                   weights="fmnist-vit-micro.safetensors",
                   description="6-block ViT (dim 64, conv stem) distilled from fmnist-vit (30 epochs, "
                               "benchmarks/train_student.sh; 90.64% top-1); shipped student")
    register_model("fmnist-vit-nano", lambda: fmnist.build("fmnist-vit-nano"), spec,
                   description="4-block ViT (dim 64, conv stem) student for distillation, ~13x fewer parameters "
                               "than fmnist-vit; untrained")


_register_builtin()


def input_spec_of(model) -> InputSpec:
    """The model's input spec: the attached one, else timm's pretrained config corrected by the BUILT module's
    geometry (a ViT built with ``in_chans=1, img_size=28`` expects ``(1, 28, 28)``, whatever its pretrained config
    says; mean/std are averaged to one value for a 1-channel model)."""
    spec = getattr(model, "edgevit_spec", None)
    if spec is not None:
        return spec
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    c, h, w = (int(v) for v in cfg["input_size"])
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    geometry = module_geometry(model)
    c = geometry.get("in_chans", c)
    h, w = geometry.get("img_size", (h, w))
    if len(mean) != c:
        mean = (sum(mean) / len(mean),) * c
        std = (sum(std) / len(std),) * c
    return InputSpec(
        input_size=(c, h, w), mean=mean, std=std,
        interpolation=cfg.get("interpolation", "bicubic"), crop_pct=float(cfg.get("crop_pct", 1.0)),
        num_classes=getattr(model, "num_classes", None),
    )


def module_geometry(model) -> dict:
    """``{"in_chans": C, "img_size": (H, W)}`` read from a built module where it says (a timm ViT's patch
    embedding, the first convolution's input channels); keys are absent when the module does not tell."""
    from torch import nn

    out: dict = {}
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "img_size", None)
    if size is not None:
        out["img_size"] = (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size),) * 2
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        out["in_chans"] = int(first.in_channels)
    return out


def init_seed(name: str) -> int:
    """The seed of a model's random initialisation: a stable function of its name (sha256), so that every process
    builds the same random weights for the same name (exports and their parity checks then compare like with like)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def timm_kwargs_from_state(arch: str, state: dict) -> dict:
    """timm ``create_model`` keyword arguments that make ``arch`` fit a checkpoint's tensor shapes: ``num_classes``
    (from the classifier's weight; 0 when the checkpoint has no head), ``in_chans`` (first convolution), and for ViTs
    ``patch_size`` and ``img_size`` (patch-embedding kernel, position-embedding length). Only values that differ from
    the architecture's defaults are returned. The default model is built on the meta device (no memory, no init)."""
    import math

    import timm
    import torch

    with torch.device("meta"):
        ref = timm.create_model(arch, pretrained=False)
    own = ref.state_dict()
    kw: dict = {}
    head = ref.get_classifier() if hasattr(ref, "get_classifier") else None
    head_name = next((n for n, m in ref.named_modules() if m is head), None) if head is not None else None
    if head_name:
        key = f"{head_name}.weight"
        if key in own:
            if key in state:
                if int(state[key].shape[0]) != int(own[key].shape[0]):
                    kw["num_classes"] = int(state[key].shape[0])
            elif not any(k.startswith(head_name + ".") for k in state):
                kw["num_classes"] = 0
    conv = next((k for k, v in own.items() if v.ndim == 4 and k in state), None)
    if conv is not None and int(state[conv].shape[1]) != int(own[conv].shape[1]):
        kw["in_chans"] = int(state[conv].shape[1])
    pe = getattr(ref, "patch_embed", None)
    if pe is not None and "patch_embed.proj.weight" in state and hasattr(pe, "patch_size"):
        patch = tuple(int(v) for v in state["patch_embed.proj.weight"].shape[2:])
        if patch != tuple(pe.patch_size):
            kw["patch_size"] = patch[0] if patch[0] == patch[1] else patch
        if "pos_embed" in state:
            prefix = 0 if getattr(ref, "no_embed_class", False) else int(getattr(ref, "num_prefix_tokens", 0))
            n = int(state["pos_embed"].shape[1]) - prefix
            grid = math.isqrt(max(n, 0))
            if grid * grid == n:
                size = grid * patch[0]
                if (size, size) != tuple(pe.img_size):
                    kw["img_size"] = size
    return kw


TILE_MARK = 0.5  # size of the per-tile offset of a tiled position embedding, relative to its RMS


def fit_input_size(backbone, hw: tuple[int, int], *, mark_tiles: float = 0.0):
    """Make a ViT take ``hw`` images (in place): edgevit's conv-stem ViTs get their 7×7 position embedding TILED
    along the width (a 28×56 pair image: each half starts with the position embedding the 28×28 model learnt);
    other timm models go through ``set_input_size`` (which resamples it). Returns ``backbone``.

    ``mark_tiles`` m > 0 adds to tile k of T (row-major) the offset ``m · rms(pos) · c_k · r``, ``c_k`` evenly
    spaced in [−1, 1] and ``r`` a fixed unit-RMS direction (seed 0): without it the tiles are identical, a model
    starts exactly blind to which tile holds what (left/right order in a pair image) and learns order only as
    slowly as training breaks that symmetry."""
    import torch
    from torch import nn

    pe = getattr(backbone, "patch_embed", None)
    if pe is None or not hasattr(pe, "img_size"):
        if hasattr(backbone, "set_input_size"):
            backbone.set_input_size(img_size=tuple(hw))
            return backbone
        raise ModelLoadError(f"{type(backbone).__name__} has no patch embedding whose input size can change to {hw}: "
                             f"use a ViT (an edgevit fmnist-vit variant or a timm vit_* / deit_* name) as the image "
                             f"tower, or images of the size it was built for")
    if tuple(pe.img_size) == tuple(hw):
        return backbone
    from .fmnist import ConvStem

    if isinstance(pe, ConvStem):
        gh, gw = hw[0] // pe.patch_size[0], hw[1] // pe.patch_size[1]
        oh, ow = pe.grid_size
        if gh % oh or gw % ow:
            raise ModelLoadError(f"cannot fit a {pe.img_size} conv-stem ViT to {hw} images: the token grid {gh}×{gw} "
                              f"is not a multiple of {oh}×{ow}")
        prefix = backbone.num_prefix_tokens if not getattr(backbone, "no_embed_class", False) else 0
        pos = backbone.pos_embed.data
        th, tw = gh // oh, gw // ow
        grid = pos[:, prefix:].reshape(1, oh, ow, -1).repeat(1, th, tw, 1)
        if mark_tiles and th * tw > 1:
            r = torch.randn(pos.shape[-1], generator=torch.Generator().manual_seed(0))
            r = r / r.pow(2).mean().sqrt()
            c = torch.linspace(-1, 1, th * tw).reshape(th, tw)
            mark = (mark_tiles * pos[:, prefix:].pow(2).mean().sqrt() * c[:, :, None] * r).to(pos.dtype)
            grid = grid + mark.repeat_interleave(oh, 0).repeat_interleave(ow, 1)[None]
        grid = grid.reshape(1, gh * gw, -1)
        backbone.pos_embed = nn.Parameter(torch.cat([pos[:, :prefix], grid], 1))
        pe.img_size, pe.grid_size, pe.num_patches = tuple(hw), (gh, gw), gh * gw
        return backbone
    if not hasattr(backbone, "set_input_size"):
        raise ModelLoadError(f"{type(backbone).__name__} cannot change its input size to {hw}")
    backbone.set_input_size(img_size=tuple(hw))
    return backbone


def attach_spec(model, spec: InputSpec):
    model.edgevit_spec = spec
    return model


def checkpoint_in_dir(d: Path) -> Path:
    """The one checkpoint (``.safetensors``/``.pt``/``.pth``) in directory ``d``; :class:`ModelLoadError` naming
    what is there when there are none or several."""
    found = sorted(f for f in d.iterdir() if f.is_file() and f.name.endswith(CHECKPOINT_SUFFIXES))
    if len(found) == 1:
        log.info("%s is a directory: using the checkpoint inside it, %s", d, found[0].name)
        return found[0]
    if not found:
        raise ModelLoadError(f"{d} is a directory with no checkpoint in it (no {'/'.join(CHECKPOINT_SUFFIXES)} "
                             f"file); pass a checkpoint file, an edgevit model name or a timm name")
    raise ModelLoadError(f"{d} is a directory with {len(found)} checkpoints; pass one of them: "
                         f"{', '.join(str(f) for f in found)}")


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
    except Exception as exc:  # noqa: BLE001 - torch.load raises UnpicklingError, RuntimeError, EOFError, ...
        # torch's own message suggests weights_only=False, which would run code from the file: never relay it
        raise ModelLoadError(
            f"{path} is not a valid checkpoint ({type(exc).__name__} while reading it as a tensors-only torch file). "
            f"edgevit loads .pt/.pth files only as plain state dicts (torch.load(weights_only=True)); re-save the "
            f"weights with safetensors (safetensors.torch.save_file(model.state_dict(), 'model.safetensors')) or "
            f"torch.save(model.state_dict(), path)."
        ) from None
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


def _timm_model(name: str, *, pretrained: bool, num_classes: int | None, model_kwargs: dict | None = None):
    import timm

    if not timm.is_model(name):
        known = MODELS.names() + timm.list_models()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        err = ModelLoadError(
            f"unknown model '{name}': not an edgevit model ({', '.join(MODELS.names())}), not a timm model name, "
            f"and not a checkpoint file.{hint} See `edgevit list models`."
        )
        err.unknown_name = name  # the command line adds what it knows about other kinds of models (dual encoders)
        raise err
    kw = dict(model_kwargs or {})
    if num_classes is not None:
        kw["num_classes"] = num_classes
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
           num_classes: int | None = None, arch: str | None = None, model_kwargs: dict | None = None,
           packaged: bool = True):
    """Build a model in eval mode with its input spec attached.

    - an edgevit model name (``fmnist-vit``): built and loaded with its packaged weights (if it has any);
    - a timm name (``deit_tiny_patch16_224``): random init unless ``pretrained=True`` (needs a hub). Random
      initialisation is seeded by :func:`init_seed` of the name (recorded as ``model.edgevit_init_seed``), so every
      process builds the same weights;
    - a checkpoint path (``.safetensors``/``.pt``/``.pth``): the architecture comes from ``arch``, or from the
      ``arch`` metadata edgevit writes into safetensors files; a timm architecture's class count, input channels,
      patch and image size are read from the checkpoint's tensor shapes (:func:`timm_kwargs_from_state`);
    - ``checkpoint=`` loads those weights into the named architecture (strict; mismatches are listed);
    - ``packaged=False``: a registered edgevit model without its packaged weights (the seeded random
      initialisation; a from-scratch distillation student);
    - ``model_kwargs`` go to ``timm.create_model`` (they override what the checkpoint's shapes say).

    Raises :class:`ModelLoadError` for unknown names, unreadable or mismatching checkpoints.
    """
    if name_or_path is None:
        raise ModelLoadError("no model given: pass a model name or a checkpoint path")
    name = str(name_or_path)
    meta: dict = {}
    if name not in MODELS and (Path(name) / "dual_encoder.json").is_file():
        raise ModelLoadError(f"{name} is a dual image–text encoder (two towers), not a classifier: export its towers "
                             f"with `edgevit export onnx|openvino|tvm --model {name} --tower image|text|both "
                             f"--out DIR`, "
                             f"evaluate it with `edgevit eval --model {name} --task retrieval|zero-shot`, or fold it "
                             f"into a classifier with `edgevit vlm fold-classifier {name} --out FILE.safetensors`")
    if name not in MODELS and Path(name).is_dir():  # a stage folder (runs/x/00_load/): the checkpoint inside it
        name = str(checkpoint_in_dir(Path(name)))
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
    ckpt_state = None
    if checkpoint is not None and name not in MODELS:
        ckpt_state, _ = read_state_dict(checkpoint)
        try:
            inferred = timm_kwargs_from_state(name, ckpt_state)
        except Exception as exc:  # noqa: BLE001 - not a timm name: _timm_model below says so
            log.debug("could not read geometry of %s from %s: %s", name, checkpoint, exc)
            inferred = {}
        if num_classes is not None:
            inferred.pop("num_classes", None)
        model_kwargs = {**inferred, **(model_kwargs or {})}
        if inferred:
            log.info("%s: building %s with %s (read from the checkpoint's tensor shapes)", checkpoint, name,
                     ", ".join(f"{k}={v}" for k, v in inferred.items()))
    import torch

    seed = init_seed(name)
    if name in MODELS:
        entry = MODELS.get(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = entry.build()
        spec = entry.spec
        ck_spec = json.loads(read_state_dict(checkpoint)[1].get("input_spec", "null") or "null") \
            if checkpoint is not None and str(checkpoint).endswith(".safetensors") else None
        if ck_spec and tuple(ck_spec["input_size"][1:]) != tuple(spec.hw):  # e.g. a 28×56 pair-image tower
            fit_input_size(model, tuple(ck_spec["input_size"][1:]))
        n_cls = (ck_spec or {}).get("num_classes")
        if n_cls is not None and n_cls != getattr(model, "num_classes", n_cls) and hasattr(model, "reset_classifier"):
            model.reset_classifier(int(n_cls))  # e.g. a folded zero-shot classifier of other classes
        if checkpoint is None and packaged and entry.weights_path() is not None:
            wp = entry.weights_path()
            if not wp.exists():
                raise ModelLoadError(f"packaged weights of '{name}' are missing ({wp}); reinstall edgevit")
            state, _ = read_state_dict(wp)
            load_state_dict_strict(model, state, source=str(wp))
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _timm_model(name, pretrained=pretrained, num_classes=num_classes, model_kwargs=model_kwargs)
    if checkpoint is not None:
        state, meta = (ckpt_state, read_state_dict(checkpoint)[1]) if ckpt_state is not None else \
            read_state_dict(checkpoint)
        if meta.get(TRANSFORM_KEY):
            model = _apply_transform(model, meta, source=str(checkpoint))
        load_state_dict_strict(model, state, source=str(checkpoint))
        if "input_spec" in meta:
            spec = InputSpec.from_dict(json.loads(meta["input_spec"]))
    model.eval()
    model.edgevit_name = name
    model.edgevit_init_seed = seed
    # no checkpoint, no packaged weights, not pretrained: the weights are the seeded random initialisation
    model.edgevit_random_weights = checkpoint is None and not pretrained and (
        name not in MODELS or MODELS.get(name).weights_path() is None or not packaged)
    attach_spec(model, spec or input_spec_of(model))
    return model


def _apply_transform(model, meta: dict, *, source: str):
    import importlib

    name = meta[TRANSFORM_KEY]
    if name not in TRANSFORMS:
        raise ModelLoadError(f"{source} was written by an unknown model transform '{name}' (known: "
                             f"{', '.join(sorted(TRANSFORMS))}); update edgevit")
    module, _, attr = TRANSFORMS[name].partition(":")
    return getattr(importlib.import_module(module), attr)(model, meta)


def save_checkpoint(model, path: str | Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model``'s weights as safetensors with its architecture name and input spec as metadata (plus
    ``metadata``, string values: a transform's :data:`TRANSFORM_KEY` and its config), atomically
    (:func:`edgevit.fileio.atomic_output`)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "arch": str(getattr(model, "edgevit_name", "")),
            "input_spec": json.dumps(input_spec_of(model).to_dict()), **(metadata or {})}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    from ..fileio import atomic_output

    with atomic_output(path) as tmp:  # all-or-nothing: a killed run never leaves a truncated checkpoint
        save_file(state, str(tmp), metadata=meta)
        canonical_safetensors_header(tmp)
    return path


def canonical_safetensors_header(path: str | Path) -> None:
    """Rewrite a safetensors file's JSON header with its keys sorted, in place, so equal tensors and metadata give
    equal bytes (the writer emits the metadata map in hash order, which changes from one process to the next).
    The header keeps its length (the same JSON, reordered), so the tensor offsets stay valid; a header that would
    not fit is left as written."""
    import struct

    with open(path, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        raw = f.read(n)
        header = json.loads(raw)
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > n:
            return
        f.seek(8)
        f.write(text + b" " * (n - len(text)))


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def list_models(include_timm: bool = False) -> list[dict]:
    rows = [{"name": n, "source": "edgevit", "weights": bool(e.weights), "description": e.description}
            for n, e in MODELS.items()]
    if include_timm:
        import timm

        rows += [{"name": n, "source": "timm", "weights": False, "description": ""} for n in timm.list_models()]
    return rows
