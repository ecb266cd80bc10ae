r"""The update of :class:`backends.hf.HFPolicy`: fit the network to the mirror step's target.

An update fits the network to :class:`gpo_core.MirrorStep`'s closed-form target
:math:`\log\pi' = (\log\pi_t + \eta\alpha\log\rho + \eta u)/(1+\eta\alpha) - \log Z` with one of
the surrogates of :mod:`backends.objectives` (their maximiser is that target):

1. score the rows under the reference (:math:`\log\rho`; skipped when :math:`\alpha = 0` and
   the ``kl/reference`` metrics are off, since the target then does not depend on it) and under
   the current model (:math:`\log\pi_t`): the latter is the first gradient evaluation's
   forward, at :math:`\theta_t`, so the update spends no forward of its own on it;
2. minimise the surrogate until the fit is within ``fit_tol`` of the target on the rows
   (:mod:`backends.fit`), ``max_fit_steps`` gradient evaluations at most (a warning, once per
   policy, when they run out first), micro-batched: with several micro-batches each evaluation
   first scores every row without grad, takes the loss's gradient with respect to the row
   log-probabilities, then back-propagates it one micro-batch at a time (gradient accumulation:
   the same gradient as one big batch, since the loss couples the rows of a context);
3. report the fit (``fit/...``), the surrogate, non-negative estimates of
   :math:`\mathrm{KL}(\pi\|\pi_t)` and :math:`\mathrm{KL}(\pi\|\rho)`, and the gradient norm.

Every update starts a fresh optimiser by default (``fresh_optimizer=True``): each call fits a
*new* target (the proximal step from the current iterate), so curvature pairs or moments from the
last target carry no information about this one, and a policy is then fully described by its
parameters, which makes checkpoints exact (a resumed run equals an uninterrupted one). With
``optimizer="adam"`` and ``fresh_optimizer=False`` the moments persist across calls, as PPO
trainers do; :meth:`backends.hf.HFPolicy.reset_optimizer` clears them, and
:meth:`~backends.hf.HFPolicy.restore` leaves them alone.

:class:`Trainer` holds the optimiser and these settings; the policy hands it scoring callables,
so this module knows nothing of tokens or templates.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from backends import fit as _fit
from backends import objectives as _obj

__all__ = ["Trainer", "OptimizerMethods", "train_mode", "_merge_repeated_rows", "OBJECTIVES",
           "OPTIMIZERS"]

OBJECTIVES: dict[str, Callable[[torch.Tensor, Any], torch.Tensor]] = {
    "regression": _obj._regression,
    "pg": _obj._pg,
}
OPTIMIZERS = ("lbfgs", "adam")


def _merge_repeated_rows(
    ctx: list[str], out: list[str], u: np.ndarray, w: np.ndarray
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """One row per distinct ``(context, output)``: weights summed, utilities weight-averaged.

    Given the output, the surrogates are linear in a row's utility and weight (the pg loss and
    every estimate exactly; the regression loss up to a constant, the spread of the repeats'
    utilities), so their gradients and fixed points do not change. What changes: repeats are
    scored once, and a context whose rows all repeat one output -- e.g. an adversary's prompt
    with its k answers, which carries no signal under a per-context baseline -- gets a zero
    gradient (measured: exactly 0) instead of float32 rounding noise (~1e-7), which AdamW's
    g / (sqrt(v) + eps) would scale up to lr-sized steps.
    """
    index: dict[tuple[str, str], int] = {}
    ids = np.array([index.setdefault(row, len(index)) for row in zip(ctx, out)], dtype=np.int64)
    n = len(index)
    if n == len(ctx):
        return ctx, out, u, w
    weight = np.bincount(ids, weights=w, minlength=n)
    weighted = np.bincount(ids, weights=w * u, minlength=n)
    # a zero-weight row adds nothing to either loss, so its utility may be anything (0 here)
    utility = np.divide(weighted, weight, out=np.zeros(n), where=weight > 0)
    rows = list(index)
    return [c for c, _ in rows], [o for _, o in rows], utility, weight


Score = Callable[[], torch.Tensor]


@contextlib.contextmanager
def train_mode(model: torch.nn.Module, on: bool) -> Iterator[None]:
    """``model`` in training mode inside (when ``on``), ``eval()`` again after: the policy's
    gradient evaluations under gradient checkpointing (transformers checkpoints only in training
    mode; the policy has set every dropout to 0, so nothing else changes)."""
    if not on:
        yield
        return
    model.train()
    try:
        yield
    finally:
        model.eval()


class OptimizerMethods:
    """The optimiser methods of :class:`backends.hf.HFPolicy` (a mixin over its ``_trainer``)."""

    _trainer: "Trainer"

    def reset_optimizer(self) -> None:
        """Forget the AdamW moments (the next :meth:`update` starts a fresh optimiser)."""
        self._trainer.optimizer = self._trainer.new_optimizer()

    def optimizer_state_dict(self) -> dict[str, Any]:
        """A deep copy of the AdamW state (``torch.optim.Optimizer.state_dict`` format)."""
        return self._trainer.state_dict()

    def load_optimizer_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load a value that :meth:`optimizer_state_dict` returned.

        Raises:
            ValueError: naming this policy, if the state does not fit its parameters.
        """
        self._trainer.load_state_dict(state)


class Trainer:
    """The optimiser of one policy and the fit of each update (module docstring).

    ``params`` are the trainable parameters; the other arguments are
    :class:`backends.hf.HFPolicy`'s of the same names, already checked.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], *, name: str, objective: str,
                 optimizer: str, lr: float, weight_decay: float, fit_tol: float,
                 fit_atol: float, max_fit_steps: int, max_grad_norm: float | None,
                 fresh_optimizer: bool, grad_sync: Callable | None,
                 value_sync: Callable | None, low_precision: bool) -> None:
        self.params, self.name, self.objective, self.kind = list(params), name, objective, optimizer
        self.lr, self.weight_decay = lr, weight_decay
        self.fit_tol, self.fit_atol, self.max_fit_steps = fit_tol, fit_atol, max_fit_steps
        self.max_grad_norm, self.fresh = max_grad_norm, fresh_optimizer
        self.grad_sync, self.value_sync, self.low_precision = grad_sync, value_sync, low_precision
        self.warned = False
        # reference_metrics: score the reference for the kl/reference metrics even when the
        # step does not need it (alpha == 0); reuse_first_forward: take pi_t's scores from the
        # first evaluation's forward (off only to test that this changes nothing)
        self.reference_metrics, self.reuse_first_forward = True, True
        self.optimizer = self.new_optimizer()

    # ------------------------------------------------------------------------------ optimiser

    def new_optimizer(self) -> torch.optim.Optimizer:
        if self.kind == "lbfgs":
            # tolerances 0: backends.fit stops on the residual, not on LBFGS's own tests
            return torch.optim.LBFGS(
                self.params, lr=1.0, history_size=10, line_search_fn="strong_wolfe",
                tolerance_grad=0.0, tolerance_change=0.0,
            )
        return torch.optim.AdamW(self.params, lr=self.lr, weight_decay=self.weight_decay)

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.optimizer.state_dict())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            self.optimizer.load_state_dict(copy.deepcopy(dict(state)))
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(
                f"HFPolicy {self.name!r}: load_optimizer_state_dict failed ({exc}); pass a value "
                "from optimizer_state_dict() of a policy with the same trainable parameters"
            ) from exc

    def sync_float(self, value: float) -> float:
        """``value`` as every rank agrees on it (its mean over ranks under ``value_sync``)."""
        if self.value_sync is None:
            return float(value)
        return float(self.value_sync({"value": float(value)})["value"])

    def advice(self) -> str:
        if self.kind == "adam":
            return "raise max_fit_steps, or use optimizer='lbfgs' (scale-free, fewer evaluations)"
        advice = "raise max_fit_steps or fit_tol"
        if self.objective == "pg":
            advice += ", or use objective='regression' (a least-squares fit: fewer evaluations)"
        if self.low_precision:
            advice += " (bfloat16 forwards round small moves away: use float32 for tight fits)"
        return advice

    # ----------------------------------------------------------------------------------- fit

    def fit(self, step: Any, gid: np.ndarray, utilities: np.ndarray, weights: np.ndarray, *,
            score: Score, score_grad: Score, score_reference: Score,
            backward: Callable[[torch.Tensor], None], single: bool,
            grad_mode: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
            ) -> dict[str, float]:
        """One update on prepared rows (module docstring).

        Args:
            step: the :class:`~gpo_core.protocols.MirrorStep`.
            gid: each row's context index; ``utilities``, ``weights``: per row.
            score: the rows' log-probabilities now, without grad.
            score_grad: the same with grad (one micro-batch: ``single``).
            score_reference: the rows' log-probabilities under the reference, without grad.
            backward: accumulates ``d sum_i c_i logp_i`` for coefficients ``c`` micro-batch by
                micro-batch (used when not ``single``).
            grad_mode: the context the forwards with grad and their backward run in (training
                mode, for gradient checkpointing).

        Returns:
            ``fit/residual_initial``, ``fit/residual``, ``fit/relative``, ``fit/steps``,
            ``fit/converged`` (:class:`backends.fit.FitReport`); ``loss`` (the surrogate at the new
            parameters), ``loss/initial``, ``objective`` (the importance-sampled J there),
            ``kl/previous_is`` and ``kl/reference_is`` (non-negative importance-sampled estimates
            of the new policy's KL to ``pi_t`` and to the reference, see
            :class:`backends.objectives.ObjectiveEstimate`), ``kl/reference`` (the iterate that
            drew the rows, by the non-negative estimator ``E_{pi_t}[q - 1 - log q]``,
            ``q = rho/pi_t``) and ``grad_norm`` (of the last evaluation, before clipping). With
            the regression objective, merged repeats leave their utilities' spread (a constant)
            out of ``loss``.
        """
        if self.fresh or self.kind == "lbfgs":
            self.optimizer = self.new_optimizer()
        # The reference enters the target only through alpha; at alpha == 0 it is scored for
        # the kl/reference metrics alone, which reference_metrics=False gives up.
        with torch.no_grad():
            logp_ref = score_reference() if step.alpha > 0 or self.reference_metrics else None
        loss_fn = OBJECTIVES[self.objective]
        trace = {"initial": math.nan, "grad_norm": math.nan}
        # pi_t's scores are the first evaluation's forward: it runs at theta_t with dropout off,
        # so it is the same computation (tests/test_hf_update_forwards.py: the update is bit for
        # bit the one with a separate no-grad forward). One micro-batch: that forward keeps its
        # graph, in grad_mode, for the first evaluation's backward; several: the first
        # evaluation's no-grad scoring is pi_t's.
        first = contextlib.ExitStack()  # the grad_mode the pending graph was built in
        pending: list[torch.Tensor] = []

        def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
            self.optimizer.zero_grad(set_to_none=True)
            reuse = pending.pop() if pending else None
            if single:
                if reuse is None:
                    first.enter_context(grad_mode())
                    reuse = score_grad()
                loss = loss_fn(reuse, rows)
                loss.backward()
                first.close()
                current = reuse.detach()
            else:
                if reuse is None:
                    with torch.no_grad():
                        reuse = score()
                current = reuse
                leaf = current.detach().requires_grad_(True)
                loss = loss_fn(leaf, rows)
                loss.backward()
                with grad_mode():
                    backward(leaf.grad)
            if math.isnan(trace["initial"]):
                trace["initial"] = loss.item()
            if self.grad_sync is not None:
                self.grad_sync(self.params)
            # Clipping changes the direction a line search probes, so only AdamW clips.
            clip = self.max_grad_norm if self.kind == "adam" else None
            norm = float(torch.nn.utils.clip_grad_norm_(
                self.params, math.inf if clip is None else clip
            ))
            trace["grad_norm"] = norm
            if not math.isfinite(norm):
                self.optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError(
                    f"HFPolicy {self.name!r}: gradient norm is {norm} (loss {loss.item():.6g}); "
                    "the step was skipped. Check the utilities' scale, use dtype='float32', or "
                    "lower lr with optimizer='adam'"
                )
            return loss, current

        try:  # until the fit ends: an error, or nothing to move, drops the pending graph
            if single and self.reuse_first_forward:
                first.enter_context(grad_mode())
                pending.append(score_grad())
                logp_old = pending[0].detach()
            else:
                with torch.no_grad():
                    logp_old = score()
                if self.reuse_first_forward:
                    pending.append(logp_old)
            rows = _obj._prepare(
                logp_old, logp_old, logp_old if logp_ref is None else logp_ref, utilities,
                weights, step.eta, step.alpha, gid,
            )
            r0 = _fit.residual(rows.logp_old, rows)
            if not math.isfinite(r0):
                raise FloatingPointError(
                    f"HFPolicy {self.name!r}: the move the step asks for is not finite (residual "
                    f"{r0}); utilities up to {float(np.max(np.abs(utilities))):.3g} times eta="
                    f"{step.eta} overflow; rescale the utilities or lower eta"
                )
            report, final = _fit.fit(
                self.optimizer, evaluate, rows, tol=self.fit_tol, atol=self.fit_atol,
                max_steps=self.max_fit_steps, sync=self.sync_float,
            )
        finally:
            pending.clear()
            first.close()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            if final is None:
                final = score()
                report = report._replace(residual=self.sync_float(_fit.residual(final, rows)))
            est = _obj._estimate(final, rows)
            loss_final = loss_fn(final, rows).item()
        if not report.converged and not self.warned:
            self.warned = True
            warnings.warn(
                f"HFPolicy {self.name!r}: the fit used its whole budget of "
                f"{self.max_fit_steps} gradient evaluations (max_fit_steps) and stopped at a "
                f"residual of {report.relative:.3g} x the move asked for (tolerance "
                f"{self.fit_tol:g}; {report.residual:.3g} against {report.residual_initial:.3g}), "
                f"so this step is shorter than eta asks; {self.advice()}. Said once per "
                "policy; every update logs fit/converged",
                RuntimeWarning,
                stacklevel=3,
            )
        metrics = {
            **report.metrics(),
            "loss": loss_final,
            "loss/initial": trace["initial"] if report.steps else loss_final,
            "objective": est.objective,
            "kl/previous_is": est.kl_previous,
            "grad_norm": trace["grad_norm"],
        }
        if logp_ref is not None:
            # KL(pi_t || rho) of the iterate that drew the rows by the "k3" estimator
            # E_{pi_t}[q - 1 - log q], q = rho/pi_t: unbiased on pi_t-draws, >= 0 term by term.
            log_q = (logp_ref.double() - logp_old.double()).cpu().numpy()
            w = np.asarray(weights, dtype=np.float64)
            metrics["kl/reference"] = float(np.sum(w * (np.expm1(log_q) - log_q)) / np.sum(w))
            metrics["kl/reference_is"] = est.kl_reference
        return metrics
