r"""Fitting a network to the mirror step's target on its experience, to a measured tolerance.

The target (:mod:`backends.objectives`). For each context the rule asks for

.. math::
    \log\pi^\star - \log\pi_t = \tau - \log Z,\qquad
    \tau = \kappa\,[u + \alpha(\log\rho - \log\pi_t)],\quad \kappa = \frac{\eta}{1+\eta\alpha}.

The measured distance. On the experience rows (weights :math:`w` normalised within each context
:math:`g`, contexts weighted :math:`W_g`) the fit is judged by the **residual**

.. math::
    R(\theta) = \sum_g W_g\,\mathrm{Var}_{w,g}\big[(\log\pi_\theta - \log\pi_t) - \tau\big]
              = \sum_g W_g\,\mathrm{Var}_{w,g}\big[\log\pi_\theta - \log\pi^\star\big],

the weighted variance of the log-ratio between the fitted policy and the target (the centring
removes :math:`\log Z`): :math:`R = 0` exactly when :math:`\pi_\theta = \pi^\star` on the rows
(up to each context's normaliser). At the start, :math:`R_0 = R(\theta_t) = \sum_g W_g
\mathrm{Var}(\tau)`: the size of the move the step asks for (for small :math:`\eta` and
:math:`\alpha = 0`, :math:`R_0 = \eta^2\,\mathrm{Var}(u) \approx 2\,\mathrm{KL}(\pi^\star\|\pi_t)`).
It is the regression objective's value, and it is measured whichever objective is minimised.

The stopping rule. The fit stops at the first evaluated :math:`\theta` with
:math:`R(\theta) \le \max(\mathrm{tol}\cdot R_0,\ \mathrm{atol})`, or when ``max_steps`` gradient
evaluations (forward + backward passes over the experience) are spent; the caller warns then.

What ``tol`` buys. Let :math:`d = \log\pi_\theta - \log\pi^\star` (centred). The root-mean-square
error of the move is at most :math:`\sqrt{\mathrm{tol}}` times the root-mean-square move. On an
enumerated support (:math:`w = \pi_t`), with :math:`m = \max(\pi^\star/\pi_t)`,

.. math::
    \mathrm{KL}(\pi^\star\|\pi_\theta) = \tfrac12\mathrm{Var}_{\pi^\star}(d) + O(|d|^3)
        \le \tfrac12\, m\,R,\qquad
    \mathrm{osc}(d) \le 2\sqrt{R/\min_y \pi_t(y)},\qquad
    \mathrm{TV}(\pi_\theta, \pi^\star) \le \tanh(\mathrm{osc}(d)/4),

the last two exact (``osc`` is max minus min; a log-likelihood ratio of range :math:`s` keeps the
total-variation distance below :math:`\tanh(s/4)`). ``tests/test_lm_twin.py`` uses these to bound
how far a transformer's iterates may drift from :func:`gpo_core.play`'s.

The optimisers.

* ``"lbfgs"`` (default): :class:`torch.optim.LBFGS` with a strong-Wolfe line search on the full
  batch. The surrogate is a smooth least-squares-like function of a handful of rows, where
  quasi-Newton steps converge in a few evaluations and, unlike Adam, are not normalised by the
  gradient's scale (so a small ``eta`` asks for a small move and gets it). The residual is checked
  at every evaluation, line-search trial points included, and the fit stops at the first point
  that meets the tolerance. Memory: ``2 * history_size`` copies of the trainable parameters (use
  LoRA for large models, or ``"adam"``).
* ``"adam"``: AdamW steps of the policy's ``lr`` with the same test before each step. Adam's
  update has roughly ``lr`` size whatever the gradient, so it needs ``lr`` small enough to reach
  a tight tolerance and more steps; it is there for parity with RLHF trainers.

References: Zheng et al. (2024) §2.4 (the KL-regularised step); Nocedal & Wright (2006) ch. 7
(L-BFGS) and §3.1 (the Wolfe conditions).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from backends import objectives as _obj

__all__ = ["FitReport", "residual", "fit"]


class FitReport(NamedTuple):
    """How one fit went (all floats are the residual :math:`R` of the module docstring).

    Attributes:
        residual_initial: :math:`R_0`, the move asked for.
        residual: :math:`R` at the returned parameters.
        steps: gradient evaluations spent (forward + backward passes over the experience).
        converged: whether :math:`R \\le \\max(\\mathrm{tol} R_0, \\mathrm{atol})` was reached.
        threshold: that bound.
    """

    residual_initial: float
    residual: float
    steps: int
    converged: bool
    threshold: float

    @property
    def relative(self) -> float:
        """:math:`R / R_0` (0 when nothing was asked for)."""
        return self.residual / self.residual_initial if self.residual_initial > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        """The ``fit/...`` metrics an update returns."""
        return {
            "fit/residual_initial": self.residual_initial,
            "fit/residual": self.residual,
            "fit/relative": self.relative,
            "fit/steps": float(self.steps),
            "fit/converged": float(self.converged),
        }


def residual(logp_new: torch.Tensor, rows: _obj._Rows) -> float:
    """:math:`R` at the row log-probabilities ``logp_new`` (module docstring)."""
    return float(_obj._regression(logp_new.detach(), rows))


class _Reached(Exception):
    """Raised inside the closure at the first point that meets the tolerance."""

    def __init__(self, logp: torch.Tensor, value: float) -> None:
        super().__init__()
        self.logp, self.value = logp, value


Evaluate = Callable[[], "tuple[torch.Tensor, torch.Tensor]"]


def fit(
    optimizer: torch.optim.Optimizer,
    evaluate: Evaluate,
    rows: _obj._Rows,
    *,
    tol: float,
    atol: float,
    max_steps: int,
    sync: Callable[[float], float] = float,
) -> tuple[FitReport, torch.Tensor | None]:
    """Minimise a surrogate with ``optimizer`` until the residual meets the tolerance.

    Args:
        optimizer: a :class:`torch.optim.LBFGS` (stepped with a closure) or any first-order
            optimiser (stepped after each evaluation), over the trainable parameters.
        evaluate: zeroes the gradients, computes the surrogate at the current parameters and
            back-propagates it; returns ``(loss, logp)`` with ``logp`` the rows' detached
            log-probabilities there.
        rows: the prepared rows (:func:`backends.objectives._prepare`), for the residual.
        tol: relative tolerance on :math:`R/R_0`.
        atol: absolute floor on :math:`R` (float32 log-probabilities cannot go much below).
        max_steps: the most gradient evaluations to spend.
        sync: maps a local float to the value every process agrees on (data-parallel runs:
            the mean over ranks); identity by default.

    Returns:
        The report and the rows' log-probabilities at the returned parameters when the fit
        converged (``None`` when the budget ran out: score them again, and fill in the report's
        ``residual``, which is ``nan`` then).

    Examples:
        >>> theta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        >>> rows = _obj._prepare(torch.zeros(3), [0.0] * 3, [0.0] * 3, [1.0, 0.0, -1.0],
        ...                      [1.0] * 3, 1.0, 0.0, [0, 0, 0])
        >>> def evaluate():
        ...     theta.grad = None
        ...     lp = torch.log_softmax(theta, 0) + math.log(3)   # log pi - log pi_t
        ...     loss = _obj._regression(lp, rows); loss.backward()
        ...     return loss, lp.detach()
        >>> opt = torch.optim.LBFGS([theta], line_search_fn="strong_wolfe", max_iter=50)
        >>> report, _ = fit(opt, evaluate, rows, tol=1e-10, atol=0.0, max_steps=50)
        >>> report.converged, report.steps < 10, round(float(theta.detach()[0] - theta.detach()[2]), 6)
        (True, True, 2.0)
    """
    r0 = sync(residual(rows.logp_old, rows))
    threshold = max(tol * r0, atol)
    if r0 <= threshold:  # nothing (measurable) to move
        return FitReport(r0, r0, 0, True, threshold), rows.logp_old
    count = 0

    def closure() -> torch.Tensor:
        nonlocal count
        loss, logp = evaluate()
        count += 1
        value = sync(residual(logp, rows))
        if value <= threshold:
            raise _Reached(logp, value)
        return torch.tensor(sync(float(loss.detach())), dtype=torch.float64)

    if isinstance(optimizer, torch.optim.LBFGS):
        for group in optimizer.param_groups:
            group["max_iter"] = group["max_eval"] = max_steps
        try:
            optimizer.step(closure)
        except _Reached as hit:
            return FitReport(r0, hit.value, count, True, threshold), hit.logp
        # ended by the budget or a stalled line search: the parameters are the last accepted
        # iterate, not necessarily the last evaluated point, so the caller scores them again
        return FitReport(r0, math.nan, count, False, threshold), None
    try:
        for _ in range(max_steps):
            closure()
            optimizer.step()
    except _Reached as hit:
        return FitReport(r0, hit.value, count, True, threshold), hit.logp
    # the budget is spent: the caller scores the last step's parameters (no backward needed)
    return FitReport(r0, math.nan, count, False, threshold), None
