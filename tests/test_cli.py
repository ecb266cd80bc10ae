"""The ``gpo`` command line: solve, plots, errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from backends.cli import main


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
        (["solve", "matrix_rps", "--tol", "-1"], r"--tol must be a finite number > 0, got -1\.0"),
        # unknown names and missing files: one line, the closest names, how to list them
        (["solve", "kuhn_pokr"], r"^gpo: error: game 'kuhn_pokr' is not a game OpenSpiel can load "
         r"\(no game of that name\); closest names: kuhn_poker, .*registered_names\(\)\)\"\n$"),
        (["solve", "g.txt"], r"^gpo: error: game file 'g\.txt' does not exist \(nor is it an OpenSpiel "
         r"game name\): give a \.npy or \.csv payoff file.*registered_names"),
        # the normal form's size is refused before it is built
        (["solve", "tic_tac_toe"], r"game 'tic_tac_toe' is too big to convert to a matrix: .*"
         r"max_entries=10,000,000 .*gpo solve --max-entries N"),
        (["solve", "kuhn_poker", "--max-entries", "100"], r"too big .*max_entries=100 "),
        (["solve", "kuhn_poker", "--max-entries", "0"], r"--max-entries must be >= 1, got 0"),
        # options the rule ignores, and bad values
        (["solve", "matrix_rps", "--rule", "hedge", "--alpha", "-1"],
         r"--alpha is mmd's regularisation weight; --rule hedge does not use it"),
        (["solve", "matrix_rps", "--rule", "rm+", "--eta", "-5"],
         r"--eta is the step size of hedge, optimistic-hedge, mmd; --rule rm\+ has none"),
        (["solve", "matrix_rps", "--rule", "drm+", "--eta", "0.1"], r"--rule drm\+ has none"),
        (["solve", "matrix_rps", "--rule", "auto", "--eta", "0.1"], r"--rule auto has none"),
        (["solve", "matrix_rps", "--rule", "mmd", "--alpha", "-1"],
         r"--alpha must be a finite number >= 0, got -1\.0"),
        (["solve", "matrix_rps", "--rule", "hedge", "--eta", "-5"],
         r"--eta must be a finite number > 0, got -5\.0"),
        (["solve", "matrix_rps", "--rule", "mmd", "--eta", "nan"], r"--eta must be a finite"),
        (["solve", "matrix_rps", "--rule", "auto", "--alternating"],
         r"--alternating sets how a rule plays, and --rule auto"),
        (["solve", "matrix_rps", "--rule", "auto", "--averaging", "linear"], r"--averaging sets"),
    ],
)
def test_errors_are_clear(argv, match, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert re.search(match, captured.err), captured.err
    assert captured.out == ""  # refused before any report


def test_a_batch_of_games_is_refused_up_front(tmp_path, capsys):
    """A (2, 3, 3) payoff printed half a report, then a numpy error."""
    path = tmp_path / "batch.npy"
    np.save(path, np.zeros((2, 3, 3)))
    assert main(["solve", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.search(r"gpo solve takes one game, a payoff of shape \(m, n\); .*batch\.npy' holds "
                     r"a batch of shape \(2, 3, 3\)", captured.err)


def test_plot_paths_are_checked_before_the_solve(tmp_path, capsys, monkeypatch):
    """--plot at a folder, under a file or in a format matplotlib cannot write failed after the
    solve with a raw OSError; now nothing runs."""
    import gpo_core as gc

    def no_play(*args, **kwargs):
        raise AssertionError("play ran before the plot path was checked")

    monkeypatch.setattr(gc, "play", no_play)
    (tmp_path / "file").write_text("")
    cases = {
        str(tmp_path): r"--plot '.*' is a folder; give a file name",
        str(tmp_path / "file" / "gap.png"): r"is under '.*file', which is a file, not a folder",
        str(tmp_path / "gap.txt"): r"matplotlib cannot write \.txt files; end the name in one of",
    }
    for plot, match in cases.items():
        assert main(["solve", "matrix_rps", "--plot", plot]) == 2
        captured = capsys.readouterr()
        assert re.search(match, captured.err), captured.err
        assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


def test_plot_into_a_new_folder_is_fine(tmp_path):
    png = tmp_path / "new" / "gap.png"
    assert main(["solve", "matrix_rps", "--steps", "50", "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_eta_and_alpha_reach_the_rule(capsys):
    assert main(["solve", "matrix_rps", "--rule", "mmd", "--eta", "0.5", "--alpha", "0.2",
                 "--steps", "10"]) == 0
    assert "mmd(eta=0.5, alpha=0.2)" in capsys.readouterr().out


def test_demo_out_at_a_file_is_refused_before_work(tmp_path, capsys):
    (tmp_path / "file").write_text("kept")
    assert main(["demo", "--out", str(tmp_path / "file"), "--steps", "1", "--rounds", "1"]) == 2
    captured = capsys.readouterr()
    assert re.search(r"--out '.*file' is a file, not a folder", captured.err)
    assert captured.out == "" and (tmp_path / "file").read_text() == "kept"
