"""Learning-rate schedules shared by the fine-tuning methods (early exits, shift/add)."""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(total: int, warmup_fraction: float = 0.05) -> Callable[[int], float]:
    """The LR multiplier per optimiser step for ``torch.optim.lr_scheduler.LambdaLR``: linear warm-up over the first
    ``warmup_fraction`` of ``total`` steps (at least one step), then a half cosine from 1 to 0 at step ``total``."""
    warm = max(1, int(total * warmup_fraction))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return f
