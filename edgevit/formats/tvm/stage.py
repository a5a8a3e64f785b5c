"""Stage ``export_tvm``: the torch artefact → a TVM library (``model.so``) tuned with MetaSchedule, parity checked.

Recipe entry::

    - stage: export_tvm
      target: llvm            # this CPU (LLVM host detection); or a dict {kind: llvm, mcpu: x86-64-v3}, or cuda
      trials: 1000            # MetaSchedule trials; 0 = untuned (slow, warned); the database is cached and reused
      batch: 1                # static batch size the library is compiled for
      parity_samples: 64      # real images of the recipe's evaluation split for the parity check

The next stages see a ``tvm`` artefact; ``eval`` and ``profile`` run it through the ``tvm`` runtime when the
recipe's ``runtimes`` lists it — with their batch sizes set to the compiled one (``eval: batch_size: 1``,
``profile: batch: [1]``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ...stage import Stage, StageContext, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class ExportTvmStage(Stage):
    """Compile the torch model with TVM (Relax) for a target, tune it, check it against torch on real images."""

    name = "export_tvm"
    description = "torch → TVM library (.so) for a CPU/GPU target, MetaSchedule-tuned (cached), parity vs torch"
    consumes = ("torch",)
    produces = ("tvm",)

    @dataclass
    class Config:
        target: str | dict = field(default="llvm", metadata={
            "help": "llvm (this CPU), cuda, or a TVM target dict such as {kind: llvm, mcpu: x86-64-v3}"})
        mcpu: str | None = field(default=None, metadata={"help": "override the llvm target's CPU (e.g. x86-64-v3)"})
        trials: int = field(default=256, metadata={"help": "MetaSchedule trials (0 = untuned: slow)"})
        batch: int = field(default=1, metadata={"help": "static batch size of the library"})
        work_dir: str | None = field(default=None, metadata={
            "help": "tuning cache root (default $EDGEVIT_TVM_CACHE or ~/.cache/edgevit/tvm)"})
        retune: bool = field(default=False, metadata={"help": "ignore a cached tuning database"})
        tuning_timeout_s: float = field(default=60.0, metadata={"help": "seconds to build or run one tuning candidate"})
        tolerance: float | None = field(default=None, metadata={"help": "max abs logit difference allowed"})
        parity_samples: int = field(default=64, metadata={"help": "real images for the parity check"})

        def validate(self, path: str) -> None:
            from ...errors import ConfigError

            if self.trials < 0:
                raise ConfigError(f"{path}.trials: must be ≥ 0 (0 = untuned), got {self.trials}")
            if self.batch < 1:
                raise ConfigError(f"{path}.batch: must be ≥ 1, got {self.batch}")
            if self.parity_samples < 1:
                raise ConfigError(f"{path}.parity_samples: must be ≥ 1, got {self.parity_samples}")
            if isinstance(self.target, dict) and "kind" not in self.target:
                raise ConfigError(f"{path}.target: a target dict needs 'kind' (e.g. {{kind: llvm, mcpu: x86-64-v3}})")

    def run(self, ctx: StageContext, config: Config) -> StageOutput:
        from ...data import preprocess
        from .export import export_tvm

        src = ctx.latest("torch") or ctx.source_artifact()
        images = ctx.dataset(limit=config.parity_samples).images
        result = export_tvm(src, ctx.out_dir, target=config.target, mcpu=config.mcpu,
                            trials=config.trials, batch=config.batch, work_dir=config.work_dir, retune=config.retune,
                            tuning_timeout_s=config.tuning_timeout_s, parity_images=preprocess(images, src.spec),
                            tolerance=config.tolerance)
        return StageOutput.from_export(result)
