r"""Two-player zero-sum matrix games: the one sign convention of the library.

The row player picks a mixed strategy :math:`x \in \Delta_m`, the column player
:math:`y \in \Delta_n`, and the **row player maximises** :math:`x^\top A y` while the column player
minimises it. In the alignment game the row player is the defender (it maximises reward) and the
column player is the adversary. Utilities handed to an update rule are always "higher is better"
for the player receiving them, so the row player gets :math:`A y` and the column player gets
:math:`-A^\top x`; no constructor ever flips a sign behind the user's back.

``payoff`` may carry leading batch axes, shape ``(..., m, n)``: a batch of games solved together.
It may be a numpy array (stored read-only, float32 if given float32 and float64 otherwise) or a
torch tensor (stored as a copy in torch, on its device, float32 or float64 by the same rule; torch
cannot make it read-only, so do not edit ``game.payoff`` in place). Everything that plays or
measures the game (:func:`gpo_core.play`, the rules, :func:`gpo_core.nash_gap`, ...) then computes
in the payoff's library, dtype and device; see ``gpo_core._xp``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from gpo_core import _xp
from gpo_core._validate import check_positive_int, check_strategy, short

__all__ = ["MatrixGame", "as_game"]

# The largest payoff matrix MatrixGame.from_openspiel builds by default (entries m * n): OpenSpiel
# returns it as Python lists of floats, about 100 bytes an entry at its peak, so 10 million
# entries already take a gigabyte (tic-tac-toe's normal form has more than 10^300).
MAX_ENTRIES = 10_000_000


@dataclasses.dataclass(frozen=True, eq=False)
class MatrixGame:
    """A zero-sum game ``x^T A y`` (row maximises), possibly a batch of them.

    Args:
        payoff: array-like of shape ``(..., m, n)``, finite real numbers; the row player's payoff.
            A torch tensor (CPU or CUDA) stays a torch tensor on its device (needs
            ``pip install "gpo[array]"``); float32 stays float32, anything else becomes float64.
        name: optional label used in reports.

    Examples:
        >>> rps = MatrixGame([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], name="rps")
        >>> rps.shape
        (3, 3)
        >>> u_row, u_col = rps.utilities([1, 0, 0], [1/3, 1/3, 1/3])
        >>> u_row.tolist(), u_col.tolist()
        ([0.0, 0.0, 0.0], [-0.0, 1.0, -1.0])
    """

    payoff: np.ndarray
    name: str = ""

    def __init__(self, payoff: Any, name: str = "") -> None:
        arr = _checked_payoff(payoff, "payoff")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {short(name)}")
        if isinstance(arr, np.ndarray):
            arr.setflags(write=False)  # games are values: nobody may edit a game in place
        object.__setattr__(self, "payoff", arr)
        object.__setattr__(self, "name", name)

    # ------------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)``: number of row and column actions."""
        return self.payoff.shape[-2], self.payoff.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Leading axes: ``()`` for a single game."""
        return tuple(self.payoff.shape[:-2])

    @property
    def payoff_range(self) -> float:
        """``max A - min A`` over all games in the batch (the width that regret bounds use)."""
        return float(self.payoff.max() - self.payoff.min())

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        batch = f", batch_shape={self.batch_shape}" if self.batch_shape else ""
        return f"MatrixGame({label}shape={self.shape}{batch})"

    # ---------------------------------------------------------------- payoffs
    def utilities(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per-action utilities ``(A y, -A^T x)``, each "higher is better" for its player.

        ``x`` and ``y`` are moved to the payoff's library, dtype and device, and so are the results.
        """
        m, n = self.shape
        x = check_profile_shape(check_strategy(x, "x", m, like=self.payoff), "x", self.batch_shape)
        y = check_profile_shape(check_strategy(y, "y", n, like=self.payoff), "y", self.batch_shape)
        return row_utilities(self.payoff, y), col_utilities(self.payoff, x)

    def value(self, x: Any, y: Any) -> np.ndarray:
        """Expected payoff ``x^T A y`` to the row player (a scalar, or one per batched game)."""
        u_row, _ = self.utilities(x, y)
        m = self.shape[0]
        xp = _xp.namespace(self.payoff)
        return xp.sum(check_strategy(x, "x", m, like=self.payoff) * u_row, axis=-1)

    def swap(self) -> MatrixGame:
        """The same game with the players' roles exchanged: payoff ``-A^T``."""
        xp = _xp.namespace(self.payoff)
        return MatrixGame(-_xp.swap_last(xp, self.payoff), name=f"swap({self.name})")

    # ----------------------------------------------------------- constructors
    @classmethod
    def random(
        cls,
        m: int,
        n: int | None = None,
        *,
        seed: int = 0,
        low: float = -1.0,
        high: float = 1.0,
        batch_shape: tuple[int, ...] = (),
    ) -> MatrixGame:
        """A game with i.i.d. uniform payoffs in ``[low, high]``, reproducible from ``seed``.

        Examples:
            >>> MatrixGame.random(4, 2, seed=1).shape
            (4, 2)
        """
        m = check_positive_int(m, "m")
        n = m if n is None else check_positive_int(n, "n")
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValueError(f"need finite low < high, got low={low!r}, high={high!r}")
        rng = np.random.default_rng(seed)
        payoff = rng.uniform(low, high, size=(*tuple(batch_shape), m, n))
        # The fresh array is ours and finite by construction: adopt it instead of copying it
        # (a 10,000 x 10,000 game would otherwise peak at twice its 800 MB).
        return cls._adopt(payoff, f"random{m}x{n}(seed={seed})")

    @classmethod
    def _adopt(cls, payoff: Any, name: str = "") -> MatrixGame:
        """A game around ``payoff`` itself, unchecked and uncopied: for the library's own fresh,
        finite float32/float64 arrays of at least two dimensions (the constructor's copy and
        finiteness test would double a big game's memory for a moment)."""
        if isinstance(payoff, np.ndarray):
            payoff.setflags(write=False)
        game = object.__new__(cls)
        object.__setattr__(game, "payoff", payoff)
        object.__setattr__(game, "name", name)
        return game

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> MatrixGame:
        """Load the row player's payoff from a ``.npy`` or ``.csv`` (comma-separated) file."""
        path = os.fspath(path)
        if not path.endswith((".npy", ".csv")):
            raise ValueError(f"path {path!r} must end in .npy or .csv (a payoff file)")
        if not os.path.exists(path):
            raise ValueError(f"path {path!r} does not exist; give a .npy or .csv payoff file")
        if os.path.isdir(path):
            raise ValueError(f"path {path!r} is a folder; give a .npy or .csv payoff file")
        try:
            if path.endswith(".npy"):
                payoff = np.load(path, allow_pickle=False)
            else:
                payoff = np.loadtxt(path, delimiter=",", ndmin=2)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"path {path!r} is not a readable payoff file ({exc}); write it with "
                "numpy.save or as comma-separated numbers, one row per line"
            ) from exc
        return cls(payoff, name=os.path.basename(path))

    @classmethod
    def from_openspiel(cls, game: Any, *, max_entries: int = MAX_ENTRIES) -> MatrixGame:
        """Convert an OpenSpiel game (a name or a ``pyspiel.Game``) into a ``MatrixGame``.

        Matrix games (``matrix_rps``, ``matrix_brps``, ...) are read directly; other one-shot
        simultaneous games (``blotto``) through their payoff tensor; sequential two-player games
        (``kuhn_poker``) through ``pyspiel.extensive_to_matrix_game`` (pure-strategy normal form).
        The game must be zero-sum: a general-sum game raises ``ValueError``.

        A sequential game's normal form has one row per pure strategy, the product over the
        player's information states of their action counts: exponential in the game's size.
        That size is counted from the game tree first (stopping as soon as it passes the limit),
        and a matrix of more than ``max_entries`` entries (``m * n``; 10 million by default,
        about a gigabyte while OpenSpiel builds it) is refused with its size; raise
        ``max_entries`` to convert it anyway.
        """
        from gpo_core._openspiel import load, payoffs  # noqa: PLC0415  (needs pyspiel)

        max_entries = check_positive_int(max_entries, "max_entries")
        pyspiel, loaded = load(game)
        name = loaded.get_type().short_name
        if loaded.num_players() != 2:
            raise ValueError(f"game {name!r} has {loaded.num_players()} players; need exactly 2")
        row, col = payoffs(pyspiel, loaded, max_entries)
        scale = max(1.0, float(np.max(np.abs(row))))
        if not np.allclose(row + col, 0.0, atol=1e-9 * scale):
            raise ValueError(
                f"game {name!r} is not zero-sum (row + column payoffs differ from 0 by up to "
                f"{float(np.max(np.abs(row + col))):.3g}); MatrixGame only models zero-sum games"
            )
        return cls(row, name=name)


def as_game(game: Any, name: str = "game") -> MatrixGame:
    """``game`` itself if it is a :class:`MatrixGame`, else a game built from a payoff array.

    Every solver, diagnostic and :func:`gpo_core.play` takes a payoff array (numpy, a torch
    tensor, nested lists; shape ``(..., m, n)``, the row player's payoff) where a game is
    expected; it is checked and copied once, so build the ``MatrixGame`` yourself to reuse a
    big one.

    Examples:
        >>> as_game([[1, -1], [-1, 1]]).shape
        (2, 2)
    """
    if isinstance(game, MatrixGame):
        return game
    if isinstance(game, (str, bytes, os.PathLike)):
        raise TypeError(
            f"{name} must be a gpo_core.MatrixGame or a payoff array of shape (..., m, n), got "
            f"{short(game)}; load a named game with gpo_core.MatrixGame.from_openspiel(name) "
            "or a payoff file with gpo_core.MatrixGame.from_file(path)"
        )
    if not isinstance(game, (list, tuple, np.ndarray, np.generic)) and not (
        hasattr(game, "__array__") or hasattr(game, "__dlpack__")
    ):
        raise TypeError(
            f"{name} must be a gpo_core.MatrixGame or a payoff array of shape (..., m, n) (a "
            f"numpy array, a torch tensor or nested lists), got {short(game)}"
        )
    return MatrixGame._adopt(_checked_payoff(game, name))


def check_profile_shape(strategy: Any, name: str, batch: tuple[int, ...]) -> Any:
    """``strategy`` if its leading axes broadcast to the game's ``batch`` (one strategy, or one
    per game: :func:`gpo_core.play`'s rule for ``x0``), else a ``ValueError`` naming ``name``."""
    lead = tuple(strategy.shape[:-1])
    if lead != batch and (len(lead) > len(batch) or any(
        a not in (1, b) for a, b in zip(reversed(lead), reversed(batch))
    )):
        size = strategy.shape[-1]
        raise ValueError(
            f"{name} must broadcast to the game's batch: shape {(*batch, size)} or (..., {size}), "
            f"got shape {tuple(strategy.shape)}; give one strategy, or one per game"
        )
    return strategy


def _checked_payoff(payoff: Any, name: str) -> Any:
    """The constructor's check and copy of a payoff, its messages naming ``name``."""
    arr = _xp.as_float_array(payoff, name, min_ndim=2)
    if math.prod(arr.shape) == 0:
        raise ValueError(
            f"{name} must have at least one row and one column, got shape {tuple(arr.shape)}"
        )
    return arr


# Shared kernels (no validation): the hot path of every solver calls these directly. The `@`
# operator keeps them library-neutral (numpy's `@` is np.matmul; a tensor's is torch.matmul).
def row_utilities(payoff: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``A y`` over the last axes (batched matrix-vector product)."""
    if payoff.ndim == 2 and y.ndim == 1:
        return payoff @ y
    return (payoff @ y[..., :, None])[..., 0]


def col_utilities(payoff: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``-A^T x`` over the last axes: the column (minimising) player's utilities."""
    if payoff.ndim == 2 and x.ndim == 1:
        return -(x @ payoff)
    return -(x[..., None, :] @ payoff)[..., 0, :]
