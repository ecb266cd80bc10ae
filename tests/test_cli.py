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


def test_solve_auto_is_gc_solve(tmp_path, capsys):
    path = tmp_path / "big.npy"
    a = np.random.default_rng(0).uniform(-1, 1, (400, 350))
    np.save(path, a)
    assert main(["solve", str(path), "--rule", "auto", "--tol", "1e-3"]) == 0
    out = capsys.readouterr().out
    assert "gc.solve: drm+ float32" in out
    x = np.array([float(v) for v in out.split("row ")[1].splitlines()[0].strip(" []").split(",")])
    y = np.array([float(v) for v in out.split("col ")[1].splitlines()[0].strip(" []").split(",")])
    gap = float(out.split("nash gap")[1].split()[0])
    assert gap <= 1e-3
    # printed to 4 decimals: the gap of the printed profile is within 1e-4 * 2 * max|A| of it
    assert float((a @ (y / y.sum())).max() - ((x / x.sum()) @ a).min()) <= gap + 2e-4 * len(x)
    assert main(["solve", "matrix_brps", "--rule", "auto"]) == 0
    out = capsys.readouterr().out
    assert "gc.solve: pivot" in out and "[0.0625, 0.6250, 0.3125]" in out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["solve", "matrix_pd"], "not zero-sum"),
        (["solve", "no_such_game"], "not a game OpenSpiel can load"),
        (["solve", "/nope/x.npy"], "does not exist"),
        (["solve", "matrix_rps", "--steps", "0"], "--steps must be >= 1"),
        (["solve", "matrix_rps", "--rule", "auto", "--plot", "g.png"], "--rule auto has none"),
        (["solve", "matrix_rps", "--rule", "auto", "--tol", "0"], "tol must be a finite number > 0"),
    ],
)
def test_errors_are_clear(argv, match, capsys):
    assert main(argv) == 2
    assert re.search(match, capsys.readouterr().err)
