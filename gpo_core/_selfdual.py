r"""The pivoting of :func:`gpo_core.solve_pivot`: Dantzig's self-dual parametric simplex on
support pairs, with ``M^{-1}`` kept by rank-one updates.

**The bases are support pairs.** The row player's LP
:math:`\max v` s.t. :math:`A^\top x - v\mathbf 1 - s = 0,\ \mathbf 1^\top x = 1,\ x, s \ge 0`
and its dual, the column player's LP
:math:`A y - w\mathbf 1 + t = 0,\ \mathbf 1^\top y = 1,\ y, t \ge 0`, share their bases: a basis
is a pair of supports :math:`(S, T)` with :math:`|S| = |T| = k`, whose basic variables are
:math:`x_S`, the column slacks :math:`s_j = (x^\top A)_j - v` for :math:`j \notin T`,
:math:`y_T` and the row slacks :math:`t_i = w - (A y)_i` for :math:`i \notin S`. All of them are
read off the bordered matrix
:math:`M = \begin{pmatrix} 0 & \mathbf 1^\top \\ \mathbf 1 & A_{ST}\end{pmatrix}`:

.. math:: M^\top \binom{-v}{x_S} = e_0, \qquad M \binom{-w}{y_T} = e_0, \qquad v = w,

and :math:`(S, T)` is an equilibrium iff :math:`x_S, y_T, s, t \ge 0`. The pairs
:math:`x_i \leftrightarrow t_i` and :math:`s_j \leftrightarrow y_j` are complementary: each
action is basic on exactly one side.

**Dantzig's self-dual parametric simplex** (Dantzig 1963, §11.2; Vanderbei, *Linear
Programming*, 2020, ch. 7) starts from *any* basis: it adds :math:`\mu\, r` with random
:math:`r > 0` to every basic variable (a fixed perturbation of both LPs' right-hand sides), so
the start is feasible for large :math:`\mu`, and lowers :math:`\mu`. At each breakpoint the
variable that reaches zero leaves its side's basis, which is a primal simplex pivot on the other
side (its complement enters there, a ratio test picks who leaves); the two sides trade the pair.
When :math:`\mu` passes 0 the basis is optimal for the unperturbed game. Each pivot changes
:math:`M` by one row, one column, or one border, so :math:`M^{-1}` is kept by rank-one updates
(:math:`O(k^2)`) and a pivot costs two matrix-vector products with :math:`A_S` and :math:`A_T`.
The method is finite for nondegenerate games; the random :math:`r` makes breakpoint ties a
measure-zero event.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.linalg
from scipy.linalg import blas


class _Breakdown(Exception):
    """Numerical trouble inside the pivoting (a singular start, a near-zero pivot, a failed
    ratio test); ``pivots`` says how many were made before it."""

    def __init__(self, message: str, pivots: int = 0, at_start: bool = False) -> None:
        super().__init__(message)
        self.pivots = pivots
        self.at_start = at_start


def _bordered(a: np.ndarray, S: Any, T: Any) -> np.ndarray:
    k = len(S)
    M = np.zeros((k + 1, k + 1))
    M[0, 1:] = 1.0
    M[1:, 0] = 1.0
    M[1:, 1:] = a[np.ix_(S, T)]
    return M


def _pivot(
    a: np.ndarray, S: list[int], T: list[int], rng: np.random.Generator, max_pivots: int
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """The self-dual parametric simplex from the basis (S, T); returns x, y, v and the pivots.

    Index space of both sides: ``0..m-1`` are row actions (``x_i`` on the row side, ``t_i`` on
    the column side), ``m..m+n-1`` column actions (``s_j`` on the row side, ``y_j`` on the
    column side); ``rb[q]`` says that ``q`` is basic on the row side (else on the column side).
    ``val + mu * rate`` is the value of each basic variable along the parametric path.
    """
    basis = _Basis(a, S, T)
    m, n = a.shape
    N = m + n
    rb = np.zeros(N, dtype=bool)
    rb[S] = True
    rb[m:] = True
    rb[m + np.asarray(T)] = False

    # The perturbation, fixed once as right-hand sides of both LPs: at the start every basic
    # variable moves at a random positive rate in mu and the free v, w do not move.
    r = rng.uniform(0.5, 1.5, N)
    rx = np.where(rb[:m], r[:m], 0.0)
    rs = np.where(rb[m:], r[m:], 0.0)
    ry = np.where(rb[m:], 0.0, r[m:])
    rt = np.where(rb[:m], 0.0, r[:m])
    b_rate = np.r_[rx.sum(), a.T @ rx - rs]  # row LP:  [1^T x ; A^T x - v - s]
    c_rate = np.r_[ry.sum(), a @ ry + rt]  # column LP: [1^T y ; A y - w + t]

    def recompute() -> tuple[np.ndarray, np.ndarray]:
        k, Minv = basis.k, basis.Minv
        Sa, Ta = np.asarray(basis.S), np.asarray(basis.T)
        rhs = np.zeros((k + 1, 2))
        rhs[0] = 1.0, b_rate[0]
        rhs[1:, 1] = b_rate[1 + Ta]
        z = Minv.T @ rhs
        x = np.zeros((m, 2))
        x[Sa] = z[1:]
        s = a.T @ x + z[0]
        s[:, 1] -= b_rate[1:]
        rhs[0] = 1.0, c_rate[0]
        rhs[1:, 0] = 0.0
        rhs[1:, 1] = c_rate[1 + Sa]
        z = Minv @ rhs
        y = np.zeros((n, 2))
        y[Ta] = z[1:]
        t = -(a @ y) - z[0]
        t[:, 1] += c_rate[1:]
        val = np.where(rb, np.r_[x[:, 0], s[:, 0]], np.r_[t[:, 0], y[:, 0]])
        rate = np.where(rb, np.r_[x[:, 1], s[:, 1]], np.r_[t[:, 1], y[:, 1]])
        return val, rate

    val, rate = recompute()
    mu = np.inf
    count = since_refactor = 0
    muv = np.empty(N)
    try:
        while True:
            muv.fill(-np.inf)
            np.divide(-val, rate, out=muv, where=rate > 0)
            b = int(np.argmax(muv))
            if not muv[b] > 0:
                break  # optimal at mu = 0
            if count >= max_pivots:
                raise _Breakdown(f"no optimal basis after {max_pivots} pivots")
            mu = min(mu, float(muv[b]))
            # b reached zero on its side and leaves it: its complement enters the other side P.
            p_row = not rb[b]
            e = b
            dP, zP = basis.direction(p_row, e, rb)
            basic_p = rb if p_row else ~rb
            lv = _ratio_test(dP, np.maximum(val + mu * rate, 0.0), basic_p, e)
            # The other side Q: lv's complement enters, e's complement (at zero) leaves.
            dQ, zQ = basis.direction(not p_row, lv, rb)
            if not dQ[e] > 1e-13:
                raise _Breakdown("inconsistent pivot")
            tv, tr = -val[lv] / dP[lv], -rate[lv] / dP[lv]
            qv, qr = -val[e] / dQ[e], -rate[e] / dQ[e]
            val = val + np.where(basic_p, tv * dP, qv * dQ)
            rate = rate + np.where(basic_p, tr * dP, qr * dQ)
            val[e], rate[e] = tv, tr
            val[lv], rate[lv] = qv, qr
            rb[e], rb[lv] = p_row, not p_row
            z_row, z_col = (zP, zQ) if p_row else (zQ, zP)
            basis.update(e, lv, p_row, z_row, z_col)
            count += 1
            since_refactor += 1
            # Rank-one updates drift: refactor now and then (a refactor costs about k pivots).
            if since_refactor >= max(128, basis.k):
                since_refactor = 0
                basis.refactor()
                val, rate = recompute()

        S, T, k = basis.S, basis.T, basis.k
        # the final basis afresh (the updated inverse has drifted): one LU solves both sides
        with warnings.catch_warnings():  # an exactly singular basis warns; it is checked below
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            lu = scipy.linalg.lu_factor(_bordered(a, S, T), check_finite=False)
        if not np.abs(np.diagonal(lu[0])).min() > 0:
            raise _Breakdown("singular final basis")
        e0 = np.zeros(k + 1)
        e0[0] = 1.0
        zx = scipy.linalg.lu_solve(lu, e0, trans=1, check_finite=False)
        zy = scipy.linalg.lu_solve(lu, e0, check_finite=False)
    except (_Breakdown, np.linalg.LinAlgError) as err:
        raise _Breakdown(str(err), count) from None
    x, y = np.zeros(m), np.zeros(n)
    x[S] = zx[1:]
    y[T] = zy[1:]
    x = np.clip(x, 0.0, None)
    y = np.clip(y, 0.0, None)
    return x / x.sum(), y / y.sum(), float(-zx[0]), count


class _Basis:
    """The support pair (S, T), ``M^{-1}`` and contiguous copies of the rows ``A_S`` and the
    columns ``A_T`` (as rows): the products of a pivot touch only those, and ``M^{-1}`` is
    updated by rank-one formulas whose vectors the pivot's two directions already computed.

    Position ``p`` of ``S`` is row ``p + 1`` of ``M`` (column ``p + 1`` of ``M^{-1}``); position
    ``q`` of ``T`` is column ``q + 1`` of ``M`` (row ``q + 1`` of ``M^{-1}``).
    """

    def __init__(self, a: np.ndarray, S: list[int], T: list[int]) -> None:
        m, n = a.shape
        self.a, self.m = a, m
        self.S, self.T = list(S), list(T)
        self.posS = {i: p for p, i in enumerate(self.S)}
        self.posT = {j: q for q, j in enumerate(self.T)}
        cap = min(m, n)
        self.AS = np.empty((cap, n))
        self.AT = np.empty((cap, m))
        self.AS[: self.k] = a[self.S]
        self.AT[: self.k] = a[:, self.T].T
        M = _bordered(a, self.S, self.T)
        try:
            self.Minv = np.linalg.inv(M)
        except np.linalg.LinAlgError:
            raise _Breakdown("singular start basis", at_start=True) from None
        # e.g. a constant game, where every A_ST with k >= 2 is singular
        cond = np.abs(M).sum(0).max() * np.abs(self.Minv).sum(0).max()
        if not np.isfinite(self.Minv).all() or cond > 1e12:
            raise _Breakdown("ill-conditioned start basis", at_start=True)

    @property
    def k(self) -> int:
        """The support size |S| = |T|."""
        return len(self.S)

    def refactor(self) -> None:
        self.Minv = np.linalg.inv(_bordered(self.a, self.S, self.T))

    def direction(self, row_side: bool, e: int, rb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Change of one side's basic variables per unit increase of its nonbasic ``e``, and the
        core solution ``dz`` (``-[1, A_eT] M^{-1}`` when ``x_e`` enters, ``-M^{-1} [1; A_Sj]``
        when ``y_j`` enters: the rank-one updates reuse them)."""
        a, m, k, Minv = self.a, self.m, self.k, self.Minv
        d = np.zeros(rb.shape[0])
        if row_side:
            if e < m:  # x_e enters: M^T dz = -[1; A_eT]
                dz = -(np.r_[1.0, self.AT[:k, e]] @ Minv)
            else:  # s_j leaves zero (j in T): M^T dz = e_q
                dz = Minv[self.posT[e - m] + 1].copy()
            d[self.S] = dz[1:]
            ds = dz[1:] @ self.AS[:k] + dz[0]
            if e < m:
                ds += a[e]
            d[m:] = ds
            d[~rb] = 0.0
        else:
            if e >= m:  # y_j enters: M dz = -[1; A_Sj]
                dz = -(Minv @ np.r_[1.0, self.AS[:k, e - m]])
            else:  # t_i leaves zero (i in S): M dz = -e_p
                dz = -Minv[:, self.posS[e] + 1]
            d[m + np.asarray(self.T)] = dz[1:]
            dt = -(dz[1:] @ self.AT[:k]) - dz[0]
            if e >= m:
                dt -= a[:, e - m]
            d[:m] = dt
            d[rb] = 0.0
        d[e] = 1.0
        return d, dz

    def update(self, e: int, lv: int, p_row: bool, z_row: np.ndarray, z_col: np.ndarray) -> None:
        """Apply the pivot: ``e`` became basic on side P, ``lv`` on the other side. A row action
        joins S when it becomes row-basic, a column action joins T when it becomes column-basic.
        ``z_row`` / ``z_col`` are the row / column side's ``dz`` of this pivot."""
        a, m, k = self.a, self.m, self.k
        joins_S = leaves_S = joins_T = leaves_T = None
        for q, to_row in ((e, p_row), (lv, not p_row)):
            if q < m:
                if to_row:
                    joins_S = q
                else:
                    leaves_S = q
            elif to_row:
                leaves_T = q - m
            else:
                joins_T = q - m
        Minv = self.Minv
        if joins_S is not None and leaves_S is not None:
            # Row p+1 of M becomes [1, A_iT]: Sherman-Morrison with eta = [1, A_iT] M^{-1},
            # which is -z_row (x_i entered the row side), and [1, A_oldT] M^{-1} = e_{p+1}.
            p = self.posS.pop(leaves_S)
            eta = -z_row
            _check_pivot(eta[p + 1])
            col = Minv[:, p + 1].copy()
            eta[p + 1] -= 1.0
            _rank_one(Minv, col, eta, -1.0 / (eta[p + 1] + 1.0))
            self.S[p] = joins_S
            self.posS[joins_S] = p
            self.AS[p] = a[joins_S]
        elif joins_T is not None and leaves_T is not None:
            # Column q+1 of M becomes [1; A_Sj]: zeta = M^{-1} [1; A_Sj] = -z_col.
            q = self.posT.pop(leaves_T)
            zeta = -z_col
            _check_pivot(zeta[q + 1])
            row = Minv[q + 1].copy()
            zeta[q + 1] -= 1.0
            _rank_one(Minv, zeta, row, -1.0 / (zeta[q + 1] + 1.0))
            self.T[q] = joins_T
            self.posT[joins_T] = q
            self.AT[q] = a[:, joins_T]
        elif joins_S is not None:
            # Border M with row [1, A_iT, a_ij] and column [1; A_Sj]: Schur complement sigma.
            i, j = joins_S, joins_T
            eta, zeta = -z_row, -z_col
            sigma = a[i, j] - (eta[0] + eta[1:] @ self.AS[:k, j])
            _check_pivot(sigma)
            new = np.empty((k + 2, k + 2))
            new[: k + 1, : k + 1] = Minv + np.outer(zeta, eta / sigma)
            new[: k + 1, k + 1] = -zeta / sigma
            new[k + 1, : k + 1] = -eta / sigma
            new[k + 1, k + 1] = 1.0 / sigma
            self.Minv = new
            self.S.append(i)
            self.T.append(j)
            self.posS[i], self.posT[j] = k, k
            self.AS[k] = a[i]
            self.AT[k] = a[:, j]
        else:
            # Drop row p+1 and column q+1 of M: move both to the end first (a permutation of
            # M^{-1}'s columns and rows), then M^{-1} loses its last row and column.
            p, q = self.posS.pop(leaves_S), self.posT.pop(leaves_T)
            self._swap_to_end(p, q)
            piv = Minv[k, k]
            _check_pivot(piv)
            self.Minv = Minv[:k, :k] - np.outer(Minv[:k, k], Minv[k, :k] / piv)
            self.S.pop()
            self.T.pop()

    def _swap_to_end(self, p: int, q: int) -> None:
        """Move S position p and T position q to the last position (k - 1)."""
        k, Minv = self.k, self.Minv
        last = k - 1
        if p != last:
            i = self.S[last]
            self.S[p], self.S[last] = i, self.S[p]
            self.posS[i] = p
            self.AS[[p, last]] = self.AS[[last, p]]
            Minv[:, [p + 1, k]] = Minv[:, [k, p + 1]]
        if q != last:
            j = self.T[last]
            self.T[q], self.T[last] = j, self.T[q]
            self.posT[j] = q
            self.AT[[q, last]] = self.AT[[last, q]]
            Minv[[q + 1, k]] = Minv[[k, q + 1]]


def _ratio_test(d: np.ndarray, cur: np.ndarray, basic: np.ndarray, e: int) -> int:
    """The basic variable that reaches zero first as the entering one grows (Harris's two-pass
    test: among those reaching zero within a tolerance of the first, the one with the largest
    rate of decrease, so that degenerate games, whose ties are exact, never pivot on a
    rounding-sized element)."""
    drop = -d
    cand = basic & (drop > 1e-9 * max(1.0, float(np.abs(d).max())))
    cand[e] = False
    if not cand.any():
        raise _Breakdown("unbounded ratio test")
    idx = np.flatnonzero(cand)
    bound = ((cur[idx] + 1e-12) / drop[idx]).min()
    near = idx[cur[idx] / drop[idx] <= bound]
    return int(near[np.argmax(drop[near])])


def _check_pivot(value: float) -> None:
    if not abs(value) > 1e-11:
        raise _Breakdown(f"near-zero pivot {value!r}")


def _rank_one(target: np.ndarray, u: np.ndarray, w: np.ndarray, alpha: float) -> None:
    """``target += alpha * outer(u, w)`` in place (BLAS ger on the Fortran view, no temporary)."""
    out = blas.dger(alpha, w, u, a=target.T, overwrite_a=True)
    if not np.shares_memory(out, target):  # pragma: no cover - f2py copied (never for C order)
        target[...] = out.T
