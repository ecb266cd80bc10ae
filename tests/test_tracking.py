"""backends.tracking: TensorBoard written and read back offline (EventAccumulator), a real
run_game logged round by round, Weights & Biases through a stand-in module (init in offline mode,
one log per round at its step, finish on close) and its missing-package message, combine and
report_to, and every bad argument refused with its name."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

import gpo_core as gc
from backends.tabular import matrix_game_players
from backends.tracking import Tracker, combine, report_to, tensorboard, wandb
from gpo_core.alignment import GameConfig, RoundLog, run_game

pytest.importorskip("torch")
pytest.importorskip("tensorboard")


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_text(log_dir, tag) -> str:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    (event,) = acc.Tensors(f"{tag}/text_summary")
    return event.tensor_proto.string_val[0].decode()


# ------------------------------------------------------------------------------- TensorBoard


def test_tensorboard_writes_every_metric_at_its_round_and_reads_back(tmp_path):
    logs = [RoundLog(1, {"reward/mean": 0.25, "defender/loss": -1.5}),
            RoundLog(2, {"reward/mean": 0.5, "defender/loss": -2.0, "gap/estimated": 0.125}),
            RoundLog(3, {"reward/mean": 1.0 / 3.0, "defender/loss": 7.0})]
    with tensorboard(tmp_path / "tb", config={"rounds": 3, "eta": 0.1}) as tracker:
        for log in logs:
            tracker(log)
        # flushed every round: readable before close
        assert read_scalars(tmp_path / "tb")["reward/mean"][-1][0] == 3
    assert tracker.closed
    got = read_scalars(tmp_path / "tb")
    assert set(got) == {"reward/mean", "defender/loss", "gap/estimated"}
    assert [s for s, _ in got["reward/mean"]] == [1, 2, 3]
    np.testing.assert_allclose([v for _, v in got["reward/mean"]], [0.25, 0.5, 1 / 3], rtol=1e-7)
    assert got["defender/loss"] == [(1, -1.5), (2, -2.0), (3, 7.0)]
    assert got["gap/estimated"] == [(2, 0.125)]
    assert json.loads(read_text(tmp_path / "tb", "config")) == {"rounds": 3, "eta": 0.1}


def test_tensorboard_logs_a_real_run_game(tmp_path):
    game = gc.MatrixGame.random(3, 4, seed=0)
    d, a, r = matrix_game_players(game)
    cfg = GameConfig(rounds=4, batch_size=1, conditional_adversary=False)
    tracker = tensorboard(tmp_path / "run", config=cfg)
    res = run_game(d, a, r, cfg, on_round=tracker)
    tracker.close()
    got = read_scalars(tmp_path / "run")
    assert set(got) == set(res.logs[0].metrics)
    for key, series in got.items():
        assert [s for s, _ in series] == [log.round for log in res.logs]
        np.testing.assert_allclose([v for _, v in series], [log.metrics[key] for log in res.logs],
                                   rtol=1e-6, atol=1e-30)  # event files store float32
    assert json.loads(read_text(tmp_path / "run", "config"))["rounds"] == 4


def test_tensorboard_missing_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        tensorboard(tmp_path)


# ----------------------------------------------------------------------- Weights & Biases


class FakeWandb(types.ModuleType):
    """Records what the tracker asks of ``wandb`` (the real package is not a dependency)."""

    def __init__(self):
        super().__init__("wandb")
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **kwargs):
        self.inits.append(kwargs)
        fake = self

        class Run:
            def log(self, data, step=None):
                fake.logged.append((step, dict(data)))

            def finish(self):
                fake.finished += 1

        return Run()


def test_wandb_runs_offline_logs_each_round_at_its_step_and_finishes(monkeypatch, tmp_path):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    tracker = wandb("red-team", name="try-1", dir=tmp_path, config=GameConfig(rounds=2))
    assert fake.inits == [{"project": "red-team", "name": "try-1", "mode": "offline",
                           "dir": str(tmp_path), "config": fake.inits[0]["config"]}]
    assert fake.inits[0]["config"]["rounds"] == 2
    tracker(RoundLog(1, {"reward/mean": 0.5}))
    tracker(RoundLog(2, {"reward/mean": 0.75, "gap/estimated": np.float64(0.1)}))
    tracker.close()
    tracker.close()  # idempotent
    assert fake.logged == [(1, {"reward/mean": 0.5}), (2, {"reward/mean": 0.75, "gap/estimated": 0.1})]
    assert all(type(v) is float for _, d in fake.logged for v in d.values())
    assert fake.finished == 1
    with pytest.raises(ValueError, match="is closed"):
        tracker(RoundLog(3, {}))


def test_wandb_missing_says_pip_install_wandb(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match="pip install wandb"):
        wandb()


def test_wandb_checks_its_arguments_before_importing(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # an import would fail with ImportError
    with pytest.raises(ValueError, match=r"mode must be one of \('offline', 'online', 'disabled'\)"):
        wandb(mode="cloud")
    with pytest.raises(TypeError, match="project must be a non-empty str"):
        wandb(project="")
    with pytest.raises(TypeError, match="name must be a str or None"):
        wandb(name=3)
    with pytest.raises(TypeError, match="config must be a mapping or a dataclass"):
        wandb(config=[1, 2])


# -------------------------------------------------------------------- combine and report_to


def test_combine_calls_in_order_skips_none_and_closes_what_it_can():
    seen = []

    class Closable:
        closed = False

        def __call__(self, log):
            seen.append(("closable", log.round))

        def close(self):
            self.closed = True

    closable = Closable()
    both = combine(lambda log: seen.append(("first", log.round)), None, closable)
    both(RoundLog(1, {"x": 1.0}))
    both(RoundLog(2, {}))
    assert seen == [("first", 1), ("closable", 1), ("first", 2), ("closable", 2)]
    both.close()
    assert closable.closed
    with pytest.raises(TypeError, match=r"callbacks\[1\] must be a callable"):
        combine(print, "tensorboard")


def test_report_to_builds_the_named_trackers(monkeypatch, tmp_path):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    tracker = report_to("all", log_dir=tmp_path, project="p")
    tracker(RoundLog(1, {"reward/mean": 0.5}))
    tracker.close()
    assert read_scalars(tmp_path)["reward/mean"] == [(1, 0.5)]
    assert fake.logged == [(1, {"reward/mean": 0.5})] and fake.finished == 1
    assert fake.inits[0]["mode"] == "offline" and fake.inits[0]["dir"] == str(tmp_path)
    none = report_to("none")
    none(RoundLog(1, {"x": 1.0}))
    with pytest.raises(ValueError, match="unknown report_to target 'mlflow'"):
        report_to(["tensorboard", "mlflow"])
    with pytest.raises(TypeError, match="targets must be a name or a list of names"):
        report_to(3)


def test_report_to_closes_tensorboard_when_wandb_cannot_start(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)
    closed = []
    real_close = Tracker.close
    monkeypatch.setattr(Tracker, "close", lambda self: (closed.append(self.name), real_close(self)))
    with pytest.raises(ImportError, match="pip install wandb"):
        report_to(["tensorboard", "wandb"], log_dir=tmp_path)
    assert closed == [f"tensorboard: {tmp_path}"]


# ------------------------------------------------------------------------------ bad input


def test_a_tracker_refuses_what_is_not_a_round_log(tmp_path):
    tracker = combine()
    with pytest.raises(TypeError, match="log must be a gpo_core.alignment.RoundLog"):
        tracker({"round": 1})
    with pytest.raises(ValueError, match="log.round must be >= 0"):
        tracker(RoundLog(-1, {}))
    with pytest.raises(TypeError, match=r"log.metrics\['loss'\] must be a real number, got str"):
        tracker(RoundLog(1, {"loss": "0.5"}))
    with pytest.raises(TypeError, match="log.metrics keys must be str"):
        tracker(RoundLog(1, {1: 0.5}))
    with pytest.raises(TypeError, match="log_dir must be a folder path"):
        tensorboard(None)
