"""Result values: one :class:`CheckResult` per (claim, game), gathered in a :class:`Report`.

Every check compares a measured quantity ``lhs`` with the theory's ``rhs``:

* ``sense == "<="``: the claim is ``lhs <= rhs`` (a bound); ``ratio = lhs / rhs``.
* ``sense == ">="``: the claim is ``lhs >= rhs`` (a decay exponent or rate that must be at least
  the theory's); ``ratio = rhs / lhs``.

So in both cases ``ratio <= 1`` exactly when the claim holds, and the table's "worst ratio" is the
largest one. ``holds`` may allow a stated floating-point slack (given in ``detail``), so a ratio of
``1 + 1e-12`` can still hold; nothing else is tolerated.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, NamedTuple

import numpy as np

__all__ = ["Curve", "CheckResult", "Skip", "Report", "make_ratio"]


class Curve(NamedTuple):
    """A measured series and the bound it is checked against, for the plots.

    Attributes:
        t: the x values (rounds or steps), shape ``(k,)``.
        measured: the measured quantity at each ``t`` (Nash gap, regret, divergence).
        bound: the theory's bound at each ``t``; ``None`` where no theorem is claimed.
        reference: an extra measured series drawn for comparison (e.g. the simultaneous gap
            next to the alternating one), or ``None``.
        ylabel: what ``measured`` is.
    """

    t: np.ndarray
    measured: np.ndarray
    bound: np.ndarray | None
    reference: np.ndarray | None
    ylabel: str


def make_ratio(lhs: float, rhs: float, sense: str) -> float:
    """``lhs/rhs`` for ``"<="`` claims and ``rhs/lhs`` for ``">="`` ones (``<= 1`` iff it holds).

    Examples:
        >>> make_ratio(1.0, 4.0, "<="), make_ratio(1.0, 0.5, ">="), make_ratio(0.0, 0.0, "<=")
        (0.25, 0.5, 0.0)
    """
    num, den = (lhs, rhs) if sense == "<=" else (rhs, lhs)
    if math.isinf(den) and not math.isinf(num):
        return 0.0
    if den > 0:
        return num / den
    return 0.0 if num <= 0 else math.inf


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one check of one claim on one game (or utility sequence).

    Attributes:
        claim: a stable identifier, e.g. ``"regret/hedge-anytime"``.
        game: the game or sequence it was checked on.
        lhs: the measured side (at the worst point of the grid, when there is a grid).
        rhs: the theory's side at that point.
        holds: whether the claim held everywhere it was checked.
        citation: the theorem and source (or ``"none: ..."`` for an empirical claim).
        ratio: ``lhs/rhs`` (``"<="``) or ``rhs/lhs`` (``">="``), maximised over the grid.
        sense: ``"<="`` or ``">="``.
        kind: ``"theorem"`` (a proved bound) or ``"empirical"`` (a measured rate, no theorem).
        detail: how it was measured, the parameters and anything surprising.
        curve: the series behind it, for the plots (``None`` for single numbers).
    """

    claim: str
    game: str
    lhs: float
    rhs: float
    holds: bool
    citation: str
    ratio: float
    sense: Literal["<=", ">="] = "<="
    kind: Literal["theorem", "empirical"] = "theorem"
    detail: str = ""
    curve: Curve | None = dataclasses.field(default=None, repr=False, compare=False)

    def line(self) -> str:
        """One human-readable line: verdict, claim, game, the comparison and the ratio."""
        verdict = "PASS" if self.holds else "FAIL"
        return (
            f"{verdict} {self.claim} [{self.game}]: {self.lhs:.4g} {self.sense} {self.rhs:.4g} "
            f"(ratio {self.ratio:.3g}) {self.detail}"
        )


@dataclasses.dataclass(frozen=True)
class Skip:
    """A game that was not checked, and why (e.g. a general-sum OpenSpiel game)."""

    game: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Report:
    """Everything a run produced.

    Attributes:
        results: one :class:`CheckResult` per (claim, game).
        skipped: games left out, each with its reason.
        plots: paths of the PNG files written.
        out_dir: the folder they were written to.
        quick: whether this was the quick run.
        seconds: wall-clock duration of the run.
    """

    results: tuple[CheckResult, ...]
    skipped: tuple[Skip, ...]
    plots: tuple[str, ...]
    out_dir: str
    quick: bool
    seconds: float

    @property
    def ok(self) -> bool:
        """True when every claim held on every game it was checked on."""
        return all(r.holds for r in self.results)

    def rows(self) -> list[tuple[str, int, float, str, str]]:
        """``(claim, number of games, worst ratio, verdict, citation)`` per claim, in run order."""
        order: list[str] = []
        groups: dict[str, list[CheckResult]] = {}
        for r in self.results:
            if r.claim not in groups:
                order.append(r.claim)
                groups[r.claim] = []
            groups[r.claim].append(r)
        rows = []
        for claim in order:
            rs = groups[claim]
            failed = sum(not r.holds for r in rs)
            empirical = all(r.kind == "empirical" for r in rs)
            tag = ""
            if empirical:
                tag = "empirical, no theorem" if rs[0].citation.startswith("none") else "empirical"
            if failed:
                verdict = f"FAIL ({failed}/{len(rs)}{', ' + tag if tag else ''})"
            else:
                verdict = f"PASS ({tag})" if tag else "PASS"
            worst = max(r.ratio for r in rs)
            rows.append((claim, len(rs), worst, verdict, rs[0].citation))
        return rows

    def table(self) -> str:
        """The one summary table: claim, games, worst measured/bound ratio, verdict."""
        rows = self.rows()
        w_claim = max([len("claim")] + [len(r[0]) for r in rows])
        lines = [
            f"{'claim':<{w_claim}}  {'games':>5}  {'worst ratio':>11}  verdict",
            f"{'-' * w_claim}  {'-' * 5}  {'-' * 11}  {'-' * 28}",
        ]
        for claim, n, worst, verdict, _ in rows:
            lines.append(f"{claim:<{w_claim}}  {n:>5d}  {worst:>11.4g}  {verdict}")
        return "\n".join(lines)
