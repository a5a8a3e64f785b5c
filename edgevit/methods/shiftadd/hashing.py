"""Kernel-based supervised hashing (KSH; Liu et al., CVPR 2012) of query/key tokens, as ShiftAddViT uses it.

A token ``x`` (one head's L2-normalised shared query/key, dimension ``d``) is mapped to RBF features over ``m``
anchor tokens, ``φ(x)_j = exp(−‖x − a_j‖² / (2σ²))`` (m = 25), centred by their mean ``μ`` over the fitting sample,
and hashed to ``b = 1[A(φ(x) − μ) > 0] ∈ {0, 1}^r`` (r = 16 bits).

:func:`fit_ksh` learns ``A`` once, bit by bit, on a sample of real tokens: the pairwise targets ``S`` are +1 for each
token's 10 most similar tokens, −1 for its 10 least similar (cosine similarity: the attention score of normalised
queries/keys) and 0 elsewhere. Bit k maximises ``yᵀ R_{k−1} y`` with ``y = sign(K̄ a_k)`` and the residual
``R_k = R_{k−1} − y_k y_kᵀ`` on the labelled pairs (``R_0 = r·S``): the −yᵀSy objective of KSH, minimised
greedily. Each bit uses KSH's
spectral relaxation (the top generalised eigenvector of ``K̄ᵀ R K̄ a = λ K̄ᵀ K̄ a``) followed by gradient steps on
the smooth surrogate ``−tanh(K̄a)ᵀ R tanh(K̄a)``. After fitting, ``A``, the anchors, ``σ`` and ``μ`` are frozen
buffers.
"""

from __future__ import annotations

import torch

from ...errors import ConfigError

BITS = 16  # hash length r (methods.md §3)
ANCHORS = 25  # RBF anchors m (methods.md §3)
TOPK_SIMILAR = 10  # top-10 / bottom-10 similarity targets (methods.md §3)


def rbf_features(x: torch.Tensor, anchors: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``φ(x)``: ``(..., d)`` tokens, ``(m, d)`` anchors → ``(..., m)`` RBF features ``exp(−‖x−a‖²/(2σ²))``."""
    d2 = (x.unsqueeze(-2) - anchors).pow(2).sum(-1)
    return torch.exp(-d2 / (2 * sigma * sigma))


def similarity_targets(x: torch.Tensor, k: int = TOPK_SIMILAR) -> torch.Tensor:
    """``S`` (n, n): +1 for each row's ``k`` most cosine-similar other tokens, −1 for its ``k`` least similar, 0
    elsewhere; symmetrised (a pair marked by both rows keeps the mark, conflicting marks cancel)."""
    xn = torch.nn.functional.normalize(x, dim=-1)
    sim = xn @ xn.T
    n = sim.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    k = min(k, max(1, (n - 1) // 2))
    s = torch.zeros(n, n)
    top = sim.masked_fill(eye, float("-inf")).topk(k, dim=1).indices
    bottom = sim.masked_fill(eye, float("inf")).topk(k, dim=1, largest=False).indices
    s.scatter_(1, top, 1.0)
    s.scatter_(1, bottom, -1.0)
    return torch.sign(s + s.T)


def farthest_points(x: torch.Tensor, k: int, *, start: int = 0) -> torch.Tensor:
    """``k`` rows of ``x`` (n, d) chosen by farthest-point sampling from row ``start`` (spread-out anchors; repeated
    tokens, e.g. a uniform background, are not picked twice)."""
    idx = [start]
    dist = (x - x[start]).pow(2).sum(-1)
    for _ in range(k - 1):
        j = int(dist.argmax())
        idx.append(j)
        dist = torch.minimum(dist, (x - x[j]).pow(2).sum(-1))
    return x[idx].clone()


def fit_ksh(tokens: torch.Tensor, *, bits: int = BITS, anchors: int = ANCHORS, k: int = TOPK_SIMILAR,
            steps: int = 20, seed: int = 0) -> dict[str, torch.Tensor]:
    """Learn a KSH hash on ``tokens`` (n, d) (n ≥ anchors + 2·k; ~500 real tokens is plenty).

    Returns ``{"anchors": (m, d), "sigma": (), "mu": (m,), "A": (bits, m)}`` (float32). Deterministic for a given
    ``seed`` (first anchor of the farthest-point sampling). Raises ``ValueError`` when there are too few tokens."""
    tokens = tokens.detach().float()
    n = tokens.shape[0]
    if n < anchors + 2 * k + 1:
        raise ConfigError(f"the KSH hash with {anchors} anchors needs at least {anchors + 2 * k + 1} tokens per head "
                          f"to fit, the calibration images gave {n}: pass more calibration images (--calib-samples) "
                          f"or fewer anchors (--anchors, default {ANCHORS})")
    g = torch.Generator().manual_seed(seed)
    anc = farthest_points(tokens, anchors, start=int(torch.randint(n, (1,), generator=g)))
    sigma = torch.cdist(tokens, anc).mean().clamp_min(1e-3)
    phi = rbf_features(tokens, anc, sigma)
    mu = phi.mean(0)
    kbar = phi - mu  # (n, m)
    target = similarity_targets(tokens, k)
    labelled = (target != 0).float()  # the loss counts only pairs with a target
    r = bits * target
    # whitening of KᵀK (its eigen-decomposition, tiny eigenvalues floored: repeated tokens make it singular)
    evals, evecs = torch.linalg.eigh((kbar.T @ kbar).double())
    evals = evals.clamp_min(1e-6 * float(evals.max().clamp_min(1e-12)))
    linv = (evecs / evals.sqrt()).T.float()  # linv @ KᵀK @ linv.T = I
    scale = 1.0 / kbar.abs().mean().clamp_min(1e-12)
    a_rows = []
    for _ in range(bits):
        # spectral relaxation: generalised eigenproblem Kᵀ R K a = λ KᵀK a, via the Cholesky factor of KᵀK
        mat = kbar.T @ (r @ kbar)
        _, vecs = torch.linalg.eigh(linv @ mat @ linv.T)
        a = linv.T @ vecs[:, -1]
        a = a / a.norm().clamp_min(1e-12)
        # refine by gradient ascent on the smooth surrogate tanh(sKa)ᵀ R tanh(sKa) (the sign objective is piecewise
        # constant); gradient 2s·Kᵀ[(1 − y²) ⊙ Ry], normalised steps
        for _ in range(steps):
            y = torch.tanh(scale * (kbar @ a))
            g = kbar.T @ ((1 - y * y) * (r @ y))
            a = a + 0.05 * g / g.norm().clamp_min(1e-12)
            a = a / a.norm().clamp_min(1e-12)
        y = torch.sign(kbar @ a)
        y[y == 0] = 1
        r = r - torch.outer(y, y) * labelled
        a_rows.append(a)
    return {"anchors": anc, "sigma": sigma.reshape(()), "mu": mu, "A": torch.stack(a_rows)}


def hash_logits(x: torch.Tensor, anchors: torch.Tensor, sigma: torch.Tensor, mu: torch.Tensor,
                a: torch.Tensor) -> torch.Tensor:
    """``A(φ(x) − μ)``: ``(..., d)`` → ``(..., bits)``; the code is ``1[logits > 0]``."""
    return (rbf_features(x, anchors, sigma) - mu) @ a.T


def binary_codes(logits: torch.Tensor, *, straight_through: bool) -> torch.Tensor:
    """``1[logits > 0]`` as float {0, 1}; with ``straight_through`` the gradient is that of ``sigmoid(logits)``."""
    hard = (logits > 0).to(logits.dtype)
    if not straight_through:
        return hard
    soft = torch.sigmoid(logits)
    return soft + (hard - soft).detach()
