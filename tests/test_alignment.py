"""The GPO loop: exact reproduction of the matrix-game dynamics, options, faults, resume."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gpo_core as gc
from backends.tabular import TableReward, TabularPolicy, matrix_game_players
from gpo_core.alignment import (
    GameConfig,
    MixturePolicy,
    PolicyError,
    checked_rewards,
    estimate_gap,
    run_game,
)
from gpo_core.protocols import Experience, MirrorStep


def _exact_config(**kw) -> GameConfig:
    base = dict(batch_size=1, conditional_adversary=False)
    base.update(kw)
    return GameConfig(**base)


@settings(max_examples=15)
@given(
    m=st.integers(1, 5),
    n=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    eta=st.floats(0.01, 0.5),
    alpha=st.sampled_from([0.0, 0.1, 1.0]),
    alternating=st.booleans(),
)
def test_tabular_loop_reproduces_play(m, n, seed, eta, alpha, alternating):
    """The very same loop that trains LLMs, run on exact tables, IS gpo_core.play (to 1e-12).

    The two sum the same utilities in a different order (a BLAS matvec vs a weighted mean of
    rows), so they differ by rounding, ~1e-16 per step. Hedge in zero-sum games is Lyapunov
    chaotic for large steps (Cheung & Piliouras 2019), which amplifies that rounding over many
    rounds (we saw 1e-7 after 60 rounds at eta = 1.5); below eta = 0.5 it stays under 1e-14.
    The one-step test below shows the update itself agrees for any step size.
    """
    game = gc.MatrixGame.random(m, n, seed=seed, low=-3, high=3)
    d, a, r = matrix_game_players(game)
    cfg = _exact_config(rounds=60, defender_eta=eta, adversary_eta=eta, defender_alpha=alpha,
                        adversary_alpha=alpha,
                        schedule="alternating" if alternating else "simultaneous")
    res = run_game(d, a, r, cfg)
    rule = gc.mmd(eta, alpha) if alpha > 0 else gc.hedge(eta)
    traj = gc.play(game, rule, rule, steps=60, alternating=alternating)
    np.testing.assert_allclose(d.probabilities(), traj.last.row, atol=1e-12)
    np.testing.assert_allclose(a.probabilities(), traj.last.col, atol=1e-12)
    avg_row = np.mean([gc.softmax(s) for s in res.defender_iterates], axis=0)
    avg_col = np.mean([gc.softmax(s) for s in res.adversary_iterates], axis=0)
    np.testing.assert_allclose(avg_row, traj.average.row, atol=1e-12)
    np.testing.assert_allclose(avg_col, traj.average.col, atol=1e-12)
    # the logged reward is the value of the iterate pair of the last round's (last) rollout:
    # (x_T, y_T) when both update on one rollout, (x_{T+1}, y_T) in the adversary's phase
    x_t, y_t = gc.softmax(res.defender_iterates[-1]), gc.softmax(res.adversary_iterates[-1])
    x_played = d.probabilities() if alternating else x_t
    assert res.logs[-1].metrics["reward/mean"] == pytest.approx(
        float(x_played @ game.payoff @ y_t), abs=1e-12)


@settings(max_examples=30)
@given(
    m=st.integers(1, 6),
    n=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    eta=st.floats(0.01, 50.0),
    alpha=st.sampled_from([0.0, 0.1, 1.0, 10.0]),
)
def test_one_loop_round_is_one_rule_step_for_any_step_size(m, n, seed, eta, alpha):
    rng = np.random.default_rng(seed)
    game = gc.MatrixGame.random(m, n, seed=seed, low=-5, high=5)
    x, y = rng.dirichlet(np.ones(m)), rng.dirichlet(np.ones(n))
    d, a, r = matrix_game_players(game)
    d.restore(np.log(x))
    a.restore(np.log(y))
    d.log_reference[:] = -np.log(m)  # the rule's magnet is uniform; so is each table's
    a.log_reference[:] = -np.log(n)
    run_game(d, a, r, _exact_config(rounds=1, schedule="simultaneous", defender_eta=eta,
                                     adversary_eta=eta, defender_alpha=alpha, adversary_alpha=alpha))
    rule = gc.mmd(eta, alpha) if alpha > 0 else gc.hedge(eta)
    x1 = gc.softmax(rule.step(rule.init(np.log(x)), game.payoff @ y).logits)
    y1 = gc.softmax(rule.step(rule.init(np.log(y)), -(x @ game.payoff)).logits)
    np.testing.assert_allclose(d.probabilities(), x1, atol=1e-12)
    np.testing.assert_allclose(a.probabilities(), y1, atol=1e-12)


def test_averaged_policy_is_the_mixture_of_iterates():
    game = gc.MatrixGame.random(3, 4, seed=3)
    d, a, r = matrix_game_players(game)
    res = run_game(d, a, r, _exact_config(rounds=40, schedule="simultaneous", defender_eta=0.5,
                                           adversary_eta=0.5))
    mix = MixturePolicy(d, res.defender_iterates)
    outputs = list(d.outputs)
    probs = np.exp(mix.log_prob([""] * len(outputs), outputs))
    expected = np.mean([gc.softmax(s) for s in res.defender_iterates], axis=0)
    np.testing.assert_allclose(probs, expected, atol=1e-12)
    # sampling from the mixture: draw an iterate, then sample from it (enumerated rows)
    rng = np.random.default_rng(0)
    s = mix.sample([""], 200, rng)
    total = np.zeros(len(outputs))
    for o, w in zip(s.outputs, s.weights):
        total[outputs.index(o)] += w
    assert math.isclose(total.sum(), 1.0, rel_tol=1e-12)
    # the result hands out the policy config.output names
    assert isinstance(res.defender_policy(d), MixturePolicy)
    last = GameConfig(**{**res.config.to_dict(), "output": "last"})
    assert dataclasses.replace(res, config=last).defender_policy(d) is d
    # the mixture restores the policy it borrowed (its last iterate, not one of the mixture's)
    before = d.snapshot()
    mix.log_prob([""], [outputs[0]])
    mix.sample([""], 5, np.random.default_rng(1))
    np.testing.assert_array_equal(d.snapshot(), before)
    assert not np.array_equal(before, res.defender_iterates[-1])
    with pytest.raises(TypeError, match="evaluation policy"):
        mix.update(Experience((), (), np.zeros(0), np.zeros(0)), MirrorStep(1.0))


def test_averaged_gap_falls_like_the_theory():
    """Averaged iterates of the LLM-shaped loop approach the Nash equilibrium (vs solve_lp)."""
    game = gc.MatrixGame.random(4, 4, seed=7)
    d, a, r = matrix_game_players(game)
    eta = gc.horizon_tuned(400, 4, game.payoff_range)(1)
    res = run_game(d, a, r, _exact_config(rounds=400, schedule="simultaneous", defender_eta=eta,
                                           adversary_eta=eta))
    x = np.mean([gc.softmax(s) for s in res.defender_iterates], axis=0)
    y = np.mean([gc.softmax(s) for s in res.adversary_iterates], axis=0)
    gap = float(gc.nash_gap(game, x, y))
    assert gap <= gc.nash_gap(game, np.full(4, 0.25), np.full(4, 0.25))
    assert gap < 0.05


def test_conditional_defender_updates_each_prompt_by_its_own_reward():
    """GPO's defender answers each prompt: pi_{t+1}(y|x) ∝ pi_t(y|x) exp(eta r(x, y))."""
    prompts, responses = ["x0", "x1"], ["safe", "unsafe"]
    reward = TableReward({("x0", "safe"): 1.0, ("x0", "unsafe"): 0.0,
                          ("x1", "safe"): 0.2, ("x1", "unsafe"): 0.9})
    d = TabularPolicy(responses, contexts=prompts)
    a = TabularPolicy(prompts, logits=[0.0, 1.0])
    cfg = _exact_config(rounds=1, schedule="simultaneous", defender_eta=0.7, adversary_eta=0.3)
    run_game(d, a, reward, cfg)
    np.testing.assert_allclose(d.probabilities("x0"), gc.softmax(0.7 * np.array([1.0, 0.0])), atol=1e-15)
    np.testing.assert_allclose(d.probabilities("x1"), gc.softmax(0.7 * np.array([0.2, 0.9])), atol=1e-15)
    # the adversary's utility of a prompt is minus the defender's expected reward on it
    u = -np.array([0.5 * 1.0 + 0.5 * 0.0, 0.5 * 0.2 + 0.5 * 0.9])
    np.testing.assert_allclose(a.probabilities(), gc.softmax(np.array([0.0, 1.0]) + 0.3 * u), atol=1e-15)


def test_initial_anchor_is_the_fixed_reference_kl_of_the_released_code():
    """kl_anchor='initial': pi' ∝ rho exp(u / alpha), whatever the current iterate."""
    game = gc.MatrixGame([[1.0, 0.0], [0.0, 2.0]])
    d, a, r = matrix_game_players(game)
    cfg = _exact_config(rounds=3, schedule="simultaneous", kl_anchor="initial",
                        defender_alpha=0.5, adversary_alpha=0.5)
    assert cfg.defender_step() == MirrorStep(eta=math.inf, alpha=0.5)
    res = run_game(d, a, r, cfg)
    # after round 3 the defender is the Gibbs response to the adversary iterate of round 3,
    # independent of its own previous iterate: log x = log(1/2) + A y_3 / alpha - log Z
    y3 = gc.softmax(res.adversary_iterates[2])
    np.testing.assert_allclose(d.probabilities(), gc.softmax(game.payoff @ y3 / 0.5), atol=1e-15)
    x3 = gc.softmax(res.defender_iterates[2])
    np.testing.assert_allclose(a.probabilities(), gc.softmax(-(x3 @ game.payoff) / 0.5), atol=1e-15)


def test_diversity_enters_only_the_adversary_utility():
    game = gc.MatrixGame([[0.0, 0.0]])  # the defender cannot change anything
    d, a, r = matrix_game_players(game)
    bonus = {"p0": 1.0, "p1": 0.0}
    calls = []

    def diversity(prompts, history):
        calls.append(len(history))
        return np.array([bonus[p] for p in prompts])

    cfg = _exact_config(rounds=3, schedule="simultaneous", beta_div=2.0, adversary_eta=0.5)
    res = run_game(d, a, r, cfg, diversity=diversity)
    np.testing.assert_allclose(a.probabilities(), gc.softmax(np.array([3 * 0.5 * 2.0, 0.0])), atol=1e-12)
    assert calls == [0, 2, 4]  # history grows after each round's prompts are scored
    assert len(res.history) == 6
    assert "diversity/reward" in res.logs[0].metrics


class _BadReward:
    def __init__(self, out):
        self.out = out

    def score(self, prompts, responses):
        return self.out(len(prompts))

    def __repr__(self):
        return "BadReward()"


@pytest.mark.parametrize(
    "out, match",
    [
        (lambda n: np.full(n, np.nan), "BadReward.*returned NaN for pair 0"),
        (lambda n: np.zeros(n + 1), "returned .* scores for .* pairs"),
        (lambda n: ["a"] * n, "must return real numbers"),
    ],
)
def test_bad_reward_model_is_named(out, match):
    game = gc.MatrixGame([[1.0, 0.0], [0.0, 1.0]])
    d, a, _ = matrix_game_players(game)
    with pytest.raises((ValueError, TypeError), match=match):
        run_game(d, a, _BadReward(out), _exact_config(rounds=1))
    with pytest.raises((ValueError, TypeError), match=match):
        checked_rewards(_BadReward(out), ["p"], ["r"])


def test_input_validation():
    game = gc.MatrixGame([[1.0, 0.0], [0.0, 1.0]])
    d, a, r = matrix_game_players(game)
    with pytest.raises(ValueError, match="seed_prompts is empty"):
        run_game(d, a, r, GameConfig(rounds=1))
    with pytest.raises(ValueError, match="beta_div"):
        run_game(d, a, r, _exact_config(beta_div=1.0))
    with pytest.raises(TypeError, match="defender must implement"):
        run_game(object(), a, r)
    with pytest.raises(TypeError, match="reward must implement"):
        run_game(d, a, object())
    with pytest.raises(TypeError, match="single string"):
        run_game(d, a, r, _exact_config(), seed_prompts="hello")
    for kw, match in [({"rounds": 0}, "rounds"), ({"defender_eta": -1.0}, "defender_eta"),
                      ({"schedule": "both"}, "schedule"), ({"seed_mix": 1.0}, "seed_mix"),
                      ({"kl_anchor": "initial"}, "defender_alpha"), ({"beta_div": -1.0}, "beta_div")]:
        with pytest.raises((ValueError, TypeError), match=match):
            GameConfig(**kw)
    with pytest.raises(TypeError, match="conditional_adversary"):
        GameConfig(conditional_adversary="no")
    with pytest.raises(ValueError, match="unknown config keys"):
        GameConfig.from_dict({"roundz": 3})


def _sampled_players():
    game = gc.MatrixGame.random(3, 3, seed=11)
    d, a, r = matrix_game_players(game, mode="sample")
    return d, a, r


def test_a_run_stopped_after_any_round_resumes_to_the_uninterrupted_run_bit_for_bit(tmp_path):
    cfg = _exact_config(rounds=6, batch_size=4, responses_per_prompt=2, defender_eta=0.4,
                        adversary_eta=0.4)
    d, a, r = _sampled_players()
    full = run_game(d, a, r, cfg)

    class Kill(Exception):
        pass

    for stop in range(1, cfg.rounds):
        folder = tmp_path / f"stop{stop}"

        def killer(log, stop=stop):
            if log.round == stop:
                raise Kill

        d2, a2, r2 = _sampled_players()
        with pytest.raises(Kill):
            run_game(d2, a2, r2, cfg, checkpoint_dir=folder, on_round=killer)
        assert json.loads((folder / "state.json").read_text())["round"] == stop
        d3, a3, r3 = _sampled_players()  # a fresh process: new objects at their initial state
        resumed = run_game(d3, a3, r3, cfg, checkpoint_dir=folder)
        assert [log.metrics for log in resumed.logs] == [log.metrics for log in full.logs]
        np.testing.assert_array_equal(d3.logits, d.logits)
        np.testing.assert_array_equal(a3.logits, a.logits)
        assert resumed.history == full.history
        assert len(resumed.defender_iterates) == 6
        for x, y in zip(resumed.defender_iterates, full.defender_iterates):
            np.testing.assert_array_equal(x, y)


def test_a_failing_snapshot_never_damages_the_checkpoint(tmp_path):
    cfg = _exact_config(rounds=4)
    d, a, r = _sampled_players()
    run_game(d, a, r, cfg.__class__(**{**cfg.to_dict(), "rounds": 2}), checkpoint_dir=tmp_path)
    before = (tmp_path / "state.json").read_text()

    class Broken(TabularPolicy):
        def save_snapshot(self, snapshot, path):
            raise OSError("disk full")

    d2 = Broken(d.outputs, mode="sample")
    _, a2, r2 = _sampled_players()
    with pytest.raises(PolicyError, match="defender's save_snapshot.*disk full.*intact"):
        run_game(d2, a2, r2, cfg, checkpoint_dir=tmp_path)
    assert (tmp_path / "state.json").read_text() == before
    for name in json.loads(before)["files"].values():
        assert os.path.exists(tmp_path / name)


def test_a_failing_snapshot_is_named():
    class NoSnap(TabularPolicy):
        def snapshot(self):
            raise MemoryError("out of device memory")

    game = gc.MatrixGame([[1.0, 0.0], [0.0, 1.0]])
    d, a, r = matrix_game_players(game)
    with pytest.raises(PolicyError, match="adversary's snapshot.*out of device memory"):
        run_game(d, NoSnap(a.outputs), r, _exact_config(rounds=1))


def test_resume_refuses_a_different_config(tmp_path):
    d, a, r = _sampled_players()
    run_game(d, a, r, _exact_config(rounds=1), checkpoint_dir=tmp_path)
    d, a, r = _sampled_players()
    with pytest.raises(ValueError, match=r"other arguments \(config.defender_eta: saved 1.0, now 3.0\)"):
        run_game(d, a, r, _exact_config(rounds=2, defender_eta=3.0), checkpoint_dir=tmp_path)


def test_checkpoint_needs_persistent_policies(tmp_path):
    class Plain:
        def __init__(self, inner):
            self.inner = inner

        def sample(self, contexts, num_samples, rng):
            return self.inner.sample(contexts, num_samples, rng)

        def log_prob(self, contexts, outputs):
            return self.inner.log_prob(contexts, outputs)

        def update(self, experience, step):
            return self.inner.update(experience, step)

        def snapshot(self):
            return self.inner.snapshot()

        def restore(self, snapshot):
            self.inner.restore(snapshot)

    d, a, r = _sampled_players()
    res = run_game(Plain(d), a, r, _exact_config(rounds=2))  # structural typing: no base class
    assert len(res.logs) == 2
    with pytest.raises(TypeError, match="save_snapshot"):
        run_game(Plain(d), a, r, _exact_config(rounds=2), checkpoint_dir=tmp_path)


def test_seed_mix_and_conditional_adversary_rows():
    seeds = ["s0", "s1"]
    prompts = ["p0", "p1"]
    responses = ["ok", "bad"]
    table = {(p, o): (1.0 if o == "ok" else 0.0) for p in prompts + seeds for o in responses}
    d = TabularPolicy(responses, mode="sample")
    a = TabularPolicy(prompts, contexts=seeds, mode="sample")
    cfg = GameConfig(rounds=2, batch_size=4, seed_mix=0.5, defender_eta=0.3, adversary_eta=0.3)
    scored: list[list[str]] = []

    class Spy(TableReward):
        def score(self, p, r):
            scored.append(list(p))
            return super().score(p, r)

    res = run_game(d, a, Spy(table), cfg, seed_prompts=seeds)
    assert set(res.history) <= set(prompts)
    # each rollout mixes round(seed_mix * distinct prompts) raw seed prompts into the defender's
    # batch, answered responses_per_prompt times each
    mixed = [sum(q in seeds for q in batch) for batch in scored]
    for batch, n_seeds in zip(scored, mixed):
        assert n_seeds == 2 * round(0.5 * len({q for q in batch if q in prompts}))
    assert sum(mixed) > 0
    assert all(0.0 <= log.metrics["attack/success_rate"] <= 1.0 for log in res.logs)


def test_estimated_gap_approaches_the_exact_nash_gap_for_tables():
    game = gc.MatrixGame.random(3, 4, seed=5)
    d, a, r = matrix_game_players(game)
    cfg = _exact_config(rounds=5, schedule="simultaneous", defender_eta=0.5, adversary_eta=0.5,
                        gap_every=5, gap_steps=20, gap_eta=50.0)
    res = run_game(d, a, r, cfg)
    x, y = d.probabilities(), a.probabilities()
    metrics = res.logs[-1].metrics
    assert metrics["gap/estimated"] == pytest.approx(float(gc.nash_gap(game, x, y)), abs=1e-9)
    # the estimate put both players back exactly: same iterates as a run without it
    d2, a2, r2 = matrix_game_players(game)
    run_game(d2, a2, r2, GameConfig(**{**cfg.to_dict(), "gap_every": 0}))
    np.testing.assert_array_equal(d.snapshot(), d2.snapshot())
    np.testing.assert_array_equal(a.snapshot(), a2.snapshot())
    assert metrics["gap/adversary_gain"] >= 0 and metrics["gap/defender_gain"] >= 0


def test_saved_files_get_the_users_usual_permissions(tmp_path):
    import stat

    from gpo_core._io import atomic_write_text

    path = tmp_path / "report.txt"
    atomic_write_text(path, "hello")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert path.read_text() == "hello"
    assert [p.name for p in tmp_path.iterdir()] == ["report.txt"]  # no temporary left behind


def test_no_signal_warning_only_for_policies_that_centre_contexts():
    """A sampling table learns from single samples (importance-weighted), so the loop must not
    warn about it; a policy that declares ``centres_contexts`` is warned about."""
    import warnings

    game = gc.MatrixGame.random(3, 3, seed=2)
    config = GameConfig(rounds=2, batch_size=2, responses_per_prompt=1, prompts_per_context=1,
                        conditional_adversary=False, defender_eta=1.0, adversary_eta=1.0)
    for centres in (False, True):
        d, a, r = matrix_game_players(game)
        d.mode = a.mode = "sample"
        if centres:
            d.centres_contexts = True
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_game(d, a, r, config)
        said = [str(w.message) for w in caught if "no learning signal" in str(w.message)]
        assert len(said) == (1 if centres else 0), said
        assert not centres or "defender" in said[0]


# ------------------------------------------------------------------------ run integrity


def test_a_fresh_run_never_mixes_with_an_earlier_one(tmp_path):
    d, a, r = _sampled_players()
    run_game(d, a, r, _exact_config(rounds=5), checkpoint_dir=tmp_path)
    d, a, r = _sampled_players()
    with pytest.raises(ValueError, match="holds an earlier run.*resume=True.*overwrite=True"):
        run_game(d, a, r, _exact_config(rounds=2), checkpoint_dir=tmp_path, resume=False)
    assert json.loads((tmp_path / "state.json").read_text())["round"] == 5  # untouched
    res = run_game(d, a, r, _exact_config(rounds=2), checkpoint_dir=tmp_path, resume=False,
                   overwrite=True)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["round"] == 2 and len(state["defender_iterates"]) == len(res.defender_iterates) == 2
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "iterate_defender_4" not in names and "iterate_defender_1" in names  # old ones gone
    # a folder with files of its own is refused, even with overwrite, and nothing is deleted
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("1,2")
    with pytest.raises(ValueError, match="did not write.*data.csv"):
        run_game(d, a, r, _exact_config(rounds=1), checkpoint_dir=other, overwrite=True)
    assert (other / "data.csv").read_text() == "1,2"


def test_resume_refuses_other_seeds_reward_or_fewer_rounds(tmp_path):
    seeds = ["s0", "s1"]
    responses, prompts = ["ok", "bad"], ["p0", "p1"]
    table = {(p, o): float(o == "ok") for p in prompts + seeds for o in responses}

    def players():
        return (TabularPolicy(responses, mode="sample"),
                TabularPolicy(prompts, contexts=seeds, mode="sample"))

    cfg = GameConfig(rounds=3, batch_size=2, defender_eta=0.3, adversary_eta=0.3)
    run_game(*players(), TableReward(table), cfg, seed_prompts=seeds, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="seed_prompts: saved '2 prompts"):
        run_game(*players(), TableReward(table), GameConfig(**{**cfg.to_dict(), "rounds": 4}),
                 seed_prompts=seeds[::-1], checkpoint_dir=tmp_path)
    other = {k: 1.0 - v for k, v in table.items()}
    with pytest.raises(ValueError, match="reward: saved 'TableReward"):
        run_game(*players(), TableReward(other), cfg, seed_prompts=seeds, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="already holds 3 rounds but config.rounds=2"):
        run_game(*players(), TableReward(table), GameConfig(**{**cfg.to_dict(), "rounds": 2}),
                 seed_prompts=seeds, checkpoint_dir=tmp_path)
    res = run_game(*players(), TableReward(table), GameConfig(**{**cfg.to_dict(), "rounds": 4}),
                   seed_prompts=seeds, checkpoint_dir=tmp_path)
    assert [log.round for log in res.logs] == [1, 2, 3, 4]


@pytest.mark.parametrize("make, match", [
    (lambda p: (p.write_text("x"), p)[1], "is a file, not a folder"),
    (lambda p: (p.mkdir(), (p / "state.json").write_text("{not json"))[0] or p,
     "state.json cannot be read"),
])
def test_bad_checkpoint_folders_are_refused_before_any_round(tmp_path, make, match):
    folder = make(tmp_path / "ckpt")
    d, a, r = _sampled_players()
    before = d.snapshot()
    with pytest.raises(ValueError, match=match):
        run_game(d, a, r, _exact_config(rounds=2), checkpoint_dir=folder)
    np.testing.assert_array_equal(d.snapshot(), before)  # no round was played


_KILLED_WRITER = """
import os, signal, sys
import gpo_core._io as io
import gpo_core as gc
from backends.tabular import matrix_game_players
from gpo_core.alignment import GameConfig, run_game

calls = [0]
real = io.os.fsync
def fsync(fd):  # round 1 writes 5 files; the 6th (round 2's first) dies before its rename
    calls[0] += 1
    if calls[0] == 6:
        os.kill(os.getpid(), signal.SIGKILL)
    real(fd)
io.os.fsync = fsync
d, a, r = matrix_game_players(gc.MatrixGame.random(3, 3, seed=11), mode="sample")
run_game(d, a, r, GameConfig(rounds=4, batch_size=4, conditional_adversary=False,
         defender_eta=0.4, adversary_eta=0.4), checkpoint_dir=sys.argv[1])
"""


def test_a_run_killed_while_writing_a_checkpoint_resumes_and_leaves_no_temporary(tmp_path):
    import signal
    import subprocess
    import sys

    folder = tmp_path / "ckpt"
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(folder)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    orphans = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert orphans, "the kill should leave the temporary file it was writing"
    assert json.loads((folder / "state.json").read_text())["round"] == 1
    cfg = GameConfig(rounds=4, batch_size=4, conditional_adversary=False, defender_eta=0.4,
                     adversary_eta=0.4)
    d, a, r = matrix_game_players(gc.MatrixGame.random(3, 3, seed=11), mode="sample")
    resumed = run_game(d, a, r, cfg, checkpoint_dir=folder)
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    d2, a2, r2 = matrix_game_players(gc.MatrixGame.random(3, 3, seed=11), mode="sample")
    full = run_game(d2, a2, r2, cfg)
    assert [log.metrics for log in resumed.logs] == [log.metrics for log in full.logs]
    np.testing.assert_array_equal(d.logits, d2.logits)


def test_sampling_tables_stay_finite_over_a_long_run():
    """mode='sample' once turned every logit into NaN (an output whose probability underflowed
    to 0 got 0/0 as its utility estimate)."""
    game = gc.MatrixGame.random(4, 4, seed=0)
    d, a, r = matrix_game_players(game, mode="sample")
    run_game(d, a, r, _exact_config(rounds=600, schedule="simultaneous", batch_size=2,
                                     defender_eta=1.0, adversary_eta=1.0))
    assert np.all(np.isfinite(d.logits) | (d.logits == -np.inf))
    assert np.all(np.isfinite(a.logits) | (a.logits == -np.inf))
    assert np.isclose(d.probabilities().sum(), 1.0)


def test_gap_estimates_never_change_the_game_and_cover_the_average(tmp_path):
    game = gc.MatrixGame.random(3, 3, seed=4)
    runs = {}
    for every in (0, 1):
        d, a, r = matrix_game_players(game, mode="sample")
        cfg = _exact_config(rounds=5, batch_size=3, defender_eta=0.5, adversary_eta=0.5,
                            gap_every=every, gap_of="both", gap_steps=2, gap_rollouts=3)
        runs[every] = (run_game(d, a, r, cfg), d.snapshot(), a.snapshot())
    (plain, d0, a0), (gapped, d1, a1) = runs[0], runs[1]
    np.testing.assert_array_equal(d0, d1)
    np.testing.assert_array_equal(a0, a1)
    assert plain.history == gapped.history
    for p, g in zip(plain.logs, gapped.logs):
        assert {k: v for k, v in g.metrics.items() if not k.startswith("gap/")} == p.metrics
        assert {"gap/estimated", "gap/estimated_ci_low", "gap/average/estimated",
                "gap/average/estimated_ci_high"} <= set(g.metrics)
        assert g.metrics["gap/estimated_ci_low"] <= g.metrics["gap/estimated"]
        assert g.metrics["gap/estimated"] <= g.metrics["gap/estimated_ci_high"]


def test_estimate_gap_puts_back_the_optimiser_state_too():
    from backends.tiny import tiny_llama, word_tokenizer
    from backends.hf import GenerationSettings, HFPolicy
    from backends.rewards import CallableReward

    tok = word_tokenizer(["a", "b", "c"])
    players = [HFPolicy(tiny_llama(tok, 16, 1, seed=i, heads=2), tok, optimizer="adam", lr=0.01,
                        max_fit_steps=2, fresh_optimizer=False,
                        generation=GenerationSettings(max_new_tokens=2), name=name)
               for i, name in enumerate(["defender", "adversary"])]
    reward = CallableReward(lambda p, r: [float("a" in x) for x in r])
    cfg = GameConfig(rounds=1, batch_size=2, conditional_adversary=False, gap_steps=2,
                     gap_rollouts=1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # two AdamW steps do not converge
        run_game(*players, reward, cfg)
        states = [p.optimizer_state_dict() for p in players]
        snaps = [p.snapshot() for p in players]
        est = estimate_gap(*players, reward, cfg)
    assert math.isnan(est["gap/estimated_ci_low"])  # one rollout: no interval
    for p, state, snap in zip(players, states, snaps):
        after = p.optimizer_state_dict()
        assert after["state"][0]["step"] == state["state"][0]["step"]
        for k in snap:
            assert torch.equal(p.snapshot()[k], snap[k])
    with pytest.raises(ValueError, match="fresh_optimizer=False.*would not resume exactly"):
        run_game(*players, reward, cfg, checkpoint_dir="unused_folder")


@pytest.mark.parametrize("kw, error, match", [
    (dict(seed="abc"), TypeError, "seed must be an integer"),
    (dict(seed=-1), ValueError, r"seed must be an integer in \[0, 2\*\*63\)"),
    (dict(seed_mix="0.5"), TypeError, "seed_mix must be a number"),
    (dict(attack_threshold=True), TypeError, "attack_threshold must be a number"),
    (dict(gap_of="mean"), ValueError, "gap_of must be"),
    (dict(gap_rollouts=0), ValueError, "gap_rollouts"),
])
def test_game_config_refuses_bad_fields_when_built(kw, error, match):
    with pytest.raises(error, match=match):
        GameConfig(**kw)


def test_run_game_refuses_bad_callables_before_any_round():
    game = gc.MatrixGame([[1.0, 0.0], [0.0, 1.0]])
    d, a, r = matrix_game_players(game)
    with pytest.raises(TypeError, match="diversity must be a callable or None, got 'bleu'"):
        run_game(d, a, r, _exact_config(rounds=1, beta_div=1.0), diversity="bleu")
    with pytest.raises(TypeError, match="on_round must be a callable or None, got 5"):
        run_game(d, a, r, _exact_config(rounds=1), on_round=5)
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        run_game(d, a, r, _exact_config(rounds=1), overwrite="yes")


# ------------------------------------------------------------- iterates: reservoir and disk


def test_a_reservoir_keeps_k_iterates_unbiasedly_and_resumes_to_the_same_ones(tmp_path):
    from gpo_core.mixture import reservoir_slot

    game = gc.MatrixGame.random(3, 3, seed=8)
    cfg = _exact_config(rounds=12, schedule="simultaneous", defender_eta=0.3, adversary_eta=0.3,
                        max_iterates=4)
    d, a, r = matrix_game_players(game)
    full = run_game(d, a, r, cfg)
    assert len(full.defender_iterates) == len(full.adversary_iterates) == 4
    # the kept snapshots are exactly the iterates the reservoir rule picks
    d_all, a_all, r_all = matrix_game_players(game)
    every = run_game(d_all, a_all, r_all, GameConfig(**{**cfg.to_dict(), "max_iterates": 0}))
    slots = [None] * 4
    for n in range(12):
        j = reservoir_slot(cfg.seed, n, 4)
        if j is not None:
            slots[j] = n
    for kept, n in zip(full.defender_iterates, slots):
        np.testing.assert_array_equal(kept, every.defender_iterates[n])
    # stopped at every round and resumed: the same reservoir, and only its files on disk
    for stop in (3, 7):
        folder = tmp_path / f"s{stop}"
        d2, a2, r2 = matrix_game_players(game)
        run_game(d2, a2, r2, GameConfig(**{**cfg.to_dict(), "rounds": stop}), checkpoint_dir=folder)
        d3, a3, r3 = matrix_game_players(game)
        resumed = run_game(d3, a3, r3, cfg, checkpoint_dir=folder)
        for x, y in zip(resumed.defender_iterates, full.defender_iterates):
            np.testing.assert_array_equal(x, y)
        files = sorted(p.name for p in folder.iterdir() if p.name.startswith("iterate_defender"))
        assert files == sorted(f"iterate_defender_{n}" for n in slots)


def test_iterates_on_disk_are_read_once_per_mixture_call_and_equal_the_in_memory_run(tmp_path):
    from gpo_core.mixture import OnDisk, materialise

    game = gc.MatrixGame.random(3, 4, seed=9)
    cfg = _exact_config(rounds=6, schedule="simultaneous", defender_eta=0.4, adversary_eta=0.4)
    d, a, r = matrix_game_players(game)
    memory = run_game(d, a, r, cfg)
    d2, a2, r2 = matrix_game_players(game)
    reads: list[str] = []
    real = d2.load_snapshot
    d2.load_snapshot = lambda path: reads.append(os.path.basename(path)) or real(path)
    disk = run_game(d2, a2, r2, GameConfig(**{**cfg.to_dict(), "iterates_on_disk": True}),
                    checkpoint_dir=tmp_path)
    assert all(isinstance(s, OnDisk) for s in disk.defender_iterates)
    for x, y in zip(disk.defender_iterates, memory.defender_iterates):
        np.testing.assert_array_equal(materialise(x), y)
    reads.clear()
    outputs = list(d2.outputs)
    got = MixturePolicy(d2, disk.defender_iterates).log_prob([""] * len(outputs), outputs)
    want = MixturePolicy(d, memory.defender_iterates).log_prob([""] * len(outputs), outputs)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    assert sorted(reads) == sorted(f"iterate_defender_{n}" for n in range(6))  # each once
    reads.clear()
    MixturePolicy(d2, disk.defender_iterates).sample([""], 50, np.random.default_rng(0))
    assert len(reads) == len(set(reads))  # every drawn iterate read once, whatever it drew
    with pytest.raises(ValueError, match="iterates_on_disk.*no checkpoint_dir"):
        run_game(d, a, r, GameConfig(**{**cfg.to_dict(), "iterates_on_disk": True}))
