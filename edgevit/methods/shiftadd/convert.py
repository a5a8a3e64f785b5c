"""Convert a trained timm ViT to ShiftAddViT form, switch between training and deploy forms, save and load.

- :func:`convert` (a new model; ``inplace=False``): MatAdd attention in every block except ``softmax_blocks``
  (KSH hash fitted once on real images), MLP linears as shift linears or a [dense, shift] mixture of experts;
- :func:`reparameterize` / :func:`to_trainable`: every :class:`ShiftLinear` ↔ :class:`ShiftLinearDeploy`;
- :func:`save_shiftadd` writes ``model.safetensors`` (deploy form) with the architecture, the input spec and the
  conversion config as metadata; :func:`edgevit.models.create` loads it back (through :func:`rebuild`), so every
  edgevit command that takes ``--model FILE`` takes a converted model.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
from torch import nn

from ...errors import ConfigError, ModelLoadError
from .attention import MatAddAttention
from .config import ConvertConfig
from .moe import MoEMlp, shift_mlp
from .shift import ShiftLinear, ShiftLinearDeploy

log = logging.getLogger(__name__)

TRANSFORM = "shiftadd"  # value of the checkpoint metadata key edgevit.models.TRANSFORM_KEY
CONFIG_KEY = "edgevit.shiftadd"  # checkpoint metadata: the ConvertConfig (JSON)


def _blocks(model: nn.Module) -> nn.ModuleList:
    """The ViT's blocks, checked to be timm ViT blocks (``attn`` with ``qkv``/``proj``, ``mlp`` with ``fc1``/
    ``fc2``). Raises :class:`ConfigError` naming the module types found otherwise."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or len(blocks) == 0:
        kinds = sorted({type(m).__name__ for m in model.children()})
        raise ConfigError(f"shiftadd converts timm Vision Transformers (a 'blocks' list of ViT attention blocks); "
                          f"{type(model).__name__} has none (its top-level modules are: {', '.join(kinds)})")
    bad = []
    for i, blk in enumerate(blocks):
        attn, mlp = getattr(blk, "attn", None), getattr(blk, "mlp", None)
        ok_attn = isinstance(attn, MatAddAttention) or (
            attn is not None and isinstance(getattr(attn, "qkv", None), nn.Linear)
            and isinstance(getattr(attn, "proj", None), nn.Linear) and hasattr(attn, "num_heads")
            and all(isinstance(getattr(attn, n, nn.Identity()), nn.Identity) for n in ("q_norm", "k_norm")))
        ok_mlp = mlp is not None and (isinstance(mlp, MoEMlp) or all(
            isinstance(getattr(mlp, n, None), (nn.Linear, ShiftLinear, ShiftLinearDeploy)) for n in ("fc1", "fc2")))
        if not (ok_attn and ok_mlp):
            bad.append(f"blocks.{i}: {type(blk).__name__}(attn={type(attn).__name__}, mlp={type(mlp).__name__})")
    if bad:
        raise ConfigError(
            "shiftadd converts ViT attention blocks (timm Block with Attention(qkv, proj, no q/k norm) and Mlp(fc1, "
            f"fc2)); found {len(bad)} other block(s): {'; '.join(bad[:4])}{' …' if len(bad) > 4 else ''}. Use a "
            "timm vit_*/deit_* model or edgevit's fmnist-vit family")
    return blocks


def _softmax_set(config: ConvertConfig, depth: int) -> set[int]:
    out = set()
    for i in config.softmax_blocks:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise ConfigError(f"shiftadd.softmax_blocks: block {i} does not exist (the model has {depth} blocks: "
                              f"0..{depth - 1} or -{depth}..-1)")
        out.add(j)
    return out


def _grid(model: nn.Module) -> tuple[tuple[int, int], int]:
    pe = getattr(model, "patch_embed", None)
    grid = getattr(pe, "grid_size", None)
    if grid is None:
        raise ConfigError(f"shiftadd needs the patch grid of {type(model).__name__} (patch_embed.grid_size) for the "
                          f"depthwise convolution on V")
    return (int(grid[0]), int(grid[1])), int(getattr(model, "num_prefix_tokens", 1))


@torch.no_grad()
def _block_inputs(model: nn.Module, images: torch.Tensor, batch_size: int = 32) -> list[torch.Tensor]:
    """Each block's attention input (after ``norm1``) on ``images``."""
    blocks = model.blocks
    found: list[list[torch.Tensor]] = [[] for _ in blocks]
    hooks = [blk.attn.register_forward_pre_hook(lambda _m, args, i=i: found[i].append(args[0].detach()))
             for i, blk in enumerate(blocks)]
    try:
        was = model.training
        model.eval()
        for s in range(0, len(images), batch_size):
            model(images[s:s + batch_size])
        model.train(was)
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(f) for f in found]


def convert(model: nn.Module, images: torch.Tensor | None = None, *, config: ConvertConfig | None = None,
            fit: bool = True) -> nn.Module:
    """A ShiftAddViT copy of a trained timm ViT (training form: :class:`ShiftLinear`, straight-through).

    ``images``: preprocessed real images ``(n, C, H, W)`` on which each MatAdd block's KSH hash is fitted (needed
    when ``config.attention == "matadd"`` and ``fit``); ``fit=False`` builds the structure only (to load weights
    into). MoE latency weights are ``config.alpha`` or, when null, measured here
    (:func:`~edgevit.methods.shiftadd.latency.measure_expert_alpha`). Raises :class:`ConfigError` for a model
    whose blocks are not ViT attention blocks (naming the types found) or for missing images.

    Recipe step 2: a model converted with ``mlp="dense"`` (MatAdd attention, finetuned) converts again with
    ``mlp="shift"|"moe"``; its attention is kept as is and its recorded attention settings carry over."""
    config = config or ConvertConfig()
    blocks = _blocks(model)
    previous = getattr(model, "edgevit_shiftadd", None)
    attention_done = False
    if previous is not None and previous.get("mlp") == "dense" and config.mlp != "dense":
        # recipe step 2: MLPs of a model whose attention was converted (and finetuned) with --mlp dense
        config = ConvertConfig(**{**previous, "mlp": config.mlp, "alpha": config.alpha})
        attention_done = True
        log.info("converting the MLPs of a converted model (attention %s, softmax kept in %s, as recorded in it)",
                 config.attention, config.softmax_blocks or "none")
    elif any(isinstance(b.attn, MatAddAttention) or isinstance(b.mlp, MoEMlp) for b in blocks) or any(
            isinstance(m, (ShiftLinear, ShiftLinearDeploy)) for m in model.modules()):
        raise ConfigError("the model is already converted to ShiftAddViT form; convert the dense model (a model "
                          "converted with --mlp dense takes a second convert with --mlp shift|moe)")
    depth = len(blocks)
    keep = _softmax_set(config, depth)
    if config.attention == "matadd" and fit and images is None and not attention_done:
        raise ConfigError("shiftadd convert needs real images to fit the KSH hash (images=...)")
    out = copy.deepcopy(model)
    grid, prefix = _grid(out)
    inputs = _block_inputs(model, images) if config.attention == "matadd" and fit and not attention_done else None
    alpha = tuple(config.alpha) if config.alpha is not None else None
    if config.mlp == "moe" and alpha is None:
        if fit:
            from .latency import measure_expert_alpha

            alpha = measure_expert_alpha(out.blocks[0].mlp, tokens=grid[0] * grid[1] + prefix)["alpha"]
        else:
            alpha = (6.0, 4.0)  # placeholder; the checkpoint's buffer overwrites it
    if alpha is not None and len(alpha) != 2:
        raise ConfigError(f"shiftadd.alpha: give two latency weights [dense, shift], got {list(alpha)}")
    for i, blk in enumerate(out.blocks):
        if config.attention == "matadd" and i not in keep and not attention_done:
            attn = MatAddAttention.from_timm(blk.attn, grid=grid, num_prefix_tokens=prefix, bits=config.bits,
                                             anchors=config.anchors)
            if inputs is not None:
                attn.fit_hash(inputs[i], seed=config.seed + 1000 * i)
            blk.attn = attn
        if config.mlp == "shift":
            blk.mlp = shift_mlp(blk.mlp)
        elif config.mlp == "moe":
            blk.mlp = MoEMlp.from_mlp(blk.mlp, alpha=alpha)
    out.edgevit_shiftadd = config.to_dict() | ({"alpha": list(alpha)} if alpha is not None else {})
    for attr in ("edgevit_name", "edgevit_spec", "edgevit_init_seed"):
        if hasattr(model, attr):
            setattr(out, attr, getattr(model, attr))
    log.log(logging.INFO if fit else logging.DEBUG, "converted %d blocks: attention %s (softmax kept in %s), mlp %s",
            depth, config.attention, sorted(keep) or "none", config.mlp)
    return out.eval()


def _swap(model: nn.Module, src: type, fn) -> nn.Module:
    for name, child in list(model.named_children()):
        if isinstance(child, src):
            setattr(model, name, fn(child))
        else:
            _swap(child, src, fn)
    return model


def _copy(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, MoEMlp):
            m.reset_stats()
    return copy.deepcopy(model)


def reparameterize(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Every :class:`ShiftLinear` → :class:`ShiftLinearDeploy` (int8 sign and shift); same outputs."""
    m = model if inplace else _copy(model)
    return _swap(m, ShiftLinear, lambda c: c.reparameterize())


def to_trainable(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Every :class:`ShiftLinearDeploy` → :class:`ShiftLinear` (latent weight ``s·2^p``); same outputs."""
    m = model if inplace else _copy(model)
    return _swap(m, ShiftLinearDeploy, lambda c: c.to_trainable())


def use_kernels(model: nn.Module, on: bool = True) -> int:
    """Make the shift linears and MatAdd attentions of ``model`` call the custom kernels ``edgevit::matshift`` /
    ``edgevit::matmask`` (:mod:`edgevit.methods.shiftadd.kernels`; ``on``) or their float forms; returns how many
    modules were switched (0: the model has no ShiftAddViT layers)."""
    n = 0
    for m in model.modules():
        if isinstance(m, (ShiftLinearDeploy, MatAddAttention)):
            m.use_kernels = on
            n += 1
    return n


def is_shiftadd(model: nn.Module) -> bool:
    """Whether ``model`` holds any ShiftAddViT module (shift linears, MatAdd attention, MoE)."""
    return any(isinstance(m, (ShiftLinear, ShiftLinearDeploy, MatAddAttention, MoEMlp)) for m in model.modules())


def save_shiftadd(model: nn.Module, path: str | Path) -> Path:
    """Write the deploy form of ``model`` as safetensors (``model.safetensors`` inside ``path`` when it is a folder)
    with the architecture, input spec and conversion config in the metadata; ``edgevit.models.create`` reads it."""
    from ...models import TRANSFORM_KEY, save_checkpoint

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / "model.safetensors"
    cfg = getattr(model, "edgevit_shiftadd", None)
    if cfg is None:
        raise ConfigError("not a converted ShiftAddViT model (no conversion config); run convert() first")
    deploy = reparameterize(model)
    return save_checkpoint(deploy, path, metadata={TRANSFORM_KEY: TRANSFORM, CONFIG_KEY: json.dumps(cfg)})


def rebuild(model: nn.Module, meta: dict) -> nn.Module:
    """The deploy-form structure of a saved ShiftAddViT over its dense base ``model`` (weights loaded after this by
    :func:`edgevit.models.create`). Raises :class:`ModelLoadError` when the metadata's config is unreadable."""
    try:
        raw = json.loads(meta[CONFIG_KEY])
        cfg = ConvertConfig(**raw)
    except (KeyError, ValueError, ConfigError) as exc:
        raise ModelLoadError(f"the checkpoint's ShiftAddViT metadata ({CONFIG_KEY}) is missing or unreadable: {exc}; "
                             f"re-run `edgevit shiftadd convert`") from exc
    out = reparameterize(convert(model, None, config=cfg, fit=False), inplace=True)
    out.edgevit_shiftadd = raw
    return out
