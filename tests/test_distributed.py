"""Data-parallel GPO: 2 CPU ranks (gloo) under torchrun and under ``accelerate launch``, against
one process playing the same global batch, and a 2-rank checkpoint resume.

Launching real processes costs 5-10 s each, so the single-process and the torchrun runs are
shared by the tests of this module. ``accelerate launch --multi_gpu --num_processes 2`` starts two
processes on a CPU-only machine too (it hands over to torch.distributed.run); the script then asks
accelerate for the CPU (``PartialState(cpu=True)``), which forms a MULTI_CPU gloo group.
(``accelerate launch --cpu`` with a MULTI_CPU config starts only one process without MPI.)
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

import torch  # noqa: F401  (the [all] extra installs both: missing is a failure, not a skip)
import transformers  # noqa: F401

from backends.tabular import matrix_game_players  # noqa: E402
from gpo_core import MatrixGame  # noqa: E402
from gpo_core.alignment import GameConfig, PolicyError, run_game  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "ddp_worker.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

# The worker's players are float64 copies of tiny random Llamas. The 2-rank run sums the same
# terms in another order (two micro-batches of its own per rank, then an all-reduce), so it can
# only agree with one process up to rounding. In float32 that rounding is amplified: AdamW's
# first steps are lr * g / (|g| + 1e-8), a gain of lr/eps = 1e6 on gradient components that
# nearly cancel, so the parameters drift apart and, every few runs, one sampled token flips and
# the runs part ways (measured over seeds 0-10, 3 rounds, float32: 2 seeds drew a different
# answer, parameters drifted apart by up to 2e-2). In float64 the same 11 runs agreed to 3e-16
# relative in every metric and 2e-12 in the parameters; the bounds below leave a margin of 500x
# or more for other CPUs and BLAS builds, and are still far below any difference a different
# sample would make (one answer of 32 changing moves reward/mean by at least 1/192).
METRIC_RTOL, METRIC_ATOL = 1e-9, 1e-12
PARAM_ATOL = 1e-9


def _run(argv, out, *extra, env=None):
    out.mkdir(parents=True, exist_ok=True)
    full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::FutureWarning",
            **(env or {})}
    proc = subprocess.run(argv + [str(WORKER), str(out), *extra], env=full, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ranks = sorted(out.glob("rank*.json"))
    runs = [json.loads(p.read_text()) for p in ranks]
    params = dict(np.load(out / "params.npz"))
    return runs, params


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    runs, params = _run([sys.executable], tmp_path_factory.mktemp("one"))
    assert len(runs) == 1 and runs[0]["world_size"] == 1
    return runs[0], params


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    runs, params = _run(TORCHRUN, tmp_path_factory.mktemp("two"))
    assert [r["world_size"] for r in runs] == [2, 2] and runs[0]["comm"] == "TorchComm"
    return runs, params


def _assert_same_game(run, one, params, one_params):
    """A data-parallel run played the game the single process played, up to rounding."""
    assert run["history"] == one["history"], "every prompt drawn is the one one process drew"
    assert len(run["metrics"]) == len(one["metrics"]) == 3
    for r, (got, want) in enumerate(zip(run["metrics"], one["metrics"])):
        assert set(got) == set(want), r
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=METRIC_RTOL, atol=METRIC_ATOL,
                                       err_msg=f"round {r + 1}, {key}")
    assert set(params) == set(one_params)
    for name in one_params:
        np.testing.assert_allclose(params[name], one_params[name], rtol=0, atol=PARAM_ATOL,
                                   err_msg=name)


def _assert_replicas_identical(runs):
    r0, r1 = runs
    assert r0["digest"] == r1["digest"], "the replicas drifted apart"
    assert r0["start"] == r1["start"]
    assert r0["metrics"] == r1["metrics"] and r0["history"] == r1["history"]


def test_torchrun_two_ranks_stay_identical_and_match_one_process(single, two):
    one, one_params = single
    runs, params = two
    _assert_replicas_identical(runs)
    assert runs[0]["digest"] != runs[0]["start"], "the players did train"
    assert all(m["defender/grad_norm"] > 0.01 for m in one["metrics"])
    assert len(one["history"]) == 3 * 8 * 2  # rounds x seed prompts x rewrites per seed
    _assert_same_game(runs[0], one, params, one_params)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_launch_two_ranks_stay_identical_and_match_one_process(tmp_path, single, two):
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    # HF_HOME: no accelerate config file of the user's can change the launch
    runs, params = _run(launch, tmp_path / "acc", "--accelerate", env={"HF_HOME": str(tmp_path)})
    assert [r["comm"] for r in runs] == ["AccelerateComm"] * 2
    assert [r["world_size"] for r in runs] == [2, 2]
    _assert_replicas_identical(runs)
    one, one_params = single
    _assert_same_game(runs[0], one, params, one_params)
    # accelerate's collectives compute exactly what the torchrun run computed
    assert runs[0]["digest"] == two[0][0]["digest"]
    assert runs[0]["metrics"] == two[0][0]["metrics"]


def test_two_ranks_stopped_after_two_rounds_resume_to_the_uninterrupted_run(tmp_path, two):
    ckpt = tmp_path / "ckpt"
    first, _ = _run(TORCHRUN, tmp_path / "first", "--rounds", "2", "--checkpoint", str(ckpt))
    assert [r["played"] for r in first] == [[1, 2], [1, 2]]
    # only rank 0 writes (one current and one iterate snapshot per player and round, here)
    assert first[0]["counts"]["save_snapshot"] > 0 and first[1]["counts"]["save_snapshot"] == 0
    assert json.loads((ckpt / "state.json").read_text())["round"] == 2

    resumed, params = _run(TORCHRUN, tmp_path / "resumed", "--rounds", "3",
                           "--checkpoint", str(ckpt))
    assert [r["played"] for r in resumed] == [[3], [3]], "both ranks resumed after round 2"
    assert all(r["counts"]["load_snapshot"] > 0 for r in resumed), "every rank loaded it"
    assert resumed[1]["counts"]["save_snapshot"] == 0
    _assert_replicas_identical(resumed)
    # the same ranks doing the same sums: the resumed run is bit-identical to the uninterrupted one
    runs, uninterrupted = two
    assert resumed[0]["digest"] == runs[0]["digest"]
    assert resumed[0]["metrics"] == runs[0]["metrics"]
    assert resumed[0]["history"] == runs[0]["history"]
    assert all(np.array_equal(params[k], uninterrupted[k]) for k in uninterrupted)


# ------------------------------------------------------------------ checkpoints, in one process


class _SecondRank:
    """Rank 1 of 2, with the other rank's side of each collective scripted."""

    rank, world_size = 1, 2

    def __init__(self, rank0_says):
        self.rank0_says = rank0_says

    def mean(self, metrics):
        return dict(metrics)

    def gather(self, texts):
        texts = list(texts)
        # one text: the start-round check or the checkpoint status; more: a batch of prompts
        return [self.rank0_says(texts)] + texts if len(texts) == 1 else texts + texts


def _tabular(seed=0):
    return matrix_game_players(MatrixGame.random(2, 3, seed=seed))


def test_ranks_that_see_different_checkpoints_are_told_to_share_the_folder(tmp_path):
    d, a, r = _tabular()
    cfg = GameConfig(rounds=2, batch_size=4, conditional_adversary=False)
    run_game(d, a, r, GameConfig(**{**cfg.to_dict(), "rounds": 1}), checkpoint_dir=tmp_path)
    # rank 1 finds round 1 here, while rank 0 (scripted) found no checkpoint
    comm = _SecondRank(lambda texts: "0")
    d, a, r = _tabular()
    with pytest.raises(ValueError, match=r"different checkpoints .*last round per rank: "
                                         r"\['0', '1'\].* a folder all ranks see"):
        run_game(d, a, r, cfg, checkpoint_dir=tmp_path, comm=comm)


def test_a_failed_checkpoint_write_on_rank_0_stops_the_other_ranks(tmp_path):
    d, a, r = _tabular()
    cfg = GameConfig(rounds=2, batch_size=4, conditional_adversary=False)
    # rank 0 (scripted) reports its failure where the ranks meet after each checkpoint
    comm = _SecondRank(lambda texts: "0" if texts == ["0"] else "OSError: No space left on device")
    with pytest.raises(PolicyError, match="rank 0 could not write the round-1 checkpoint: "
                                          "OSError: No space left"):
        run_game(d, a, r, cfg, checkpoint_dir=tmp_path, comm=comm)
    assert not (tmp_path / "state.json").exists(), "rank 1 wrote nothing"


class _Burner:
    """A policy that records its contexts and uses a batch-dependent amount of randomness."""

    def __init__(self, inner, burn):
        self.inner, self.burn, self.seen = inner, burn, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def sample(self, contexts, num_samples, rng):
        self.seen.append(tuple(contexts))
        rng.random(self.burn * len(contexts))
        return self.inner.sample(contexts, num_samples, rng)


def test_the_seed_batches_do_not_depend_on_how_much_randomness_a_policy_uses():
    """Each policy call takes exactly one draw from the loop's generator, so ranks whose
    policies consume different amounts (their slices differ) keep drawing the same batches."""
    from backends.tabular import TableReward, TabularPolicy

    seeds = [f"s{i}" for i in range(5)]
    reward = TableReward({(p, r): float(p == "p1") - float(r == "r1")
                          for p in ("p0", "p1") for r in ("r0", "r1")})
    batches = []
    for burn in (0, 7):
        adversary = _Burner(TabularPolicy(["p0", "p1"], contexts=seeds, mode="sample"), burn)
        defender = _Burner(TabularPolicy(["r0", "r1"], mode="sample"), burn)
        run_game(defender, adversary, reward, GameConfig(rounds=4, batch_size=3),
                 seed_prompts=seeds)
        batches.append(adversary.seen)
    assert batches[0] == batches[1]
    assert len(set(batches[0])) > 1


def test_communicators_name_bad_arguments_and_work_as_one_process():
    import types

    import torch

    from backends.distributed import AccelerateComm, TorchComm, init

    with pytest.raises(ValueError, match=r"backend must be one of .*'gloo', 'nccl'.* got 'nccl2'"):
        init("nccl2")
    with pytest.raises(TypeError, match="state must be an accelerate.Accelerator or "
                                        "accelerate.PartialState, got 3 .no process_index"):
        AccelerateComm.from_state(3)
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        TorchComm(0, 1).broadcast_parameters("model")
    # one process: accelerate's utilities are the identity, and so is the communicator
    comm = AccelerateComm.from_state(
        types.SimpleNamespace(process_index=0, num_processes=1, device="cpu"))
    assert (comm.rank, comm.world_size, comm.device) == (0, 1, torch.device("cpu"))
    assert comm.mean({"b": 2.5, "a": -1.0}) == {"a": -1.0, "b": 2.5}
    assert comm.gather(["x", "y"]) == ["x", "y"]
    layer = torch.nn.Linear(2, 1)
    layer(torch.ones(1, 2)).sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    comm.average_gradients(list(layer.parameters()))
    assert all(torch.equal(p.grad, g) for p, g in zip(layer.parameters(), grads))


def test_init_joins_an_existing_group_and_refuses_another_backend(monkeypatch, tmp_path):
    import torch.distributed as dist

    from backends.distributed import init

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        with pytest.raises(ValueError, match="backend='nccl', but the process group was already "
                                             "initialised with 'gloo'"):
            init("nccl")
        comm = init()
        assert (comm.rank, comm.world_size) == (0, 1)
        assert init("gloo").world_size == 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_shutdown_leaves_the_group_and_is_a_no_op_without_one(tmp_path):
    import torch.distributed as dist

    from backends.distributed import shutdown

    shutdown()  # no group: nothing to do, no error
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        shutdown()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
