"""OpenSpiel games as payoff matrices, for :meth:`gpo_core.MatrixGame.from_openspiel`.

Imported only there (OpenSpiel is optional). A name is looked up first, so that an unknown one
gets the closest registered names in one line instead of OpenSpiel's list of every game; a
sequential game's normal-form size is counted from its tree before anything is built.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import numpy as np

from gpo_core._validate import short

LIST_GAMES = "list them with: python -c \"import pyspiel; print(pyspiel.registered_names())\""


def load(game: Any) -> tuple[Any, Any]:
    """``(pyspiel, the loaded game)`` from a name (with optional parameters) or a game."""
    try:
        import pyspiel  # noqa: PLC0415  (optional dependency, imported on use)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "MatrixGame.from_openspiel needs OpenSpiel: pip install open-spiel"
        ) from exc
    if isinstance(game, pyspiel.Game):
        return pyspiel, game
    if not isinstance(game, str):
        raise TypeError(f"game must be an OpenSpiel game name or pyspiel.Game, got {short(game)}")
    short_name = game.split("(", 1)[0].strip()
    names = list(pyspiel.registered_names())
    if short_name not in names:
        close = difflib.get_close_matches(short_name, names, n=4, cutoff=0.5)
        hint = f"closest names: {', '.join(close)}; " if close else ""
        raise ValueError(
            f"game {game!r} is not a game OpenSpiel can load (no game of that name); {hint}"
            f"{LIST_GAMES}"
        )
    try:
        return pyspiel, pyspiel.load_game(game)
    except Exception as exc:  # a bad parameter: OpenSpiel's own first line says which
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"game {game!r} is not a game OpenSpiel can load ({first[:300]}); check its "
            f"parameters, e.g. {short_name}() for the defaults"
        ) from exc


def payoffs(pyspiel: Any, game: Any, max_entries: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column payoff matrices of a 2-player OpenSpiel game of at most ``max_entries``."""
    name = game.get_type().short_name
    if isinstance(game, pyspiel.MatrixGame):  # already a matrix in memory
        return np.asarray(game.row_utilities()), np.asarray(game.col_utilities())
    dynamics = game.get_type().dynamics
    if dynamics == pyspiel.GameType.Dynamics.SEQUENTIAL:
        _check_normal_form_size(pyspiel, game, max_entries)
        matrix = pyspiel.extensive_to_matrix_game(game)
        return np.asarray(matrix.row_utilities()), np.asarray(matrix.col_utilities())
    # A one-shot simultaneous game: enumerate the joint actions at the root.
    state = game.new_initial_state()
    if state.is_chance_node():
        raise ValueError(
            f"game {name!r} starts with a chance node: pass it in sequential form "
            "(pyspiel.convert_to_turn_based) or a matrix game"
        )
    rows, cols = state.legal_actions(0), state.legal_actions(1)
    _refuse_if_big(name, len(rows) * len(cols), max_entries, f"{len(rows)} x {len(cols)}")
    row = np.empty((len(rows), len(cols)))
    col = np.empty_like(row)
    for i, a in enumerate(rows):
        for j, b in enumerate(cols):
            child = state.clone()
            child.apply_actions([a, b])
            if not child.is_terminal():
                raise ValueError(f"game {name!r} is not one-shot; pass a matrix game")
            row[i, j], col[i, j] = child.returns()
    return row, col


def _check_normal_form_size(pyspiel: Any, game: Any, max_entries: int) -> None:
    """Refuse a sequential game whose pure-strategy normal form has over ``max_entries`` entries.

    Each player has one pure strategy per choice of an action at each of their information
    states (OpenSpiel's ``ExtensiveToTensorGame``), so the matrix has ``prod |A(s)|`` rows over
    the row player's states (columns: the column player's). The tree is walked depth first and
    the walk stops as soon as the product passes the limit, so a huge game is refused at once.
    The walk itself is capped too: ``extensive_to_matrix_game`` walks the tree once per entry.
    """
    name = game.get_type().short_name
    if not game.get_type().provides_information_state_string:
        raise ValueError(
            f"game {name!r} has no information states, so it has no pure-strategy normal form "
            "that OpenSpiel can build; pass a matrix game"
        )
    limit = math.log(max_entries)
    logs, seen, nodes = [0.0, 0.0], (set(), set()), 0
    stack = [game.new_initial_state()]
    while stack:
        state = stack.pop()
        nodes += 1
        if nodes > max_entries:
            raise ValueError(
                f"game {name!r} is too big to convert to a matrix: its tree has more than "
                f"{max_entries:,} states, and the conversion walks it once per matrix entry "
                "(max_entries bounds both); pass a smaller game or raise max_entries"
            )
        if state.is_terminal():
            continue
        if state.is_chance_node():
            stack.extend(state.child(a) for a, _ in state.chance_outcomes())
            continue
        player = state.current_player()
        actions = state.legal_actions()
        key = state.information_state_string(player)
        if key not in seen[player]:
            seen[player].add(key)
            logs[player] += math.log(len(actions))
            if logs[0] + logs[1] > limit + 1e-9:
                _refuse_if_big(name, math.exp(logs[0] + logs[1]), max_entries,
                               f"{_count(logs[0])} x {_count(logs[1])}", partial=True)
        stack.extend(state.child(a) for a in actions)


def _count(log: float) -> str:
    return f"{round(math.exp(log)):,}" if log < 40 else f"about 10^{log / math.log(10):.0f}"


def _megabytes(entries: int) -> str:
    """The peak memory of building ``entries`` entries (about 100 bytes each, as Python floats)."""
    mb = entries * 100 / 1e6
    return f"{mb / 1e3:.3g} GB" if mb >= 1e3 else f"{mb:.3g} MB"


def _refuse_if_big(name: str, entries: float, max_entries: int, shape: str, partial=False) -> None:
    if entries <= max_entries:
        return
    many = f"at least {entries:.3g}" if partial else f"{int(entries):,}"
    rows = f"at least {shape}" if partial else shape
    raise ValueError(
        f"game {name!r} is too big to convert to a matrix: its normal form has {many} entries "
        f"({rows} pure strategies), over the limit of max_entries={max_entries:,} (about "
        f"{_megabytes(max_entries)} while OpenSpiel builds it); solve a smaller game, or "
        "raise the limit (MatrixGame.from_openspiel(..., max_entries=N), gpo solve --max-entries N)"
    )
