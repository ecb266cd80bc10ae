"""FSDP (backends.hf_fsdp): 2 CPU ranks (gloo) under torchrun play GPO with sharded policies.

One launch (tests/fsdp_worker.py) plays, on the same 2 ranks: the data-parallel game, the same
game sharded, a sharded game stopped after round 1 with a checkpoint and fresh sharded players
resuming it, and the LoRA pair of games (data-parallel and sharded). The sharded runs must play
the data-parallel game (which tests/test_distributed.py checks against one process) up to
rounding; the worker's small vocabulary makes the ranks' sampling take different numbers of
forwards and their updates different numbers of distinct rows, which is what shard() must keep
in step (the ranks would otherwise wait on each other forever: the worker then fails with a
traceback after FSDP_WORKER_TIMEOUT seconds).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from backends.hf import GenerationSettings, HFPolicy
from backends.tiny import tiny_llama, word_tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "fsdp_worker.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# float64 players; the sharded and data-parallel runs sum the same terms in another order (a
# reduce-scatter instead of an all-reduce, padded micro-batches). Measured: metrics equal to the
# bit, parameters within 3e-16; the bounds are those of tests/test_distributed.py.
METRIC_RTOL, METRIC_ATOL, PARAM_ATOL = 1e-9, 1e-12, 1e-9


@pytest.fixture(scope="module")
def games(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(TORCHRUN + [str(WORKER), str(out)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]

    def load(game):
        ranks = [json.loads((out / f"{game}.rank{r}.json").read_text()) for r in (0, 1)]
        return ranks, dict(np.load(out / f"{game}.npz"))

    return out, load


def _assert_same_game(a, b):
    """Run ``b`` played run ``a``'s game: the same prompts, metrics and parameters."""
    (runs_a, params_a), (runs_b, params_b) = a, b
    assert runs_a[0]["history"] == runs_b[0]["history"], "every prompt drawn is the same"
    want, got = runs_a[0]["metrics"], runs_b[0]["metrics"]
    assert len(want) == 2 and [sorted(m) for m in got] == [sorted(m) for m in want]
    keys = [(r, k) for r, m in enumerate(want) for k in sorted(m)]
    np.testing.assert_allclose([got[r][k] for r, k in keys], [want[r][k] for r, k in keys],
                               rtol=METRIC_RTOL, atol=METRIC_ATOL,
                               err_msg=f"metrics, as (round index, key): {keys}")
    names = sorted(params_a)
    assert sorted(params_b) == names
    np.testing.assert_allclose(np.concatenate([params_b[n].ravel() for n in names]),
                               np.concatenate([params_a[n].ravel() for n in names]),
                               rtol=0, atol=PARAM_ATOL, err_msg="parameters")


def _kept_pace(runs):
    """The ranks did need pacing: someone ran empty forwards and someone padded an update."""
    assert sum(sum(r["empty_forwards"]) for r in runs) > 0, "sampling forwards never differed"
    assert sum(sum(r["padded_rows"]) for r in runs) > 0, "distinct row counts never differed"


def _full_policy():
    """An unsharded defender built as the worker builds it (for shapes and loading)."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from fsdp_worker import WORDS
    finally:
        sys.path.pop(0)
    tok = word_tokenizer(WORDS)
    return HFPolicy(tiny_llama(tok, seed=0).double(), tok, optimizer="adam",
                    generation=GenerationSettings(max_new_tokens=4), name="defender")


def test_sharded_full_fine_tuning_plays_the_data_parallel_game(games):
    _, load = games
    ddp, fsdp = load("ddp"), load("fsdp")
    assert fsdp[0][0]["played"] == fsdp[0][1]["played"] == [1, 2]
    _kept_pace(fsdp[0])
    assert fsdp[0][0]["metrics"][-1]["defender/grad_norm"] > 0.01, "the players did train"
    _assert_same_game(ddp, fsdp)
    # rank 0's snapshots are the full state, rank 1's its shards (half the embedding's rows)
    full = {f"defender.{k}": list(v) for k, v in _full_policy().snapshot_shapes().items()}
    shapes0, shapes1 = fsdp[0][0]["shapes"], fsdp[0][1]["shapes"]
    assert {k: v for k, v in shapes0.items() if k.startswith("defender.")} == full
    emb = "defender.model.embed_tokens.weight"
    assert shapes1[emb] == [full[emb][0] - (full[emb][0] + 1) // 2, full[emb][1]]


def test_rank_0_checkpoints_full_weights_and_a_resumed_run_equals_the_uninterrupted(games):
    out, load = games
    first, resumed, fsdp = load("first"), load("resumed"), load("fsdp")
    assert [r["played"] for r in first[0]] == [[1], [1]]
    assert [r["played"] for r in resumed[0]] == [[2], [2]], "both ranks resumed after round 1"
    # the same ranks doing the same sums: bit-identical to the uninterrupted sharded run
    assert resumed[0][0]["metrics"] == fsdp[0][0]["metrics"]
    assert resumed[0][0]["history"] == fsdp[0][0]["history"]
    assert all(np.array_equal(resumed[1][k], fsdp[1][k]) for k in fsdp[1])
    # the checkpoint holds the full weights: a one-process policy loads and restores them
    from safetensors.torch import load_file

    ckpt = out / "ckpt"
    assert json.loads((ckpt / "state.json").read_text())["round"] == 2
    saved = load_file(ckpt / "defender_r2")
    one = _full_policy()
    assert {k: tuple(v.shape) for k, v in saved.items()} == one.snapshot_shapes()
    for k, v in saved.items():
        np.testing.assert_array_equal(v.numpy(), resumed[1][f"defender.{k}"], err_msg=k)
    one.restore(one.load_snapshot(ckpt / "defender_r2"))
    assert torch.equal(one.model.state_dict()["lm_head.weight"], saved["lm_head.weight"])
    # the iterates, too: the first one is the initial (unsharded, untrained) model
    iterate = load_file(ckpt / "iterate_defender_0")
    fresh = _full_policy().snapshot()
    assert all(torch.equal(iterate[k], fresh[k]) for k in fresh)


def test_sharded_lora_plays_the_data_parallel_game(games):
    _, load = games
    ddp, fsdp = load("lora_ddp"), load("lora_fsdp")
    _kept_pace(fsdp[0])
    assert all("lora_" in k for k in fsdp[1]), "a LoRA snapshot is the adapters"
    # the adapters stay whole: every rank's snapshot has the full shapes
    assert fsdp[0][0]["shapes"] == fsdp[0][1]["shapes"]
    _assert_same_game(ddp, fsdp)


# ------------------------------------------------------------------ in one process (1 rank)


@pytest.fixture
def one_rank(tmp_path, monkeypatch):
    import torch.distributed as dist

    from backends.distributed import init

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        yield init("gloo")
    finally:
        dist.destroy_process_group()


def test_shard_names_bad_arguments(one_rank):
    from backends.hf_fsdp import shard

    with pytest.raises(TypeError, match="policy must be a backends.hf.HFPolicy"):
        shard("model", one_rank)
    with pytest.raises(TypeError, match="comm must be a backends.distributed.TorchComm"):
        shard(_full_policy(), object())
    tok = word_tokenizer(["a", "b"])
    lbfgs = HFPolicy(tiny_llama(tok, 16, 1, heads=2), tok, optimizer="lbfgs")
    with pytest.raises(ValueError, match="cannot use optimizer='lbfgs'.*Cannot flatten unevenly "
                                         "sharded tensor.*optimizer='adam'"):
        shard(lbfgs, one_rank)
    sharded = shard(_full_policy(), one_rank)
    with pytest.raises(ValueError, match=r"already sharded; call shard\(\) once"):
        shard(sharded.policy, one_rank)


def test_shard_needs_a_process_group():
    from backends.distributed import TorchComm
    from backends.hf_fsdp import shard

    with pytest.raises(RuntimeError, match="needs the torch.distributed process group"):
        shard(_full_policy(), TorchComm(0, 1))


def test_one_rank_snapshots_round_trip_and_match_the_unsharded_policy(one_rank, tmp_path):
    from backends.hf_fsdp import shard

    plain, sharded = _full_policy(), shard(_full_policy(), one_rank)
    want, got = plain.snapshot(), sharded.snapshot()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    ctx, out = ["the cat", "a dog"], ["sat", ""]
    np.testing.assert_allclose(sharded.log_prob(ctx, out), plain.log_prob(ctx, out), rtol=1e-12)
    # a changed state is seen (version counters), restored, saved and loaded back
    with torch.no_grad():
        next(sharded.model.parameters()).to_local().add_(1.0)
    changed = sharded.snapshot()
    assert not torch.equal(changed["model.embed_tokens.weight"], want["model.embed_tokens.weight"])
    sharded.restore(want)
    assert all(torch.equal(sharded.snapshot()[k], want[k]) for k in want)
    sharded.save_snapshot(changed, tmp_path / "s")
    sharded.restore(sharded.load_snapshot(tmp_path / "s"))
    assert torch.equal(sharded.snapshot()["model.embed_tokens.weight"],
                       changed["model.embed_tokens.weight"])
    with pytest.raises(ValueError, match="restore failed.*wrong shape"):
        sharded.restore({**want, "lm_head.weight": torch.zeros(1)})


def test_padding_rows_are_new_and_ordinary():
    from backends.hf_fsdp import _padding

    tok = word_tokenizer(["a", "b", "c"])
    # the first context, then "" and one-token outputs that are not yet among its rows
    assert _padding(tok, ["x", "y"], ["", "b"], 2) == [("x", "a"), ("x", "b")]
    assert _padding(tok, ["x"], ["a"], 3) == [("x", ""), ("x", "b"), ("x", "c")]
    assert _padding(tok, ["x"], ["a"], 0) == []
    with pytest.raises(ValueError, match="cannot pad this rank's update with 9 rows"):
        _padding(tok, ["x"], ["a"], 9)
