"""The input spec that travels with every model and artefact."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import InputSpecError

SPEC_KEY = "edgevit.input_spec"  # metadata key (ONNX metadata_props, IR rt_info, side files) holding InputSpec JSON
SOURCE_KEY = "edgevit.source"  # metadata key holding the source model name


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: ``input_size`` is (C, H, W); batches are NCHW float32, already normalised."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    num_classes: int | None = None
    input_name: str = "input"
    output_name: str = "logits"
    dtype: str = "float32"
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def channels(self) -> int:
        return self.input_size[0]

    @property
    def hw(self) -> tuple[int, int]:
        return self.input_size[1], self.input_size[2]

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The name of each class (``extra["class_names"]``), or None when the model does not say."""
        names = self.extra.get("class_names")
        return tuple(str(n) for n in names) if names else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        d = dict(d)
        d["input_size"] = tuple(int(v) for v in d["input_size"])
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)

    def check_batch(self, batch: np.ndarray, *, where: str = "input") -> np.ndarray:
        """Raise :class:`InputSpecError` unless ``batch`` is an NCHW array of this spec's shape and dtype."""
        if not isinstance(batch, np.ndarray):
            raise InputSpecError(f"{where}: expected a numpy array, got {type(batch).__name__}")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(self.input_size):
            raise InputSpecError(
                f"{where}: expected a batch of shape (N, {', '.join(map(str, self.input_size))}) (NCHW), got "
                f"{tuple(batch.shape)}. Preprocess images with edgevit.data.preprocess(images, spec) first."
            )
        if batch.dtype != np.dtype(self.dtype):
            raise InputSpecError(
                f"{where}: expected dtype {self.dtype}, got {batch.dtype}; convert with batch.astype(np.{self.dtype})"
            )
        return batch

    def example(self, batch: int = 1, seed: int = 0) -> np.ndarray:
        """A random batch of the right shape (for tracing only; never for calibration or accuracy)."""
        return np.random.default_rng(seed).standard_normal((batch, *self.input_size)).astype(self.dtype)
