"""Losses for dual encoders: CLIP, DCD (specs/methods.md §4), TinyCLIP affinity mimicking (§5).

Score matrices are scaled similarities ``[B, M]``: row i = image i against M texts, whose first B columns are the
images' own captions in order (column i is image i's positive); further columns are extra (hard negative)
captions. ``false_neg`` (bool ``[B, M]``, optional, from :func:`false_negatives`) marks columns that say the same as
row i's positive (another image's identical caption, or another template of the same content): they are left out of
row i's negatives in every loss here, instead of being pushed away from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DCD_CANDIDATES = 8  # the positive + the teacher's 7 hardest negatives (DCD reference)
DCD_ALPHA = 0.2  # weight of the KD term
DCD_T = 1.0
DCD_POOL = 31  # F: random negatives per row the teacher picks its hard negatives from (the positive + F scored)


def false_negatives(row_keys: list, col_keys: list) -> torch.Tensor:
    """bool ``[B, M]``: True where column j's text says the same as row i's positive (equal content keys, e.g.
    :meth:`edgevit.data.captions.CaptionDataset.content_key`) and j ≠ i. ``row_keys``: B keys (the positives),
    ``col_keys``: M keys (the columns; the first B are the positives)."""
    ids: dict = {}
    rows = torch.tensor([ids.setdefault(k, len(ids)) for k in row_keys])
    cols = torch.tensor([ids.setdefault(k, len(ids)) for k in col_keys])
    same = rows[:, None] == cols[None, :]
    same[torch.arange(len(rows)), torch.arange(len(rows))] = False
    return same


def _mask(logits: torch.Tensor, false_neg: torch.Tensor | None) -> torch.Tensor:
    return logits if false_neg is None else logits.masked_fill(false_neg.to(logits.device), float("-inf"))


def clip_loss(logits: torch.Tensor, false_neg: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric InfoNCE on ``[B, M]`` (M ≥ B): image→text over all M texts, text→image over the B
    positives' columns, without the ``false_neg`` columns. Mean over the batch, averaged over both directions."""
    b = logits.shape[0]
    target = torch.arange(b, device=logits.device)
    masked = _mask(logits, false_neg)
    return 0.5 * (F.cross_entropy(masked, target) + F.cross_entropy(masked[:, :b].t(), target))


def candidates(teacher: torch.Tensor, n: int = DCD_CANDIDATES, false_neg: torch.Tensor | None = None, *,
               pool: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """int64 ``[B, n']``: per row the positive (column i) then the ``n' − 1`` columns the TEACHER scores highest
    among ``pool`` (F) true negatives drawn at random from the row (all of them when ``pool`` is None; ``false_neg``
    columns are not negatives): DCD's "positive + F random negatives, the teacher's n − 1 hardest of them".
    ``teacher``: ``[B, M]`` scores; ``n' = min(n, 1 + pool, 1 + the fewest true negatives of any row)``."""
    b, m = teacher.shape
    masked = _mask(teacher.detach(), false_neg).clone()
    rows = torch.arange(b, device=teacher.device)
    masked[rows, rows] = float("-inf")
    valid = torch.isfinite(masked)
    fewest = int(valid.sum(1).min())  # true negatives of the poorest row
    n = min(n, 1 + fewest, 1 + (pool if pool is not None else m))
    if pool is not None and pool < m - 1:
        draw = torch.rand(b, m, generator=generator).to(teacher.device).masked_fill(~valid, -1.0)
        drawn = draw.topk(min(pool, fewest), dim=1).indices  # F random true negatives per row
        hard = drawn.gather(1, masked.gather(1, drawn).topk(n - 1, dim=1).indices)
    else:
        hard = masked.topk(n - 1, dim=1).indices
    return torch.cat([rows[:, None], hard], 1)


def dcd_weights(teacher_cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ĥ, w)`` of DCD from the teacher's candidate scores ``[B, n]``: ``p = softmax``, ``h_i = Σ p log p``
    (≤ 0), ``ĥ_i = h_i / Σ_batch h`` (sums to 1), ``w = softmax_i((1 − ĥ_i)²)`` (the KD weights; larger for
    samples the teacher is confident on)."""
    p = teacher_cand.softmax(1)
    h = (p * p.clamp_min(1e-12).log()).sum(1)
    h_hat = h / h.sum().clamp(max=-1e-12)
    w = ((1 - h_hat) ** 2).softmax(0)
    return h_hat.detach(), w.detach()


def dcd_loss_rows(student: torch.Tensor, teacher: torch.Tensor, *, n: int = DCD_CANDIDATES, alpha: float = DCD_ALPHA,
                  temperature: float = DCD_T, false_neg: torch.Tensor | None = None, pool: int | None = None,
                  generator: torch.Generator | None = None, center: bool = False,
                  ce: str = "bce") -> tuple[torch.Tensor, dict]:
    """DCD on one direction. ``student``, ``teacher``: ``[B, M]`` scores (row i's positive at column i).

    Candidates are picked by the teacher among ``pool`` random true negatives (:func:`candidates`); BOTH score
    sets are gathered with the same (the student's) candidate indices, so candidate j means the same caption for
    both, wherever the positive ranks for the teacher. ``L_kd = T² Σ_i w_i · mean_j (g_ij)²`` with
    ``g = s/T − t/T`` (a PER-SAMPLE MSE: with a batch-mean MSE the weights would not matter), minus its row mean
    when ``center`` (a dual encoder's similarity level is arbitrary). ``L_ce = Σ_i ĥ_i · ℓ_i`` with ``ℓ_i`` =
    ``BCEWithLogits(s_i, [1, 0, …, 0])`` over the candidates (``ce="bce"``, the cross-encoder DCD) or the InfoNCE of
    the whole row without its false negatives (``ce="infonce"``). ``L = α L_kd + (1 − α) L_ce``. Returns
    ``(loss, parts)``; raises ValueError for another ``ce``."""
    idx = candidates(teacher, n, false_neg, pool=pool, generator=generator)
    s = student.gather(1, idx)
    t = teacher.detach().gather(1, idx)
    h_hat, w = dcd_weights(t)
    gap = s / temperature - t / temperature
    if center:  # a row's level is free in a dual encoder: match the scores relative to the row's candidates
        gap = gap - gap.mean(1, keepdim=True)
    mse = (gap**2).mean(1)
    l_kd = temperature**2 * (w * mse).sum()
    if ce == "bce":
        target = torch.zeros_like(s)
        target[:, 0] = 1.0
        per_row = F.binary_cross_entropy_with_logits(s, target, reduction="none").mean(1)
    elif ce == "infonce":  # the dual encoder's own task loss per row: softmax over the whole row (true negatives)
        per_row = F.cross_entropy(_mask(student, false_neg), torch.arange(len(student), device=student.device),
                                  reduction="none")
    else:
        raise ValueError(f"dcd ce must be 'bce' or 'infonce', got {ce!r}")
    l_ce = (h_hat * per_row).sum()
    loss = alpha * l_kd + (1 - alpha) * l_ce
    return loss, {"kd": float(l_kd.detach()), "ce": float(l_ce.detach())}


def dcd_loss(student: torch.Tensor, teacher: torch.Tensor, false_neg: torch.Tensor | None = None,
             **kw) -> tuple[torch.Tensor, dict]:
    """DCD on in-batch similarity matrices, both directions averaged: image→text on ``[B, M]``, text→image on the
    transposed positive block ``[B, B]``."""
    b = student.shape[0]
    fn_t = None if false_neg is None else false_neg[:, :b].t()
    l1, p1 = dcd_loss_rows(student, teacher, false_neg=false_neg, **kw)
    l2, p2 = dcd_loss_rows(student[:, :b].t(), teacher[:, :b].t(), false_neg=fn_t, **kw)
    return 0.5 * (l1 + l2), {k: 0.5 * (p1[k] + p2[k]) for k in p1}


def affinity_loss(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """TinyCLIP affinity mimicking: soft cross-entropy from the teacher's in-batch image→text (over all M) and
    text→image (over the B positives) distributions to the student's, averaged over both directions."""
    b = student.shape[0]

    def soft_ce(s, t):
        return -(t.detach().div(temperature).softmax(1) * s.div(temperature).log_softmax(1)).sum(1).mean()

    return 0.5 * (soft_ce(student, teacher) + soft_ce(student[:, :b].t(), teacher[:, :b].t()))
