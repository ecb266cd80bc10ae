r"""Sampled surrogate losses whose maximiser is the core rule's closed-form target.

The objective. For each context :math:`c` (a group of rows) a policy step maximises

.. math::
    J_c(\pi) = \mathbb E_{y\sim\pi}[u(y)] - \alpha\,\mathrm{KL}(\pi\,\|\,\rho)
               - \tfrac1\eta\,\mathrm{KL}(\pi\,\|\,\pi_t),

with :math:`\pi_t` the current policy, :math:`\rho` the reference model, :math:`\eta > 0` the step
size (``inf`` drops the proximal term) and :math:`\alpha \ge 0` (``> 0`` when :math:`\eta=\infty`).

Its exact maximiser. Writing :math:`\lambda = \alpha + 1/\eta` and collecting terms,

.. math::
    J_c(\pi) = \lambda \log Z - \lambda\,\mathrm{KL}(\pi\,\|\,\pi^\star),\qquad
    \log\pi^\star = \frac{\log\pi_t + \eta\alpha\log\rho + \eta u}{1+\eta\alpha} - \log Z,

so :math:`\pi^\star` (:func:`gpo_core.mirror_step`; :math:`\log\rho + u/\alpha` at
:math:`\eta=\infty`) is the unique maximiser and the gap to it is exactly a KL. As a log-ratio to
the current policy, with :math:`\kappa = \eta/(1+\eta\alpha)` (:math:`1/\alpha` at
:math:`\eta=\infty`),

.. math::
    \log\pi^\star(y) - \log\pi_t(y) = \kappa\,[u(y) + \alpha(\log\rho(y) - \log\pi_t(y))] - \log Z
    =: \tau(y) - \log Z .

Why each sampled surrogate lands there. Rows :math:`i` of a context :math:`g` carry Monte-Carlo
weights :math:`w_i` under :math:`\pi_t`: :math:`\sum_{i\in g} w_i f(y_i) / \sum_{i\in g} w_i`
estimates :math:`\mathbb E_{y\sim\pi_t}[f(y)]` (``1/k`` for ``k`` on-policy samples; the exact
:math:`\pi_t(y)` for an enumerated support; times the probability of an opponent's part for rows
that split one output among opponent parts). Below :math:`\tilde w_i = w_i / W_g` with
:math:`W_g = \sum_{j\in g} w_j`, and the losses average the contexts with weights
:math:`W_g / \sum_h W_h` (so a context counts as much as its rows weigh; each context's optimum,
and hence the fixed point, does not depend on this).

1. :func:`kl_regularized_pg_loss`. With
   :math:`A = u - \alpha\log(\pi/\rho) - \tfrac1\eta\log(\pi/\pi_t)`,
   :math:`\partial J_c / \partial\theta_y = \pi(y)\,(A(y) - \mathbb E_\pi A)` for softmax logits
   :math:`\theta`. The loss importance-weights the rows by :math:`r_i = \pi(y_i)/\pi_t(y_i)`; its
   value is :math:`-\hat J` and its gradient is
   :math:`-\sum_i \tilde w_i r_i (A_i - b_g)\nabla\log\pi(y_i)` with the self-normalised baseline
   :math:`b_g = \sum \tilde w r A / \sum \tilde w r`. On a fully enumerated support
   (:math:`\tilde w = \pi_t`) this is exactly :math:`-\nabla J_c`; its stationary points with
   :math:`\pi > 0` have :math:`A` constant, i.e. :math:`\pi = \pi^\star`. On an enumerated subset
   :math:`S`, the self-normalised baseline makes the stationary point the target conditioned
   on :math:`S`.
2. :func:`target_log_ratio_regression_loss` minimises, per context, the weighted variance of
   :math:`e_i = (\log\pi(y_i) - \log\pi_t(y_i)) - \tau(y_i)`. Centring removes the unknown
   :math:`\log Z`; the loss is 0 iff :math:`e` is constant within each context, i.e.
   :math:`\log\pi = \log\pi_t + \tau + \text{const}`, which after normalisation is
   :math:`\pi^\star` exactly (for any positive weights). Rows that repeat an output are averaged
   with their weights, so :math:`u` becomes :math:`\mathbb E[u\mid y]`.

References:
    Zheng et al. (2024), "Toward Optimal LLM Alignments Using Two-Player Games", §2.4;
    Sokota et al. (2023), magnetic mirror descent. See ``/work/shared/paper/GPO.md``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from gpo_core._validate import short
from gpo_core.protocols import MirrorStep

__all__ = [
    "ObjectiveEstimate",
    "kl_regularized_pg_loss",
    "target_log_ratio_regression_loss",
    "target_log_ratio",
    "estimate_objective",
]


class ObjectiveEstimate(NamedTuple):
    r"""Importance-sampled estimates of :math:`J` and its parts (floats, contexts averaged with
    weights :math:`W_g/\sum_h W_h` as in the losses); all exact on a full enumeration weighted by
    :math:`\pi_t`.

    Attributes:
        objective: :math:`\hat J = \sum_i \tilde w_i r_i\,[u_i - \alpha\log(\pi/\rho)_i
            - \tfrac1\eta\log(\pi/\pi_t)_i]` with :math:`r = \pi/\pi_t`: the value
            :func:`kl_regularized_pg_loss` negates (its KL terms are the plain, signed
            importance-sampled ones).
        utility: :math:`\hat{\mathbb E}_\pi[u] = \sum_i \tilde w_i r_i u_i`.
        kl_previous: :math:`\mathrm{KL}(\pi\|\pi_t)` estimated as
            :math:`\sum_i \tilde w_i (1 - r_i + r_i\log r_i)`: every term is :math:`\ge 0`,
            so the estimate is too (0 exactly at :math:`\pi=\pi_t`).
        kl_reference: :math:`\mathrm{KL}(\pi\|\rho)` estimated as
            :math:`\sum_i \tilde w_i r_i (q_i - 1 - \log q_i)`, :math:`q = \rho/\pi`
            (unbiased because :math:`\mathbb E_\pi[q] = 1`; every term :math:`\ge 0`).
    """

    objective: float
    utility: float
    kl_previous: float
    kl_reference: float


class _Rows(NamedTuple):
    """Validated float64 row tensors on one device (interior use)."""

    logp_old: torch.Tensor  # (N,)
    logp_ref: torch.Tensor  # (N,)
    utilities: torch.Tensor  # (N,)
    weights: torch.Tensor  # (N,) normalised within each group: sums to 1 per group
    group_weights: torch.Tensor  # (G,) W_g / sum(W): how much each context counts
    group: torch.Tensor  # (N,) int64 in [0, G)
    num_groups: int
    eta: float
    alpha: float


# --------------------------------------------------------------------------------------- math


def _kappa(eta: float, alpha: float) -> float:
    """``eta / (1 + eta*alpha)``, its limit ``1/alpha`` at ``eta = inf``."""
    return 1.0 / alpha if math.isinf(eta) else eta / (1.0 + eta * alpha)


def _inv_eta(eta: float) -> float:
    return 0.0 if math.isinf(eta) else 1.0 / eta


def _group_sum(values: torch.Tensor, rows: _Rows) -> torch.Tensor:
    """Sum ``values`` (N,) within each group -> (G,)."""
    out = torch.zeros(rows.num_groups, dtype=values.dtype, device=values.device)
    return out.index_add(0, rows.group, values)


def _tau(rows: _Rows) -> torch.Tensor:
    return _kappa(rows.eta, rows.alpha) * (
        rows.utilities + rows.alpha * (rows.logp_ref - rows.logp_old)
    )


def _regression(logp_new: torch.Tensor, rows: _Rows) -> torch.Tensor:
    e = (logp_new.to(torch.float64) - rows.logp_old) - _tau(rows)
    mean = _group_sum(rows.weights * e, rows)[rows.group]
    return (rows.group_weights * _group_sum(rows.weights * (e - mean) ** 2, rows)).sum()


def _pg(logp_new: torch.Tensor, rows: _Rows) -> torch.Tensor:
    lp = logp_new.to(torch.float64)
    lp_d = lp.detach()
    ratio = torch.exp(lp - rows.logp_old)
    inv_eta = _inv_eta(rows.eta)
    # J-hat with the new policy inside every term: its value is the objective estimate.
    terms = rows.utilities - rows.alpha * (lp_d - rows.logp_ref) - inv_eta * (lp_d - rows.logp_old)
    wr = rows.weights * ratio.detach()
    j_hat = _group_sum(wr * terms, rows)  # (G,)
    baseline = (j_hat / _group_sum(wr, rows))[rows.group]
    # (ratio - ratio.detach()) is exactly 0 in value; its gradient is ratio * grad(logp_new).
    score = _group_sum(rows.weights * (ratio - ratio.detach()) * (terms - baseline), rows)
    return -(rows.group_weights * (j_hat + score)).sum()


def _estimate(logp_new: torch.Tensor, rows: _Rows) -> ObjectiveEstimate:
    lp = logp_new.detach().to(torch.float64)
    log_r = lp - rows.logp_old
    r = torch.exp(log_r)

    def average(values: torch.Tensor) -> float:
        return (rows.group_weights * _group_sum(rows.weights * values, rows)).sum().item()

    utility = average(r * rows.utilities)
    objective = average(
        r * (rows.utilities - rows.alpha * (lp - rows.logp_ref) - _inv_eta(rows.eta) * log_r)
    )
    # Non-negative ("k3") forms: x - 1 - log x >= 0 termwise, unbiased under pi_t-draws.
    kl_prev = average(1.0 - r + r * log_r)
    log_q = rows.logp_ref - lp
    kl_ref = average(r * (torch.expm1(log_q) - log_q))
    return ObjectiveEstimate(objective, utility, kl_prev, kl_ref)


# --------------------------------------------------------------------------------- validation


def _as_row_tensor(value: Any, name: str, n: int, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must hold real numbers, got a tensor of dtype {t.dtype}")
    else:
        try:
            arr = np.asarray(value)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be a 1-D array of numbers, got {short(value)}") from exc
        if arr.dtype == object or arr.dtype.kind not in "iuf":
            raise TypeError(
                f"{name} must hold real numbers, got dtype {arr.dtype} from {short(value)}"
            )
        t = torch.from_numpy(arr.astype(np.float64))
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(
            f"{name} must be 1-D with one entry per row ({n} rows, the length of logp_new), "
            f"got shape {tuple(t.shape)}; give every row the same length"
        )
    t = t.to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got non-finite entries in {short(t.tolist())}")
    return t


def _group_index(group_ids: Any, n: int, device: torch.device) -> tuple[torch.Tensor, int]:
    if isinstance(group_ids, torch.Tensor):
        g = group_ids.detach()
    else:
        try:
            g = torch.from_numpy(np.asarray(group_ids))
        except Exception as exc:
            raise TypeError(
                f"group_ids must be a 1-D array of integers (one context id per row), got "
                f"{short(group_ids)}"
            ) from exc
    if g.is_floating_point() or g.is_complex() or g.dtype == torch.bool:
        raise TypeError(
            f"group_ids must hold integers (one context id per row), got dtype {g.dtype}; "
            "map each context to an int, e.g. with np.unique(contexts, return_inverse=True)"
        )
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(
            f"group_ids must be 1-D with one entry per row ({n} rows, the length of logp_new), "
            f"got shape {tuple(g.shape)}"
        )
    uniq, inverse = torch.unique(g.to(device=device, dtype=torch.int64), return_inverse=True)
    return inverse, int(uniq.numel())


def _prepare(
    logp_new: Any,
    logp_old: Any,
    logp_ref: Any,
    utilities: Any,
    weights: Any,
    eta: Any,
    alpha: Any,
    group_ids: Any,
) -> _Rows:
    if not isinstance(logp_new, torch.Tensor) or not logp_new.is_floating_point():
        raise TypeError(
            "logp_new must be a floating torch.Tensor of shape (N,) (the differentiable "
            f"log-probabilities of the rows under the policy being fitted), got {short(logp_new)}"
        )
    if logp_new.ndim != 1 or logp_new.shape[0] == 0:
        raise ValueError(
            f"logp_new must be 1-D with at least one row, got shape {tuple(logp_new.shape)}"
        )
    step = MirrorStep(eta=eta, alpha=alpha)  # validates eta and alpha, with named messages
    n, device = logp_new.shape[0], logp_new.device
    group, num_groups = _group_index(group_ids, n, device)
    w = _as_row_tensor(weights, "weights", n, device)
    if bool((w < 0).any()):
        raise ValueError(f"weights must be >= 0 (Monte-Carlo weights), got {short(w.tolist())}")
    totals = torch.zeros(num_groups, dtype=torch.float64, device=device).index_add(0, group, w)
    if bool((totals <= 0).any()):
        raise ValueError(
            "weights must have a positive sum within every group (context), got a group whose "
            "weights sum to 0; drop that context's rows or give them positive weights"
        )
    return _Rows(
        logp_old=_as_row_tensor(logp_old, "logp_old", n, device),
        logp_ref=_as_row_tensor(logp_ref, "logp_ref", n, device),
        utilities=_as_row_tensor(utilities, "utilities", n, device),
        weights=w / totals[group],
        group_weights=totals / totals.sum(),
        group=group,
        num_groups=num_groups,
        eta=float(step.eta),
        alpha=float(step.alpha),
    )


# ------------------------------------------------------------------------------------- public


def kl_regularized_pg_loss(
    logp_new: torch.Tensor,
    logp_old: Any,
    logp_ref: Any,
    utilities: Any,
    weights: Any,
    eta: float,
    alpha: float,
    group_ids: Any,
) -> torch.Tensor:
    r"""Importance-weighted policy-gradient loss for :math:`\max_\pi J` (module docstring, 1.).

    The value is :math:`-\hat J` (contexts averaged by their total weight); the gradient is the
    policy gradient with a per-context self-normalised baseline. Its stationary point in the
    tabular limit is :func:`gpo_core.mirror_step`'s target. No ratio clipping: keep the number of
    optimiser steps per batch of samples modest when rows are samples rather than an enumeration.

    Args:
        logp_new: ``(N,)`` floating tensor, :math:`\log\pi(y_i\mid c_i)` under the policy being
            fitted (differentiable).
        logp_old: ``(N,)`` :math:`\log\pi_t(y_i\mid c_i)`, the policy the rows were drawn from
            (treated as constant).
        logp_ref: ``(N,)`` :math:`\log\rho(y_i\mid c_i)` under the reference model.
        utilities: ``(N,)`` "higher is better" utilities :math:`u_i`.
        weights: ``(N,)`` Monte-Carlo weights ``>= 0`` under :math:`\pi_t`: ``1/k`` for ``k``
            samples, :math:`\pi_t(y\mid c)` for an enumeration. Normalised within each context
            for the estimate; a context's total weight is how much it counts.
        eta: step size ``> 0`` or ``math.inf``.
        alpha: reference-KL weight ``>= 0`` (``> 0`` when ``eta`` is infinite).
        group_ids: ``(N,)`` integers, one context id per row.

    Returns:
        A float64 scalar tensor to minimise.

    Raises:
        TypeError, ValueError: naming the argument, for mismatched lengths, non-finite values,
            negative weights, a context whose weights sum to 0, or a bad ``eta``/``alpha``.

    Examples:
        >>> logits = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        >>> lp = torch.log_softmax(logits, 0)
        >>> old = lp.detach()
        >>> loss = kl_regularized_pg_loss(lp, old, old, [1.0, 0.0], old.exp(), 1.0, 0.0, [0, 0])
        >>> round(-loss.item(), 6)  # J at pi = pi_t: the mean utility
        0.5
        >>> loss.backward(); bool(logits.grad[0] < 0)  # descending raises the better output
        True
    """
    return _pg(logp_new, _prepare(logp_new, logp_old, logp_ref, utilities, weights, eta, alpha,
                                  group_ids))


def target_log_ratio_regression_loss(
    logp_new: torch.Tensor,
    logp_old: Any,
    logp_ref: Any,
    utilities: Any,
    weights: Any,
    eta: float,
    alpha: float,
    group_ids: Any,
) -> torch.Tensor:
    r"""Regress :math:`\log\pi - \log\pi_t` onto the target log-ratio (module docstring, 2.).

    Per context, the weighted variance of
    :math:`(\log\pi(y_i) - \log\pi_t(y_i)) - \kappa[u_i + \alpha(\log\rho(y_i) - \log\pi_t(y_i))]`;
    centring eliminates :math:`\log Z`. Exact minimisation on a fully enumerated support gives
    :func:`gpo_core.mirror_step`'s target for any positive weights.

    Args:
        logp_new: ``(N,)`` floating tensor, :math:`\log\pi(y_i\mid c_i)` (differentiable).
        logp_old: ``(N,)`` :math:`\log\pi_t(y_i\mid c_i)`.
        logp_ref: ``(N,)`` :math:`\log\rho(y_i\mid c_i)`.
        utilities: ``(N,)`` "higher is better" utilities.
        weights: ``(N,)`` weights ``>= 0`` of the rows (normalised within each context; a
            context's total weight is how much it counts).
        eta: step size ``> 0`` or ``math.inf``.
        alpha: reference-KL weight ``>= 0`` (``> 0`` when ``eta`` is infinite).
        group_ids: ``(N,)`` integers, one context id per row.

    Returns:
        A float64 scalar tensor ``>= 0`` to minimise (0 exactly at the target).

    Raises:
        TypeError, ValueError: as :func:`kl_regularized_pg_loss`.

    Examples:
        >>> old = torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64))
        >>> target = old + torch.tensor([1.0, 0.0], dtype=torch.float64)  # eta=1, alpha=0
        >>> target = target - torch.logsumexp(target, 0)  # normalised: log Z drops out
        >>> loss = target_log_ratio_regression_loss(target, old, old, [1.0, 0.0], [1, 1], 1.0,
        ...                                         0.0, [0, 0])
        >>> round(loss.item(), 12)
        0.0
    """
    return _regression(
        logp_new, _prepare(logp_new, logp_old, logp_ref, utilities, weights, eta, alpha, group_ids)
    )


def target_log_ratio(
    logp_old: Any, logp_ref: Any, utilities: Any, eta: float, alpha: float
) -> np.ndarray:
    r"""The unnormalised target log-ratio :math:`\tau = \kappa[u + \alpha(\log\rho - \log\pi_t)]`.

    ``log pi_t + tau`` normalised over an enumerated support is :func:`gpo_core.mirror_step`.

    Args:
        logp_old: :math:`\log\pi_t` per row.
        logp_ref: :math:`\log\rho` per row.
        utilities: :math:`u` per row.
        eta: step size ``> 0`` or ``math.inf``.
        alpha: reference-KL weight ``>= 0`` (``> 0`` when ``eta`` is infinite).

    Returns:
        A float64 numpy array of the rows' :math:`\tau`.

    Examples:
        >>> target_log_ratio([0.0], [0.0], [2.0], eta=1.0, alpha=1.0).tolist()  # kappa = 1/2
        [1.0]
    """
    step = MirrorStep(eta=eta, alpha=alpha)
    arrays = [np.asarray(a, dtype=np.float64) for a in (logp_old, logp_ref, utilities)]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(
            "logp_old, logp_ref and utilities must have the same shape (one entry per row), got "
            f"shapes {[a.shape for a in arrays]}"
        )
    old, ref, u = arrays
    return _kappa(float(step.eta), float(step.alpha)) * (u + step.alpha * (ref - old))


def estimate_objective(
    logp_new: torch.Tensor,
    logp_old: Any,
    logp_ref: Any,
    utilities: Any,
    weights: Any,
    eta: float,
    alpha: float,
    group_ids: Any,
) -> ObjectiveEstimate:
    r"""Importance-sampled :math:`\hat J` and its KL terms (contexts weighted as in the losses).

    Arguments as :func:`kl_regularized_pg_loss`; nothing is differentiated.

    Examples:
        >>> lp = torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64))
        >>> est = estimate_objective(lp, lp, lp, [1.0, 0.0], lp.exp(), 1.0, 0.0, [0, 0])
        >>> (est.utility, est.kl_previous)
        (0.5, 0.0)
    """
    rows = _prepare(logp_new, logp_old, logp_ref, utilities, weights, eta, alpha, group_ids)
    return _estimate(logp_new, rows)
