r"""The paper's diversity argument (GPO §3.3; digest §5.3) in a tabular prompt x response game.

The adversary picks a prompt :math:`x \sim \mu`, the defender answers with
:math:`y \sim \pi(\cdot|x)`, the reward is :math:`r(x,y)`;
:math:`J(\pi,\mu) = \sum_x \mu(x)\sum_y \pi(y|x) r(x,y)`, the defender maximises, the adversary
minimises. Because the defender answers each prompt separately,
:math:`\max_\pi J(\pi,\mu) = \sum_x \mu(x) V(x)` with :math:`V(x) = \max_y r(x,y)`, so

* **without regularisation** the adversary's equilibrium is a point mass on the worst prompt
  :math:`x^* = \arg\min_x V(x)` (unique if :math:`V` has a unique minimiser);
* **with entropy weight** :math:`\tau` (the adversary minimises :math:`J - \tau H(\mu)`, the
  paper's Eq. 3.7 / Algorithm 3) it is the Gibbs distribution
  :math:`\mu_\tau(x) \propto \exp(-V(x)/\tau)`.

Both are checked against learning dynamics (GPO's per-prompt defender update and an adversary
running Hedge or MMD) and, when the game is small, against the explicit normal form whose
defender strategies are all :math:`q^p` response maps (no decoupling assumed):

* :math:`\tau = 0`: the uniform average :math:`\bar\mu_t` of the adversary's play satisfies
  :math:`1 - \bar\mu_t(x^*) \le (R^{adv}_t + \sum_x R^{x}_t)/(t\Delta)`,
  :math:`\Delta = V_{(2)} - V_{(1)}` (gap between the two smallest values), with every regret
  replaced by its closed-form Hedge bound. Proof: :math:`t(\langle\bar\mu_t, V\rangle - V(x^*))
  \ge t\Delta(1-\bar\mu_t(x^*))`, and :math:`\sum_s\langle\mu_s, V\rangle - tV(x^*) \le
  R^{adv}_t + \sum_s\sum_x(V(x) - V_{\pi_s}(x))` because :math:`V_{\pi_s} \le V`. The explicit
  form's LP (:func:`gpo_core.solve_lp`) must return the point mass and the value :math:`V(x^*)`.
* :math:`\tau > 0`: :math:`\phi(\mu) = \max_\pi J(\pi,\mu) - \tau H(\mu)` is :math:`\tau`-strongly
  convex in :math:`\ell_1` (Pinsker), so for *any* profile :math:`(\pi,\mu)` the true equilibrium
  :math:`\mu^\dagger` satisfies :math:`\|\mu - \mu^\dagger\|_1 \le \sqrt{2\,\mathrm{gap}_\tau(\pi,\mu)/\tau}`
  with the computable duality gap
  :math:`\mathrm{gap}_\tau = \phi(\mu) + \tau\ln\sum_x e^{-V_\pi(x)/\tau}`. The check is
  :math:`\|\mu_T - \mu_\tau\|_1 \le \sqrt{2\,\mathrm{gap}_\tau(\pi_T,\mu_T)/\tau}` at the learned
  profile: it can only hold while the gap shrinks if the claimed :math:`\mu_\tau` is the true
  equilibrium. When the explicit form is small, :math:`\max_\pi J` is taken over all response maps.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

import gpo_core as gc
from gpo_core import bounds
from gpo_core._validate import as_real_array, check_nonnegative, check_positive, check_positive_int, check_strategy, short
from proofs_check._common import check_scale, log_grid
from proofs_check._result import CheckResult, Curve, make_ratio

__all__ = [
    "prompt_values",
    "gibbs_adversary",
    "explicit_normal_form",
    "check_diversity_equilibrium",
]

CITE_POINT = (
    "Zheng et al. 2024 (GPO) §3.3: without the entropy term the adversary's equilibrium is a "
    "one-point distribution; rate via Hedge regret bounds (Cesa-Bianchi & Lugosi 2006)"
)
CITE_GIBBS = (
    "Zheng et al. 2024 (GPO) Eq. 3.7/Alg. 3 (digest §5.3): with entropy weight tau, "
    "mu(x) ∝ exp(-V(x)/tau); certificate by tau-strong convexity (Pinsker)"
)


def _check_reward(reward: Any) -> np.ndarray:
    r = as_real_array(reward, "reward", min_ndim=2)
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 1:
        raise ValueError(
            f"reward must have shape (prompts, responses) with at least 2 prompts and 1 response, "
            f"got shape {r.shape}"
        )
    if not float(r.max() - r.min()) > 0:
        raise ValueError("reward is constant: every prompt is equally bad, there is nothing to check")
    return r


def prompt_values(reward: Any) -> np.ndarray:
    """:math:`V(x) = \\max_y r(x, y)`: the defender's best value on each prompt.

    Examples:
        >>> prompt_values([[0.1, 0.9], [0.4, 0.2]]).tolist()
        [0.9, 0.4]
    """
    return _check_reward(reward).max(axis=1)


def gibbs_adversary(values: Any, tau: float) -> np.ndarray:
    """The entropy-regularised adversary's equilibrium :math:`\\mu(x) \\propto e^{-V(x)/\\tau}`.

    Examples:
        >>> gibbs_adversary([0.0, np.log(3.0)], 1.0).round(6).tolist()
        [0.75, 0.25]
    """
    v = as_real_array(values, "values", min_ndim=1)
    tau = check_positive(tau, "tau")
    return gc.softmax(-v / tau)


def explicit_normal_form(reward: Any, limit: int = 4096) -> gc.MatrixGame:
    """The game as a matrix: rows are the defender's ``q^p`` response maps, columns the prompts.

    Entry ``[k, x] = r(x, k(x))``; the row player (defender) maximises. Raises if ``q^p > limit``.

    Examples:
        >>> explicit_normal_form([[1.0, 0.0], [0.0, 2.0]]).payoff.tolist()
        [[1.0, 0.0], [1.0, 2.0], [0.0, 0.0], [0.0, 2.0]]
    """
    r = _check_reward(reward)
    limit = check_positive_int(limit, "limit")
    p, q = r.shape
    if q**p > limit:
        raise ValueError(f"the explicit form has q^p = {q}^{p} > limit={limit} response maps")
    maps = np.array(list(itertools.product(range(q), repeat=p)), dtype=np.int64)  # (q^p, p)
    payoff = r[np.arange(p)[None, :], maps]
    return gc.MatrixGame(payoff, name=f"explicit({p} prompts x {q} responses)")


def check_diversity_equilibrium(
    reward: Any,
    tau: float = 0.0,
    T: int = 5000,
    *,
    claimed: Any = None,
    eta: float | None = None,
    exact_limit: int = 4096,
    bound_scale: float = 1.0,
    grid_points: int = 60,
    name: str = "",
) -> CheckResult:
    r"""The adversary's equilibrium is a point mass (``tau = 0``) or :math:`\propto e^{-V/\tau}` (``tau > 0``).

    Claim (Zheng et al. 2024, §3.3 and Eq. 3.7 / Algorithm 3; see the module docstring for the
    statement and the two certificates): in the tabular prompt x response game where the defender
    answers each prompt, the adversary's equilibrium is :math:`\delta_{\arg\min V}` without
    regularisation and the Gibbs distribution :math:`\mu_\tau \propto e^{-V/\tau}` with entropy
    weight :math:`\tau`.

    Dynamics (GPO's updates, digest §2.4): the defender runs Hedge per prompt on
    :math:`r(x,\cdot)`; the adversary runs Hedge (``tau = 0``; anytime steps
    :math:`\sqrt{8\ln n}/(B\sqrt t)` for both, so the closed-form bound applies) or
    :func:`gpo_core.mmd` with ``alpha = tau`` and a uniform magnet (``tau > 0``; defender step
    ``1/B``, adversary step ``eta``, default ``1/B``) on the utilities :math:`-V_{\pi_t}(x)`.

    Assumptions: ``tau = 0`` needs a unique worst prompt (:math:`\Delta > 0`).

    Args:
        reward: ``(p, q)`` array: ``reward[x, y] = r(x, y)``, ``p >= 2`` prompts.
        tau: entropy weight ``>= 0``.
        T: rounds of the dynamics.
        claimed: the adversary distribution claimed to be the equilibrium; default the paper's
            closed form (pass another to see the check fail).
        eta: the adversary's MMD step for ``tau > 0`` (default ``1/B``).
        exact_limit: build the explicit normal form (``q^p`` maps) only up to this many maps.
        bound_scale: tighten the bound by this factor in ``(0, 1]`` (to show failure).
        grid_points: log-spaced rounds checked (``tau = 0``) or recorded (``tau > 0``).
        name: label for reports.

    Returns:
        A :class:`~proofs_check.CheckResult`: ``tau = 0``: ``lhs`` the total-variation distance of
        :math:`\bar\mu_t` from ``claimed`` and ``rhs`` the closed-form bound at the worst ``t``;
        ``tau > 0``: ``lhs = ||mu_T - claimed||_1`` and ``rhs`` the certificate.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> check_diversity_equilibrium(rng.uniform(size=(3, 2)), tau=0.0, T=500).holds
        True
        >>> check_diversity_equilibrium(rng.uniform(size=(3, 2)), tau=0.1, T=500).holds
        True
    """
    r = _check_reward(reward)
    tau = check_nonnegative(tau, "tau")
    T = check_positive_int(T, "T")
    scale = check_scale(bound_scale)
    exact_limit = check_positive_int(exact_limit, "exact_limit")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {short(name)}")
    p, q = r.shape
    B = float(r.max() - r.min())
    V = r.max(axis=1)
    label = name or f"tabular {p} prompts x {q} responses"
    explicit = explicit_normal_form(r, exact_limit) if q**p <= exact_limit else None
    if tau == 0.0:
        order = np.argsort(V, kind="stable")
        delta = float(V[order[1]] - V[order[0]])
        if not delta > 1e-12 * B:
            raise ValueError(
                f"the worst prompt is not unique (the two smallest V differ by {delta:.3g}); the "
                "point-mass claim needs a unique minimiser of V: perturb the reward"
            )
        target = np.zeros(p)
        target[order[0]] = 1.0
        if claimed is not None:
            target = check_strategy(claimed, "claimed", p)
        return _point_mass(r, V, delta, target, T, scale, explicit, grid_points, label)
    target = gibbs_adversary(V, tau) if claimed is None else check_strategy(claimed, "claimed", p)
    eta_a = 1.0 / B if eta is None else check_positive(eta, "eta")
    return _gibbs(r, V, tau, eta_a, target, T, scale, explicit, grid_points, label)


def _point_mass(r, V, delta, target, T, scale, explicit, grid_points, label) -> CheckResult:
    p, q = r.shape
    B = float(r.max() - r.min())
    c_d = math.sqrt(8.0 * math.log(q)) / B if q >= 2 else 1.0 / B
    c_a = math.sqrt(8.0 * math.log(p)) / B
    defender = gc.hedge(gc.inverse_sqrt(c_d))
    adversary = gc.hedge(gc.inverse_sqrt(c_a))
    sd = defender.init(np.zeros((p, q)))
    sa = adversary.init(np.zeros(p))
    grid = log_grid(T, grid_points)
    cum_loss = np.zeros(p)  # sum_s V_{pi_s}(x)
    adv_loss = 0.0  # sum_s <mu_s, V_{pi_s}>
    def_regret = np.zeros(p)  # sum_s (V(x) - V_{pi_s}(x)), per prompt
    mu_sum = np.zeros(p)
    tv = np.empty(grid.size)
    measured = np.empty(grid.size)
    k = 0
    for t in range(1, T + 1):
        pi = gc.softmax(sd.logits)
        mu = gc.softmax(sa.logits)
        v_pi = np.sum(pi * r, axis=1)
        mu_sum += mu
        cum_loss += v_pi
        adv_loss += float(mu @ v_pi)
        def_regret += V - v_pi
        sd = defender.step(sd, r)  # GPO's per-prompt defender step: independent of mu
        sa = adversary.step(sa, -v_pi)
        if t == grid[k]:
            mu_bar = mu_sum / t
            tv[k] = 0.5 * float(np.sum(np.abs(mu_bar - target)))
            r_adv = adv_loss - float(np.min(cum_loss))
            measured[k] = (r_adv + float(np.sum(def_regret))) / (t * delta)
            k += 1
    bound_adv = np.asarray(bounds.hedge_anytime_regret_bound(grid, p, B, c_a))
    bound_def = np.asarray(bounds.hedge_anytime_regret_bound(grid, q, B, c_d)) if q >= 2 else np.zeros(grid.size)
    bound = scale * (bound_adv + p * bound_def) / (grid * delta)
    dynamics_ok = bool(np.all(tv <= bound + 1e-12))
    worst = int(np.argmax(tv / bound))
    notes = [
        f"T={T}, B={B:.4g}, Delta={delta:.4g}; mass off the worst prompt at T: {tv[-1]:.3g} "
        f"(regret-based middle term {measured[-1]:.3g}); worst ratio at t={int(grid[worst])}"
    ]
    exact_ok = True
    if explicit is not None:
        sol = gc.solve_lp(explicit)
        lp_tv = 0.5 * float(np.sum(np.abs(sol.col - target)))
        value_err = abs(float(sol.value) - float(V.min()))
        exact_ok = lp_tv <= 1e-7 and value_err <= 1e-9 * B
        notes.append(
            f"explicit form ({explicit.shape[0]} response maps) LP: TV(mu_LP, claimed)={lp_tv:.2g}, "
            f"|value - min V|={value_err:.2g}" + ("" if exact_ok else " -> EXACT ORACLE DISAGREES")
        )
    else:
        notes.append("explicit form too large for the LP cross-check")
    if scale != 1.0:
        notes.append(f"bound scaled by {scale:g}")
    return CheckResult(
        claim="diversity/point-mass",
        game=label,
        lhs=float(tv[worst]),
        rhs=float(bound[worst]),
        holds=dynamics_ok and exact_ok,
        citation=CITE_POINT,
        ratio=make_ratio(float(tv[worst]), float(bound[worst]), "<="),
        detail="; ".join(notes),
        curve=Curve(grid, tv, bound, measured, "TV(mean mu_t, point mass)"),
    )


def _gibbs(r, V, tau, eta_a, target, T, scale, explicit, grid_points, label) -> CheckResult:
    p, q = r.shape
    B = float(r.max() - r.min())
    defender = gc.hedge(1.0 / B)
    adversary = gc.mmd(eta_a, tau)
    sd = defender.init(np.zeros((p, q)))
    sa = adversary.init(np.zeros(p))
    grid = log_grid(T, grid_points)
    dist = np.empty(grid.size)
    cert = np.empty(grid.size)
    k = 0
    for t in range(1, T + 1):
        v_pi = np.sum(gc.softmax(sd.logits) * r, axis=1)
        sd = defender.step(sd, r)
        sa = adversary.step(sa, -v_pi)
        if t == grid[k]:
            mu = gc.softmax(sa.logits)
            pi = gc.softmax(sd.logits)
            dist[k] = float(np.sum(np.abs(mu - target)))
            cert[k] = _certificate(r, V, tau, mu, pi, explicit)
            k += 1
    bound = scale * cert
    holds = bool(np.all(dist <= bound))
    worst = int(np.argmax(dist / bound))
    mu_T = gc.softmax(sa.logits)
    notes = [
        f"T={T}, tau={tau:.4g} ({tau / B:.3g} B), adversary mmd eta={eta_a:.4g}, defender hedge eta={1.0 / B:.4g}; "
        f"||mu_T - claimed||_1={dist[-1]:.3g}, certificate {cert[-1]:.3g}; H(mu_T)={float(gc.entropy(mu_T)):.4g} "
        f"of ln p={math.log(p):.4g} (the unregularised equilibrium has H=0); worst ratio at t={int(grid[worst])}",
        "max_pi J over all response maps (explicit form)" if explicit is not None else "max_pi J = <mu, V> (decoupled form)",
    ]
    if scale != 1.0:
        notes.append(f"bound scaled by {scale:g}")
    return CheckResult(
        claim="diversity/gibbs",
        game=label,
        lhs=float(dist[worst]),
        rhs=float(bound[worst]),
        holds=holds,
        citation=CITE_GIBBS,
        ratio=make_ratio(float(dist[worst]), float(bound[worst]), "<="),
        detail="; ".join(notes),
        curve=Curve(grid, dist, bound, None, "||mu_t - Gibbs||_1"),
    )


def _certificate(r, V, tau, mu, pi, explicit) -> float:
    """``sqrt(2 gap_tau(pi, mu) / tau)`` with a rounding slack, bounding ``||mu - mu_true||_1``."""
    if explicit is not None:
        best = float(np.max(explicit.payoff @ mu))  # max over all response maps of J(map, mu)
    else:
        best = float(mu @ V)
    phi = best - tau * float(gc.entropy(mu))
    v_pi = np.sum(pi * r, axis=1)
    inner = -tau * float(gc.logsumexp(-v_pi / tau))  # min_mu' J(pi, mu') - tau H(mu')
    gap = phi - inner
    slack = 8 * np.finfo(np.float64).eps * (abs(phi) + abs(inner) + tau * math.log(len(mu)))
    return math.sqrt(2.0 * max(gap + slack, 0.0) / tau)

