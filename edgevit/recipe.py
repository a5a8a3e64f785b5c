"""Recipes: a YAML file validated into typed configs — model, data, ordered stages, runtimes, targets, output."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, model_validator

from . import config as cfg
from .errors import ConfigError

RECIPE_VERSION = 1


class ModelConfig(cfg.ConfigModel):
    """The recipe's ``model`` section (a bare string means ``{name: ...}``)."""

    name: str = Field(description="edgevit model name, timm model name, or a checkpoint path")
    checkpoint: str | None = Field(None, description="weights (.safetensors, or .pt/.pth) for the model")
    arch: str | None = Field(None, description="architecture of a checkpoint given as name")
    pretrained: bool = Field(False, description="download timm pretrained weights (needs a hub)")
    num_classes: int | None = Field(None, ge=0, description="classes of a timm model's head")


class DataConfig(cfg.ConfigModel):
    """The recipe's ``data`` section: the dataset every stage reads unless it names its own."""

    name: str = Field("fashion-mnist", description="'fashion-mnist' or an ImageFolder directory")
    data_dir: str | None = Field(None, description="directory of the Fashion-MNIST IDX files")
    eval_split: str = Field("test", description="split for evaluation")
    calib_split: str = Field("train", description="split for calibration and training")
    limit: int | None = Field(None, description="use only the first N samples (a positive number)")
    batch_size: int = Field(100, ge=1, description="evaluation batch size")

    @model_validator(mode="after")
    def _check(self):
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"limit: must be a positive number of samples, got {self.limit}")
        return self


@dataclass
class StageEntry:
    """One step of the recipe: the registered stage's name and its validated config."""

    stage: str
    config: Any
    id: str

    def to_dict(self) -> dict:
        return {"stage": self.stage, **cfg.to_dict(self.config)}


@dataclass
class Recipe:
    name: str
    model: ModelConfig
    data: DataConfig
    stages: list[StageEntry]
    runtimes: list[str] = field(default_factory=lambda: ["onnxruntime"])
    targets: list[str] = field(default_factory=list)
    output: str | None = None
    version: int = RECIPE_VERSION

    def to_dict(self) -> dict:
        return {"version": self.version, "name": self.name, "model": cfg.to_dict(self.model),
                "data": cfg.to_dict(self.data), "runtimes": list(self.runtimes), "targets": list(self.targets),
                "output": self.output, "stages": [s.to_dict() for s in self.stages]}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def stage_hashes(self) -> list[str]:
        """One hash per stage over everything it depends on: model, data and every stage up to it."""
        from .stages import STAGES

        base = {"version": self.version, "model": cfg.to_dict(self.model), "data": cfg.to_dict(self.data),
                "runtimes": list(self.runtimes), "targets": list(self.targets)}
        h = hashlib.sha256(json.dumps(base, sort_keys=True).encode())
        out = []
        for s in self.stages:
            h.update(json.dumps({"stage": s.to_dict(), "v": STAGES.get(s.stage).version}, sort_keys=True).encode())
            out.append(h.copy().hexdigest()[:16])
        return out


_TOP_KEYS = ("version", "name", "model", "data", "stages", "runtimes", "targets", "output")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats without a dot (``1e-3``, ``5E4``), which PyYAML's YAML 1.1 rules
    leave as strings (so ``tolerance: 1e-3`` failed with "expected float | null, got '1e-3'")."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def parse_value(text: str) -> Any:
    """A ``--set`` value: YAML scalar/list syntax (``3``, ``true``, ``[1, 8]``, ``null``, ``fp16``)."""
    return _yaml_load(text)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``--set a.b.0.c=value`` overrides to the raw recipe dict (list indices are numbers)."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set stages.1.opset=17")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = raw
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {key}: '{where}' is not an index of a list of {len(node)} entries")
                if last:
                    node[int(part)] = parse_value(value)
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = parse_value(value)
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(f"--set {key}: '{'.'.join(parts[:i])}' is a value, not a mapping or list")
    return raw


def load_raw(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"recipe {path} does not exist")
    if path.is_dir():
        yamls = sorted(str(f) for f in path.glob("*.y*ml"))[:5]
        raise ConfigError(f"recipe {path} is a directory; give a recipe YAML file"
                          + (f" (e.g. {', '.join(yamls)})" if yamls else " (e.g. examples/recipes/quickstart.yaml)"))
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"recipe {path} cannot be read as text ({type(exc).__name__}: {exc})") from exc
    try:
        raw = _yaml_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path}: the top level must be a mapping with keys {', '.join(_TOP_KEYS)}")
    return raw


def from_raw(raw: dict, *, source: str = "<recipe>") -> Recipe:
    """Validate a raw recipe dict. Every error names its key path and the allowed values."""
    from .runtimes import RUNTIMES
    from .stages import STAGES

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a recipe is a mapping with keys {', '.join(_TOP_KEYS)}")
    unknown = [k for k in raw if k not in _TOP_KEYS]
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {', '.join(map(repr, unknown))}; "
                          f"allowed keys: {', '.join(_TOP_KEYS)}")
    version = raw.get("version", RECIPE_VERSION)
    if version != RECIPE_VERSION:
        raise ConfigError(f"version: this edgevit reads recipe version {RECIPE_VERSION}, the file says {version!r}")
    if "model" not in raw:
        raise ConfigError("model: required key is missing (e.g. model: {name: fmnist-vit})")
    model = cfg.from_dict(ModelConfig, raw["model"] if isinstance(raw["model"], dict) else {"name": raw["model"]},
                          "model")
    data = cfg.from_dict(DataConfig, raw.get("data") or {}, "data")
    runtimes = cfg.coerce(list[str], raw.get("runtimes", ["onnxruntime"]), "runtimes")
    for i, r in enumerate(runtimes):
        if r not in RUNTIMES:
            raise ConfigError(f"runtimes.{i}: {RUNTIMES.unknown_message(r)}")
    targets = cfg.coerce(list[str], raw.get("targets", []), "targets")
    if targets:
        from .profiling.hardware import HARDWARE

        for i, t in enumerate(targets):
            if t not in HARDWARE:
                raise ConfigError(f"targets.{i}: {HARDWARE.unknown_message(t)}")
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError("stages: expected a non-empty list of stages, e.g. [{stage: eval}, {stage: export_onnx}]")
    stages, seen = [], {}
    for i, entry in enumerate(stages_raw):
        path = f"stages.{i}"
        if isinstance(entry, str):
            entry = {"stage": entry}
        if not isinstance(entry, dict) or "stage" not in entry:
            raise ConfigError(f"{path}: each stage is a mapping with a 'stage' key naming one of: "
                              f"{', '.join(STAGES.names())}")
        name = entry["stage"]
        if name not in STAGES:
            raise ConfigError(f"{path}.stage: {STAGES.unknown_message(str(name))}")
        stage_cls = STAGES.get(name)
        body = {k: v for k, v in entry.items() if k != "stage"}
        conf = cfg.from_dict(stage_cls.Config, body, path)
        seen[name] = seen.get(name, 0) + 1
        sid = f"{i + 1:02d}_{name}"
        stages.append(StageEntry(stage=name, config=conf, id=sid))
        if name == "export_onnx":  # the exported file must run on every runtime the recipe evaluates/profiles on
            from .formats.onnx.opsets import check_opset

            check_opset(conf.opset, what=f"{path}.opset", runtimes=runtimes)
        for j, r in enumerate(getattr(conf, "runtimes", None) or []):
            if r not in RUNTIMES:
                raise ConfigError(f"{path}.runtimes.{j}: {RUNTIMES.unknown_message(r)}")
        r = getattr(conf, "runtime", None)
        if r is not None and r not in RUNTIMES:
            raise ConfigError(f"{path}.runtime: {RUNTIMES.unknown_message(r)}")
    from .stage import STAGES, check_chain

    check_chain([(f"stages.{i}", s.stage, s.config) for i, s in enumerate(stages)],
                start=STAGES.get("load").start_kinds(model))
    name = raw.get("name") or Path(source).stem
    if not isinstance(name, str):
        raise ConfigError(f"name: expected a string, got {name!r}")
    output = raw.get("output")
    if output is not None and not isinstance(output, str):
        raise ConfigError(f"output: expected a directory path string, got {output!r}")
    return Recipe(name=name, model=model, data=data, stages=stages, runtimes=runtimes, targets=targets,
                  output=output, version=version)


def recipe_model() -> type[cfg.ConfigModel]:
    """A pydantic model of the whole recipe file, built from the registries (for the JSON schema).

    Top-level keys as :data:`_TOP_KEYS`; ``stages`` items are a discriminated union of every registered stage's
    ``Config`` keyed by ``stage`` (or a bare stage name); ``runtimes`` and ``targets`` are enums of the registered
    runtimes and hardware profiles. :func:`from_raw` remains the validator (its messages name key paths).
    """
    from pydantic import create_model

    from .profiling.hardware import HARDWARE
    from .runtimes import RUNTIMES
    from .stages import STAGES

    entries = []
    for name, stage_cls in STAGES.items():
        model = create_model(f"stage_{name}", __base__=stage_cls.Config,
                             __doc__=(stage_cls.__doc__ or stage_cls.description).strip(),
                             stage=(Literal[name], Field(description=stage_cls.description)))
        entries.append(model)
    stage_union = Annotated[Union[tuple(entries)], Field(discriminator="stage")]  # noqa: UP007
    stage_name = Literal[tuple(STAGES.names())]
    runtime_name = Literal[tuple(RUNTIMES.names())]
    target_name = Literal[tuple(HARDWARE.names())]
    return create_model(
        "Recipe", __base__=cfg.ConfigModel,
        __doc__="An edgevit recipe: model, data, ordered stages, runtimes, targets, output "
                "(`edgevit compress RECIPE`).",
        version=(Literal[RECIPE_VERSION], Field(RECIPE_VERSION, description="recipe format version")),
        name=(str | None, Field(None, description="run name (default: the file's stem)")),
        model=(ModelConfig | str, Field(description="the model to start from (a name is short for {name: ...})")),
        data=(DataConfig, Field(default_factory=DataConfig, description="the dataset the stages read")),
        stages=(list[stage_union | stage_name], Field(min_length=1, description="the steps, in order")),
        runtimes=(list[runtime_name], Field(["onnxruntime"], description="runtimes for eval and profile")),
        targets=(list[target_name], Field([], description="hardware profiles for roofline predictions")),
        output=(str | None, Field(None, description="run directory (default runs/<name>)")),
    )


def recipe_schema() -> dict:
    """JSON schema (draft 2020-12) of a recipe file, for editors (YAML language servers) and validators."""
    schema = recipe_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "edgevit recipe"
    return schema


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override (``--set``) and validate a recipe file."""
    raw = apply_overrides(load_raw(path), overrides or [])
    return from_raw(raw, source=str(path))
