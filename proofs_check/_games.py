"""The games the checks run on: OpenSpiel's zero-sum matrix games, Kuhn poker, Blotto, random games.

:func:`openspiel_matrix_games` enumerates ``pyspiel.registered_names()`` for the names starting
with ``matrix_`` and keeps the zero-sum ones; every general-sum one comes back as a
:class:`~proofs_check.Skip` with its reason (the theory here is about zero-sum games), never
silently dropped.

:func:`tilted_start` gives a reproducible interior starting point for games whose uniform profile
is already an exact equilibrium (rock-paper-scissors, matching pennies): from there every learner
stands still and every bound holds vacuously, so those games are started elsewhere.
"""

from __future__ import annotations

import numpy as np

import gpo_core as gc
from proofs_check._result import Skip

__all__ = ["openspiel_matrix_games", "openspiel_extensive_games", "random_games", "tilted_start"]


def openspiel_matrix_games() -> tuple[list[gc.MatrixGame], list[Skip]]:
    """Every registered OpenSpiel ``matrix_*`` game: zero-sum ones as games, the rest as skips."""
    try:
        import pyspiel  # noqa: PLC0415  (optional dependency)
    except ImportError:  # pragma: no cover - open-spiel is a test dependency here
        return [], [Skip("matrix_* (OpenSpiel)", "OpenSpiel is not installed: pip install open-spiel")]
    games: list[gc.MatrixGame] = []
    skips: list[Skip] = []
    for name in sorted(n for n in pyspiel.registered_names() if n.startswith("matrix_")):
        loaded = pyspiel.load_game(name)
        utility = str(loaded.get_type().utility).rsplit(".", 1)[-1]
        try:
            games.append(gc.MatrixGame.from_openspiel(name))
        except ValueError as exc:
            skips.append(Skip(name, f"{utility}: {exc}"))
    return games, skips


def openspiel_extensive_games() -> tuple[list[gc.MatrixGame], list[Skip]]:
    """Kuhn poker (pure-strategy normal form, 64 x 64) and Blotto (66 x 66) as matrix games."""
    games: list[gc.MatrixGame] = []
    skips: list[Skip] = []
    for name in ("kuhn_poker", "blotto"):
        try:
            games.append(gc.MatrixGame.from_openspiel(name))
        except (ImportError, ValueError) as exc:  # pragma: no cover - environment dependent
            skips.append(Skip(name, str(exc)))
    return games, skips


def random_games(shapes: list[tuple[int, int, int]]) -> list[gc.MatrixGame]:
    """Seeded uniform ``[-1, 1]`` games, one per ``(m, n, seed)``."""
    return [gc.MatrixGame.random(m, n, seed=seed) for m, n, seed in shapes]


def tilted_start(game: gc.MatrixGame, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A reproducible interior start ``(x0, y0) = softmax(N(0, 1))`` for ``game``.

    Examples:
        >>> x0, y0 = tilted_start(gc.MatrixGame.random(3, 2), seed=1)
        >>> x0.shape, y0.shape, bool(abs(x0.sum() - 1) < 1e-12)
        ((3,), (2,), True)
    """
    m, n = game.shape
    rng = np.random.default_rng(seed)
    return gc.softmax(rng.normal(size=m)), gc.softmax(rng.normal(size=n))


def uniform_is_equilibrium(game: gc.MatrixGame) -> bool:
    """Whether the uniform profile has Nash gap 0 (to ``1e-12`` times the payoff range)."""
    m, n = game.shape
    gap = float(gc.nash_gap(game, np.full(m, 1.0 / m), np.full(n, 1.0 / n)))
    return gap <= 1e-12 * max(game.payoff_range, 1.0)
