"""gpo_core on torch tensors and in float32: the same math as numpy float64, in the caller's arrays.

The reference is always the numpy float64 path (the one the rest of the suite checks against
theory, OpenSpiel and HiGHS). torch float64 runs the same operations in another library, so its
results must agree to 1e-10; float32 rounds every step to float32's epsilon, so it is compared
with a tolerance derived from that epsilon (see ``_f32_tol``). The torch tests run on CPU; one
test repeats the comparison on CUDA when a GPU is present.
"""

from __future__ import annotations

import ast
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import gpo_core as gc
from gpo_core import _xp
from gpo_core.predictive import predictive_regret_matching_plus

import array_api_compat  # noqa: E402, F401  (the [all] extra installs it: missing is a failure)
import torch  # noqa: E402  (the [all] extra installs it: missing is a failure, not a skip)

ROOT = pathlib.Path(__file__).resolve().parents[1]
EPS32 = float(np.finfo(np.float32).eps)

RULES = {
    "hedge": lambda: gc.hedge(0.3),
    "hedge_schedule": lambda: gc.hedge(gc.inverse_sqrt(0.5)),
    "mmd": lambda: gc.mmd(0.2, alpha=0.1),
    "mmd_magnet": lambda: gc.mmd(0.2, alpha=0.1, magnet=[0.1, 0.2, 0.3, 0.15, 0.25]),
    "optimistic": lambda: gc.optimistic(gc.hedge(0.3)),
    "rm+": gc.regret_matching_plus,
    "prm+": predictive_regret_matching_plus,
    "drm+": gc.discounted_regret_matching_plus,
}


def _payoff(seed: int = 3, shape: tuple[int, ...] = (5, 5)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=shape)


def _np(a) -> np.ndarray:
    """Host float64 copy of a numpy array or a tensor (for comparisons only)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _diff(a, b) -> float:
    return float(np.max(np.abs(_np(a) - _np(b))))


def _fields(traj: gc.Trajectory) -> dict[str, object]:
    return {
        "last.row": traj.last.row,
        "last.col": traj.last.col,
        "average.row": traj.average.row,
        "average.col": traj.average.col,
        "nash_gap": traj.nash_gap,
        "last_gap": traj.last_gap,
        "row_state.logits": traj.row_state.logits,
        "col_state.logits": traj.col_state.logits,
    }


def _state_arrays(state) -> list:
    """Every array inside a rule state (optimistic states nest the base rule's state)."""
    out = []
    for v in state:
        if isinstance(v, tuple):
            out += _state_arrays(v)
        elif not isinstance(v, int):
            out.append(v)
    return out


# ------------------------------------------------------------------ torch float64 == numpy
@pytest.mark.parametrize("alternating", [False, True], ids=["simultaneous", "alternating"])
@pytest.mark.parametrize("rule", sorted(RULES))
def test_torch_float64_play_matches_numpy(rule, alternating, kernels):
    """With the C kernels a CPU tensor game's regret-matching players step in C on the tensors'
    memory; without them (and on a GPU) in torch's own operations: both are checked."""
    a = _payoff()
    kwargs = dict(steps=300, alternating=alternating, averaging="linear", record_every=7)
    ref = gc.play(gc.MatrixGame(a), RULES[rule](), **kwargs)
    out = gc.play(gc.MatrixGame(torch.tensor(a)), RULES[rule](), **kwargs)
    assert ref.final_gap < 0.5  # the run did something (a uniform start has gap ~1 here)
    np.testing.assert_array_equal(out.steps, ref.steps)
    assert out.num_steps == ref.num_steps == 300
    for name, value in _fields(out).items():
        assert isinstance(value, torch.Tensor) and value.dtype == torch.float64, name
        assert _diff(value, _fields(ref)[name]) <= 1e-10, name
    for s_out, s_ref in ((out.row_state, ref.row_state), (out.col_state, ref.col_state)):
        assert type(s_out) is type(s_ref)
        for v_out, v_ref in zip(_state_arrays(s_out), _state_arrays(s_ref)):
            assert isinstance(v_out, torch.Tensor) and v_out.dtype == torch.float64
            assert _diff(v_out, v_ref) <= 1e-10


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rule", ["rm+", "prm+", "drm+"])
def test_cpu_tensor_game_steps_in_the_c_kernel_and_stops_where_numpy_does(rule, dtype, kernel_calls):
    """The fast path is taken (one C call per player step, none of torch's per-entry operations)
    and gives numpy's answer: the same iterates, the same recorded gaps, the same stopping step
    (float64; float32 to its rounding, over a fixed number of steps)."""
    a = _payoff(seed=11, shape=(7, 9))
    a = a.astype(np.float32) if dtype == torch.float32 else a
    kwargs = dict(steps=2000, alternating=True, averaging="quadratic", record_every=3)
    if dtype == torch.float64:  # (float32's products round differently in torch and numpy,
        kwargs["tol"] = 1e-4  # enough to move a stop whose gap lands within 1e-9 of tol)
    ref = gc.play(gc.MatrixGame(a), RULES[rule](), **kwargs)
    numpy_calls = kernel_calls.pop("step")
    out = gc.play(gc.MatrixGame(torch.tensor(a)), RULES[rule](), **kwargs)
    if dtype == torch.float64:
        assert 10 < ref.num_steps < 2000  # tol stopped the run
    assert out.num_steps == ref.num_steps
    assert kernel_calls.get("step") == numpy_calls == 2 * ref.num_steps
    np.testing.assert_array_equal(out.steps, ref.steps)
    tol = 1e-10 if dtype == torch.float64 else _f32_tol(ref.num_steps)
    for name, value in _fields(out).items():
        assert isinstance(value, torch.Tensor) and value.dtype == dtype, name
        if "logits" not in name:  # log(strategy): float32's error over p in it (compared below)
            assert _diff(value, _fields(ref)[name]) <= tol, name
    for s_out, s_ref in ((out.row_state, ref.row_state), (out.col_state, ref.col_state)):
        assert s_out.count == s_ref.count == ref.num_steps
        assert _diff(s_out.cum_regret, s_ref.cum_regret) <= tol
        assert _diff(s_out.strategy, s_ref.strategy) <= tol
    # The returned tensors own their memory: a second run does not write into the first's.
    before = out.last.row.clone(), out.row_state.strategy.clone()
    gc.play(gc.MatrixGame(torch.tensor(a)), RULES[rule](), **kwargs)
    assert torch.equal(out.last.row, before[0]) and torch.equal(out.row_state.strategy, before[1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rule", ["hedge", "hedge_schedule"])
def test_cpu_tensor_game_runs_hedge_in_the_c_kernel(rule, dtype, kernel_calls):
    a = _payoff(seed=12, shape=(6, 8))
    a = a.astype(np.float32) if dtype == torch.float32 else a
    kwargs = dict(steps=300, alternating=False, averaging="uniform", record_every=10)
    ref = gc.play(gc.MatrixGame(a), RULES[rule](), **kwargs)
    out = gc.play(gc.MatrixGame(torch.tensor(a)), RULES[rule](), **kwargs)
    assert kernel_calls == {"hedge_step": 2 * 2 * 300}  # numpy's run, then torch's
    tol = 1e-10 if dtype == torch.float64 else _f32_tol(300)
    for name, value in _fields(out).items():
        assert isinstance(value, torch.Tensor) and value.dtype == dtype, name
        scale = np.maximum(1.0, np.abs(_np(_fields(ref)[name]))) if "logits" in name else 1.0
        assert float(np.max(np.abs(_np(value) - _np(_fields(ref)[name])) / scale)) <= tol, name
    assert isinstance(out.row_state.strategy, torch.Tensor) and out.row_state.count == 300


@pytest.mark.parametrize("averaging", ["uniform", "quadratic"])
def test_torch_batched_games_with_start_points_and_tol_match_numpy(averaging):
    a = _payoff(seed=5, shape=(2, 3, 4, 6))
    rng = np.random.default_rng(1)
    x0 = rng.dirichlet(np.ones(4), size=(3,))  # one start per column of the batch: broadcasts
    y0 = rng.dirichlet(np.ones(6))
    kwargs = dict(steps=400, alternating=True, averaging=averaging, tol=5e-3)
    rule = predictive_regret_matching_plus
    ref = gc.play(gc.MatrixGame(a), rule(), x0=x0, y0=y0, **kwargs)
    out = gc.play(gc.MatrixGame(torch.tensor(a)), rule(), x0=torch.tensor(x0),
                  y0=torch.tensor(y0), **kwargs)
    assert ref.num_steps < 400  # tol stopped the run early, and torch stops at the same step
    assert out.num_steps == ref.num_steps
    np.testing.assert_array_equal(out.steps, ref.steps)
    assert out.nash_gap.shape == ref.nash_gap.shape == (len(ref.steps), 2, 3)
    for name, value in _fields(out).items():
        assert isinstance(value, torch.Tensor), name
        assert _diff(value, _fields(ref)[name]) <= 1e-10, name


def test_torch_helpers_and_diagnostics_match_numpy():
    rng = np.random.default_rng(7)
    a = _payoff(seed=9, shape=(4, 6))
    x, y = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(6))
    g, gt = gc.MatrixGame(a), gc.MatrixGame(torch.tensor(a))
    tx, ty = torch.tensor(x), torch.tensor(y)
    z = rng.normal(size=(3, 6)) * 50.0
    p = np.array([0.5, 0.0, 0.5, 0.0, 0.0, 0.0])
    pairs = {
        "softmax": (gc.softmax(z), gc.softmax(torch.tensor(z))),
        "log_softmax": (gc.log_softmax(z), gc.log_softmax(torch.tensor(z))),
        "logsumexp": (gc.logsumexp(z), gc.logsumexp(torch.tensor(z))),
        "safe_log": (gc.simplex.safe_log(p), gc.simplex.safe_log(torch.tensor(p))),
        "entropy": (gc.entropy(p), gc.entropy(torch.tensor(p))),
        "kl": (gc.kl(p, y), gc.kl(torch.tensor(p), ty)),
        "kl_inf": (gc.kl(y, p), gc.kl(ty, torch.tensor(p))),
        "mirror_step": (gc.mirror_step(z, y, 0.7, 0.2, np.log(y)),
                        gc.mirror_step(torch.tensor(z), ty, 0.7, 0.2, torch.log(ty))),
        "mirror_step_inf": (gc.mirror_step(z, y, math.inf, 0.5),
                            gc.mirror_step(torch.tensor(z), ty, math.inf, 0.5)),
        "utilities_row": (g.utilities(x, y)[0], gt.utilities(tx, ty)[0]),
        "utilities_col": (g.utilities(x, y)[1], gt.utilities(tx, ty)[1]),
        "value": (g.value(x, y), gt.value(tx, ty)),
        "swap": (g.swap().payoff, gt.swap().payoff),
        "nash_gap": (gc.nash_gap(g, x, y), gc.nash_gap(gt, tx, ty)),
        "regularized_gap": (gc.regularized_gap(g, x, y, 0.3), gc.regularized_gap(gt, tx, ty, 0.3)),
        "external_regret": (gc.external_regret(z[:, :4], np.tile(x, (3, 1))),
                            gc.external_regret(torch.tensor(z[:, :4]), torch.tensor(np.tile(x, (3, 1))))),
    }
    for player, opp, topp in (("row", y, ty), ("col", x, tx)):
        ref, out = gc.best_response(g, opp, player), gc.best_response(gt, topp, player)
        pairs[f"best_response_{player}_strategy"] = (ref.strategy, out.strategy)
        pairs[f"best_response_{player}_value"] = (ref.value, out.value)
        assert int(out.action) == int(ref.action)
    for name, (ref, out) in pairs.items():
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float64, name
        assert tuple(out.shape) == np.shape(ref), name
        np.testing.assert_allclose(_np(out), _np(ref), rtol=1e-12, atol=1e-12, err_msg=name)
    assert math.isinf(float(pairs["kl_inf"][1]))  # mass where q = 0: inf, as in numpy
    assert gt.payoff_range == pytest.approx(g.payoff_range, abs=1e-15)
    assert gt.shape == (4, 6) and gt.batch_shape == () and type(gt.batch_shape) is tuple


def test_uniform_logits_follows_like():
    like = torch.zeros(2, dtype=torch.float32)
    out = gc.uniform_logits(3, (2,), like=like)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (2, 3)
    assert gc.uniform_logits(3).dtype == np.float64  # without like: numpy float64, as before


# ------------------------------------------------------------------------------ float32
def _f32_tol(steps: int) -> float:
    """Allowed float32-vs-float64 difference after ``steps`` steps on payoffs in [-1, 1].

    Each step rounds its matrix-vector products, logits and probabilities to float32: an error
    of about one eps32 relative to the size of each quantity (probabilities and gaps are <= 2;
    logits are compared relative to their own size), and the errors of successive steps add up
    at most linearly: steps * eps32 (3.6e-5 for 300 steps). The runs here reach about 125 eps32
    (Hedge's logits); a float64 run on the same float32-rounded payoff already differs by ~eps32.
    """
    return steps * EPS32


@pytest.mark.parametrize("alternating", [False, True], ids=["simultaneous", "alternating"])
@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_float32_play_stays_float32_and_tracks_float64(library, rule, alternating, kernels):
    a = _payoff()
    a32 = a.astype(np.float32) if library == "numpy" else torch.tensor(a, dtype=torch.float32)
    steps = 300
    kwargs = dict(steps=steps, alternating=alternating, averaging="linear", record_every=10)
    ref = gc.play(gc.MatrixGame(a), RULES[rule](), **kwargs)
    game32 = gc.MatrixGame(a32)
    assert game32.payoff.dtype == a32.dtype  # no silent float64 copy of a (big) float32 game
    out = gc.play(game32, RULES[rule](), **kwargs)
    worst = 0.0
    for name, value in _fields(out).items():
        assert value.dtype == a32.dtype and type(value) is type(a32), name
        expected = _np(_fields(ref)[name])
        if "logits" in name and hasattr(out.row_state, "strategy"):
            # The regret-matching rules keep the strategy (compared above as `last`) and their
            # logits are log(strategy): a probability p carries its float32 error divided by
            # p there (DRM+'s last iterate put 0.0086 on an action, 400 eps32 in its log).
            continue
        # Logits are compared relative to their size: they reach hundreds (and the zero-
        # probability floor -1416.8, which float32 itself can only hold to 1e-5).
        scale = np.maximum(1.0, np.abs(expected)) if "logits" in name else 1.0
        worst = max(worst, float(np.max(np.abs(_np(value) - expected) / scale)))
    for state in (out.row_state, out.col_state):
        for v in _state_arrays(state):
            assert v.dtype == a32.dtype and type(v) is type(a32)
    # As close as float32 allows (the dtype checks above show it was float32 all along).
    assert worst <= _f32_tol(steps)


def test_float32_numpy_game_is_a_read_only_float32_copy():
    a32 = _payoff().astype(np.float32)
    game = gc.MatrixGame(a32)
    assert game.payoff.dtype == np.float32 and not game.payoff.flags.writeable
    a32[0, 0] = 99.0
    assert game.payoff[0, 0] != 99.0
    # Every other real dtype still becomes float64, as before.
    for dtype in (np.int64, np.float16, np.longdouble):
        assert gc.MatrixGame(np.ones((2, 2), dtype=dtype)).payoff.dtype == np.float64
    assert gc.MatrixGame([[1, 0], [0, 1]]).payoff.dtype == np.float64


def test_float32_rules_and_helpers_keep_float32():
    z32 = np.array([[0.5, -1.0, 2.0]], dtype=np.float32)
    assert gc.softmax(z32).dtype == np.float32
    assert gc.log_softmax(z32).dtype == np.float32
    assert gc.simplex.safe_log(np.array([0.0, 1.0], dtype=np.float32)).dtype == np.float32
    for make in RULES.values():
        rule = make()
        state = rule.step(rule.init(np.zeros(5, dtype=np.float32)), np.arange(5.0))
        assert all(v.dtype == np.float32 for v in _state_arrays(state)), rule.name
    # float32 strategies as a float32 softmax makes them: accepted though they sum to 1 only to
    # float32's rounding (about 1e-7, above the float64 tolerance 1e-8 * n).
    g32 = gc.MatrixGame(_payoff().astype(np.float32))
    x = gc.softmax(np.linspace(0, 3, 5, dtype=np.float32))
    assert gc.nash_gap(g32, x, x).dtype == np.float32


def test_float32_zero_regret_noise_uses_float32_epsilon():
    """RM+ ignores regrets at rounding level: in float32 that level is float32's, not float64's."""
    u = np.full(3, 1.0 / 3.0, dtype=np.float32)
    u[1] = np.nextafter(u[1], np.float32(1.0))  # one float32 ulp above the others: noise
    for make in (gc.regret_matching_plus, predictive_regret_matching_plus):
        rule = make()
        state = rule.step(rule.init(np.zeros(3, dtype=np.float32)), u)
        np.testing.assert_array_equal(state.strategy, np.full(3, 1 / 3, dtype=np.float32))
        tstate = rule.step(rule.init(torch.zeros(3, dtype=torch.float32)), torch.tensor(u))
        np.testing.assert_array_equal(tstate.strategy.numpy(), state.strategy)


# -------------------------------------------------------------------- mixed and invalid inputs
def test_mixed_inputs_are_converted_to_the_game_or_state_library():
    """The game (or the rule state) decides the library, dtype and device; others convert."""
    a = _payoff()
    x0 = np.random.default_rng(2).dirichlet(np.ones(5))
    ref = gc.play(gc.MatrixGame(a), gc.hedge(0.3), steps=50, x0=x0)
    # numpy game, torch start point: numpy results, the same numbers.
    mixed = gc.play(gc.MatrixGame(a), gc.hedge(0.3), steps=50, x0=torch.tensor(x0))
    assert type(mixed.average.row) is np.ndarray
    np.testing.assert_array_equal(mixed.average.row, ref.average.row)
    # torch game, numpy float32 start point: torch float64 results.
    mixed = gc.play(gc.MatrixGame(torch.tensor(a)), gc.hedge(0.3), steps=50,
                    x0=x0.astype(np.float32) / x0.astype(np.float32).sum())
    assert isinstance(mixed.average.row, torch.Tensor) and mixed.average.row.dtype == torch.float64
    assert _diff(mixed.average.row, ref.average.row) < 1e-6  # x0 was rounded to float32
    # A numpy rule state fed torch utilities stays numpy, and the reverse.
    rule = gc.regret_matching_plus()
    s_np = rule.step(rule.init(np.zeros(3)), torch.tensor([1.0, 0.0, 0.5]))
    assert type(s_np.logits) is np.ndarray and s_np.logits.dtype == np.float64
    s_t = rule.step(rule.init(torch.zeros(3)), [1.0, 0.0, 0.5])
    assert isinstance(s_t.logits, torch.Tensor) and s_t.logits.dtype == torch.float32
    np.testing.assert_allclose(s_t.strategy.numpy(), s_np.strategy, rtol=1e-6)
    # Diagnostics of a torch game accept numpy (or list) strategies.
    gt = gc.MatrixGame(torch.tensor(a))
    assert isinstance(gc.nash_gap(gt, [0.2] * 5, np.full(5, 0.2)), torch.Tensor)


def test_torch_game_is_a_copy():
    t = torch.tensor(_payoff())
    game = gc.MatrixGame(t)
    t[0, 0] = 99.0
    assert float(game.payoff[0, 0]) != 99.0
    assert repr(game) == "MatrixGame(shape=(5, 5))"
    assert repr(gc.MatrixGame(torch.ones(2, 3, 4))) == "MatrixGame(shape=(3, 4), batch_shape=(2,))"


@pytest.mark.parametrize(
    "make, err, words",
    [
        (lambda: gc.MatrixGame(torch.tensor([[1.0, float("nan")], [0.0, 1.0]])), ValueError,
         ["payoff", "finite"]),
        (lambda: gc.MatrixGame(torch.tensor([[True, False]])), TypeError, ["payoff", "real"]),
        (lambda: gc.MatrixGame(torch.ones(2, 2, dtype=torch.complex64)), TypeError,
         ["payoff", "complex64"]),
        (lambda: gc.MatrixGame(torch.ones(3)), ValueError, ["payoff", "2 dimension"]),
        (lambda: gc.MatrixGame(torch.ones(0, 3)), ValueError, ["payoff", "one row"]),
        (lambda: gc.play(gc.MatrixGame(torch.ones(2, 2)), gc.hedge(0.1), x0=torch.tensor([0.6, 0.6])),
         ValueError, ["x0", "sum to 1"]),
        (lambda: gc.play(gc.MatrixGame(torch.ones(2, 2)), gc.hedge(0.1), x0=torch.ones(3) / 3),
         ValueError, ["x0", "2 entries"]),
        (lambda: gc.play(gc.MatrixGame(torch.ones(2, 3, 3)), gc.hedge(0.1), y0=torch.ones(4, 3) / 3),
         ValueError, ["y0", "broadcast"]),
        (lambda: gc.nash_gap(gc.MatrixGame(torch.ones(2, 2)), torch.tensor([1.5, -0.5]), [1, 0]),
         ValueError, ["x", "negative"]),
        (lambda: gc.hedge(0.1).step(gc.hedge(0.1).init(torch.zeros(2)),
                                    torch.tensor([1.0, float("inf")])),
         ValueError, ["utilities", "finite"]),
        (lambda: gc.hedge(0.1).step(gc.hedge(0.1).init(torch.zeros(2)), torch.ones(3)),
         ValueError, ["utilities", "2 entries"]),
        (lambda: gc.regret_matching_plus().step(gc.regret_matching_plus().init(torch.zeros(2)),
                                                "ab"), TypeError, ["utilities", "string"]),
        (lambda: gc.mirror_step(torch.zeros(2), ["a", "b"], 0.5), TypeError, ["utilities"]),
    ],
)
def test_torch_inputs_are_validated_like_numpy(make, err, words):
    with pytest.raises(err) as info:
        make()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_missing_array_api_compat_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "array_api_compat", None)  # import now fails
    monkeypatch.setattr(_xp, "_NAMESPACES", {})  # forget the namespace already looked up
    with pytest.raises(ImportError, match=r'payoff .*pip install "gpo\[array\]"'):
        gc.MatrixGame(torch.ones(2, 2))
    # numpy never needs it.
    assert gc.nash_gap(gc.MatrixGame(np.eye(2)), [1.0, 0.0], [0.5, 0.5]) == 0.5


# ------------------------------------------------------------------- gpo_core imports no torch
def test_gpo_core_source_never_imports_torch_and_imports_compat_only_inside_a_function():
    for path in sorted((ROOT / "gpo_core").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            roots = {name.split(".")[0] for name in names}
            assert "torch" not in roots, f"{path.name}:{node.lineno} imports torch"
            if "array_api_compat" in roots:
                assert id(node) not in top_level and path.name == "_xp.py", (
                    f"{path.name}:{node.lineno} imports array_api_compat at import time"
                )


def test_numpy_use_of_gpo_core_loads_neither_torch_nor_array_api_compat():
    code = (
        "import sys, numpy as np, gpo_core as gc\n"
        "g = gc.MatrixGame(np.eye(3, dtype=np.float32))\n"
        "t = gc.play(g, gc.regret_matching_plus(), steps=20, alternating=True)\n"
        "gc.nash_gap(g, t.average.row, t.average.col)\n"
        "loaded = [m for m in ('torch', 'array_api_compat') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------ the device path, rehearsed on the CPU
def _no_host_access(monkeypatch) -> None:
    """Make every way numpy could read a tensor's memory raise, as it does for a CUDA tensor
    (``__array__``, ``.numpy()``, DLPack): what still runs is the path a GPU game takes."""

    def refuse(self, *args, **kwargs):
        raise TypeError("can't convert this tensor to numpy (rehearsing a GPU tensor)")

    for name in ("__array__", "numpy", "__dlpack__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rule", sorted(RULES))
def test_play_never_reads_a_tensor_through_numpy_so_it_runs_as_on_a_gpu(rule, dtype, monkeypatch):
    """CI has no GPU. A CUDA tensor differs from a CPU one, for gpo_core, in that numpy cannot
    view it: with those views refused, every rule's play (alternating, with tol), batched play,
    nash_gap and best_response run in torch alone and agree with the numpy run."""
    a = _payoff(seed=21, shape=(2, 5, 5))  # square: mmd_magnet's magnet has 5 entries
    a = a.astype(np.float32) if dtype == torch.float32 else a
    kwargs = dict(steps=150, alternating=True, averaging="quadratic", record_every=5, tol=1e-6)
    refs = [gc.play(gc.MatrixGame(a[i]), RULES[rule](), **kwargs) for i in range(2)]
    ref_batch = gc.play(gc.MatrixGame(a), RULES[rule](), **kwargs)
    payoff = torch.tensor(a)
    with monkeypatch.context() as m:
        _no_host_access(m)
        with pytest.raises(TypeError, match="rehearsing"):
            np.asarray(payoff)  # the rehearsal is on
        outs = [gc.play(gc.MatrixGame(payoff[i]), RULES[rule](), **kwargs) for i in range(2)]
        out_batch = gc.play(gc.MatrixGame(payoff), RULES[rule](), **kwargs)
        gap = gc.nash_gap(gc.MatrixGame(payoff), out_batch.average.row, out_batch.average.col)
        br = gc.best_response(gc.MatrixGame(payoff[0]), outs[0].average.col, "row")
    tol = 1e-10 if dtype == torch.float64 else _f32_tol(150)
    for out, ref in list(zip(outs, refs)) + [(out_batch, ref_batch)]:
        assert out.num_steps == ref.num_steps
        for name, value in _fields(out).items():
            assert isinstance(value, torch.Tensor) and value.dtype == dtype, name
            if dtype == torch.float64 or "logits" not in name:
                assert _diff(value, _fields(ref)[name]) <= tol, name
    ref_gap = gc.nash_gap(gc.MatrixGame(a), ref_batch.average.row, ref_batch.average.col)
    assert tuple(gap.shape) == (2,) and _diff(gap, ref_gap) <= tol
    ref_br = gc.best_response(gc.MatrixGame(a[0]), refs[0].average.col, "row")
    assert int(br.action) == int(ref_br.action) and _diff(br.value, ref_br.value) <= tol


class _DeviceWaits:
    """Counts the times torch copies a tensor's value to the host (``_local_scalar_dense``: every
    ``bool(t)``, ``float(t)``, ``t.item()``); on a GPU each one waits for the device."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.overloadpacket.__name__ == "_local_scalar_dense":
                    counter.waits += 1
                return func(*args, **(kwargs or {}))

        self.waits = 0
        self.mode = Mode()


@pytest.mark.parametrize("rule", sorted(RULES))
def test_play_on_the_device_path_waits_for_the_device_only_for_tol(rule, monkeypatch):
    """Without tol, a run's waits do not grow with its steps (the rules' finiteness test and
    regret matching's "any positive regret" branch are off the host); with tol, one per step
    (the stop test). Measured on CPU tensors with numpy's access refused, the path a GPU takes."""
    a = torch.tensor(_payoff(seed=22, shape=(6, 6)))
    if rule == "mmd_magnet":
        a = a[:5, :5].clone()
    game = gc.MatrixGame(a)
    _no_host_access(monkeypatch)

    def waits(steps, tol):
        counter = _DeviceWaits()
        with counter.mode:
            gc.play(game, RULES[rule](), steps=steps, record_every=steps, tol=tol,
                    alternating=True, averaging="linear")
        return counter.waits

    assert waits(60, None) == waits(30, None)
    assert waits(60, 1e-15) - waits(30, 1e-15) == 30


@pytest.mark.parametrize("rule", ["rm+", "hedge", "optimistic"])
def test_play_on_the_device_path_raises_when_its_running_sums_overflow(rule, monkeypatch):
    """Payoffs near float64's limit: each utility is finite (a mixture of A's entries) but the
    running sums overflow within a few steps. numpy warns (RuntimeWarning) and returns nan
    gaps; torch would be silent, so the device path raises, once, after the run."""
    a = torch.full((4, 4), 1e308, dtype=torch.float64)
    a[0, 1] = -1e308
    _no_host_access(monkeypatch)
    with pytest.raises(ValueError, match="running sums .* not finite.*scale the game down"):
        gc.play(gc.MatrixGame(a), RULES[rule](), steps=5)
    ok = gc.play(gc.MatrixGame(a / 1e300), RULES[rule](), steps=5)  # the same game, scaled
    assert bool(torch.all(torch.isfinite(ok.nash_gap)))


# ------------------------------------------------------------------------------------ CUDA
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible)")


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rule", sorted(RULES))
def test_cuda_play_matches_numpy_and_stays_on_the_gpu(rule, dtype):
    a = _payoff(seed=4, shape=(40, 30))
    a = a.astype(np.float32) if dtype == torch.float32 else a
    steps = 200
    kwargs = dict(steps=steps, alternating=True, averaging="linear")
    if rule == "mmd_magnet":  # its magnet has 5 entries
        a = a[:5, :5].copy()
    ref = gc.play(gc.MatrixGame(a), RULES[rule](), **kwargs)
    x0 = np.full(a.shape[0], 1 / a.shape[0])
    out = gc.play(gc.MatrixGame(torch.tensor(a, device="cuda")), RULES[rule](), x0=x0, **kwargs)
    # float32: cuBLAS and numpy's BLAS sum the products in different orders
    tol = 1e-10 if dtype == torch.float64 else _f32_tol(steps)
    for name, value in _fields(out).items():
        assert value.device.type == "cuda" and value.dtype == dtype, name
        if dtype == torch.float64 or "logits" not in name:
            assert _diff(value, _fields(ref)[name]) <= tol, name
    gap = gc.nash_gap(gc.MatrixGame(torch.tensor(a, device="cuda")), out.average.row,
                      out.average.col)
    assert gap.device.type == "cuda"


@pytest.mark.gpu
@CUDA
def test_cuda_batched_play_with_tol_matches_numpy_and_exact_solvers_take_cuda_games():
    a = _payoff(seed=6, shape=(3, 12, 9))
    kwargs = dict(steps=3000, alternating=True, averaging="quadratic", tol=1e-3, record_every=4)
    ref = gc.play(gc.MatrixGame(a), gc.discounted_regret_matching_plus(), **kwargs)
    game = gc.MatrixGame(torch.tensor(a, device="cuda"))
    out = gc.play(game, gc.discounted_regret_matching_plus(), **kwargs)
    assert out.num_steps == ref.num_steps < 3000
    for name, value in _fields(out).items():
        assert value.device.type == "cuda", name
        assert _diff(value, _fields(ref)[name]) <= 1e-10, name
    lp, ref_lp = gc.solve_lp(game), gc.solve_lp(gc.MatrixGame(a))
    assert isinstance(lp.row, np.ndarray)  # exact solvers answer in numpy float64
    np.testing.assert_allclose(lp.value, ref_lp.value, atol=1e-9)
    piv = gc.solve_pivot(gc.MatrixGame(torch.tensor(a[0], device="cuda")))
    np.testing.assert_allclose(piv.value, ref_lp.value[0], atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_solvers_take_torch_and_float32_games_and_return_numpy_float64(dtype):
    """solve_lp / solve_qre are scipy code: they solve a float64 host copy of any game."""
    a = np.random.default_rng(3).uniform(-1, 1, size=(2, 5, 4))
    ref_lp = gc.solve_lp(gc.MatrixGame(a.astype(np.dtype(str(dtype)[6:]))))
    ref_qre = gc.solve_qre(gc.MatrixGame(a.astype(np.dtype(str(dtype)[6:]))), alpha=0.2)
    game = gc.MatrixGame(torch.as_tensor(a, dtype=dtype))
    lp = gc.solve_lp(game)
    qre = gc.solve_qre(game, alpha=0.2, magnet_row=torch.full((5,), 0.2, dtype=dtype))
    for sol, ref in ((lp, ref_lp), (qre, ref_qre)):
        assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in sol)
        np.testing.assert_allclose(sol.row, ref.row, atol=1e-9)
        np.testing.assert_allclose(sol.col, ref.col, atol=1e-9)
    # the float64 LP solution is an equilibrium of the float32-rounded matrix to LP accuracy
    host = np.asarray(game.payoff.numpy(), dtype=np.float64)
    gap = np.max(host @ lp.col[..., None], axis=-2)[..., 0] - np.min(lp.row[..., None, :] @ host, axis=-1)[..., 0]
    assert np.all(gap < 1e-9)


def test_tensors_that_require_grad_are_detached():
    """A game is data: play must not build an autograd graph across its steps."""
    a = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    game = gc.MatrixGame(a)
    assert not game.payoff.requires_grad
    x0 = torch.full((4,), 0.25, dtype=torch.float64, requires_grad=True)
    traj = gc.play(game, gc.regret_matching_plus(), steps=20, x0=x0)
    assert traj.average.row.grad_fn is None and not traj.average.row.requires_grad
    assert traj.nash_gap.grad_fn is None
