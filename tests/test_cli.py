"""The ``gpo`` command line: solve, plots, errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from gpo_core.cli import main


def test_solve_openspiel_game_prints_the_exact_answer(capsys):
    assert main(["solve", "matrix_brps", "--rule", "rm+", "--alternating", "--averaging", "linear",
                 "--steps", "3000"]) == 0
    out = capsys.readouterr().out
    assert "matrix_brps" in out and "nash gap" in out
    row = out.split("row (avg)")[1].splitlines()[0]
    probs = np.array([float(v) for v in row.strip(" []").split(",")])
    np.testing.assert_allclose(probs, [1 / 16, 10 / 16, 5 / 16], atol=2e-3)  # Bosansky et al. 2016


def test_solve_with_discounted_rm_plus(capsys):
    # biased RPS: a uniform start is not its equilibrium (1/16, 10/16, 5/16)
    assert main(["solve", "matrix_brps", "--rule", "drm+", "--alternating", "--averaging",
                 "quadratic", "--steps", "3000"]) == 0
    out = capsys.readouterr().out
    row = out.split("row (avg)")[1].splitlines()[0]
    probs = np.array([float(v) for v in row.strip(" []").split(",")])
    np.testing.assert_allclose(probs, [1 / 16, 10 / 16, 5 / 16], atol=2e-3)


def test_solve_payoff_file_and_plot(tmp_path, capsys):
    path = tmp_path / "game.csv"
    np.savetxt(path, [[2.0, -1.0], [-1.0, 1.0]], delimiter=",")
    png = tmp_path / "gap.png"
    assert main(["solve", str(path), "--rule", "optimistic-hedge", "--steps", "2000",
                 "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "(exact: 0.2)" in out and "solve_pivot" in out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["solve", "matrix_pd"], "not zero-sum"),
        (["solve", "no_such_game"], "not a game OpenSpiel can load"),
        (["solve", "/nope/x.npy"], "does not exist"),
        (["solve", "matrix_rps", "--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_errors_are_clear(argv, match, capsys):
    assert main(argv) == 2
    assert re.search(match, capsys.readouterr().err)
