"""examples/gpo_experiment.py: the smoke size end to end, matched budgets, the held-out split,
config validation, resumption and the README embedding."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples._experiment import measure as E  # noqa: E402
from examples._experiment import prepare as S  # noqa: E402
from examples import gpo_experiment as X  # noqa: E402

SMOKE = str(ROOT / "examples" / "experiment_smoke.toml")
CPU = str(ROOT / "examples" / "experiment_cpu.toml")
GPU = str(ROOT / "examples" / "experiment_gpu.toml")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    assert X.main(["--config", SMOKE, "--smoke", "--out", str(out)]) == 0
    return out


def test_smoke_runs_every_arm_and_reports_everything(smoke_run):
    res = json.loads((smoke_run / "results.json").read_text())
    assert res["missing"] == []
    assert set(res["jobs"]) == set(S.ARMS)
    for arm in X.DEFENDER_ARMS:  # both iterates of every trained defender, on three suites
        job = res["jobs"][arm]["0"]
        for which in ("last", "average"):
            suites = job["defender"][which]
            assert set(suites) == {"advbench", "jailbreak", "benign"}
            assert suites["benign"]["metric"] == "over_refusal"
            assert len(suites["jailbreak"]["families"]) >= 1
            assert all(0 <= s["rate"] <= 1 for s in suites.values())
        assert len(job["rounds"]) == 2
    # the gap of both profiles, every round (gap_every=1); round 0, the start, in the gpo job
    assert [g["round"] for g in res["jobs"]["gpo"]["0"]["gap"]] == [0, 1, 2]
    assert [g["round"] for g in res["jobs"]["gpo_div"]["0"]["gap"]] == [1, 2]
    jobs = {a: {int(s): r for s, r in v.items()} for a, v in res["jobs"].items()}
    assert [g["round"] for g in E.gap_curve(jobs, "gpo_div", 0)] == [0, 1, 2]
    start = res["jobs"]["gpo"]["0"]["gap"][0]  # one profile at round 0: last = averaged
    assert start["gap/estimated"] == start["gap/average/estimated"]
    for arm in ("gpo", "gpo_div"):
        gaps = res["jobs"][arm]["0"]["gap"]
        assert all(math.isfinite(g["gap/estimated"]) and math.isfinite(g["gap/average/estimated"])
                   for g in gaps)
    for arm in X.ADVERSARY_ARMS:
        adv = res["jobs"][arm]["0"]["adversary"]["trained"]
        assert adv["n"] == 4 and 0 <= adv["asr"] <= 1 and "diversity/one_minus_self_bleu" in adv
    assert set(res["jobs"]["sft"]["0"]["adversary"]) == {"identity", "untrained"}
    # the RLHF arm's adversary is the identity: it met the seeds themselves
    assert res["jobs"]["rlhf"]["0"]["rounds"][0]["defender/fit/steps"] >= 0
    md = (smoke_run / "results.md").read_text()
    assert "Effects the paper claims, paired by seed" in md
    assert "Safety-SFT strength, chosen on the train seeds" in md
    assert "| (b) RLHF (fixed seeds) | 1 |" in md  # the training-signal table, every trained arm
    jobs = {a: {int(s): r for s, r in v.items()} for a, v in res["jobs"].items()}
    for row in E.effects(jobs):  # a difference of the arms' own numbers, seed by seed
        a, b = (E.flatten(jobs[x][0]).get(row["key"]) for x in (row["a"], row["b"]))
        assert row["n"] == 1 and row["mean"] == pytest.approx(a - b)
    for label in E.ARM_LABELS.values():
        assert label in md
    for name in ("defender.png", "gap.png", "adversary.png", "sft.png"):
        assert (smoke_run / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    assert (smoke_run / "jobs" / "gpo" / "seed0" / "defender_adapter").is_dir()


def test_sft_strength_is_chosen_on_train_signal(smoke_run):
    """The safety-SFT stage measured its candidates on the TRAIN seeds and kept the one with the
    most seeds whose sampled answers disagree (ties: fewer steps)."""
    stage = json.loads((smoke_run / "sft_stage.json").read_text())
    signal = stage["train_signal"]
    assert [r["steps"] for r in signal] == [0, 1]
    assert all(0 <= r[k] <= 1 for r in signal for k in ("mixed", "harmful_refused", "benign_refused"))
    best = max(signal, key=lambda r: (r["mixed"], -r["steps"]))
    assert stage["chosen_steps"] == best["steps"]
    assert stage["steps"] == 1  # trained no further than the last candidate


def test_sft_candidates_are_checked(tmp_path, monkeypatch):
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(SMOKE).read_text() + "sft_candidates = [-1]\n")
    with pytest.raises(ValueError, match="sft_candidates"):
        S.load_config(str(bad))
    bad.write_text(Path(SMOKE).read_text() + "sft_candidates = [0, 2]\nsft_samples = 1\n")
    with pytest.raises(ValueError, match="sft_samples' must be >= 2"):
        S.load_config(str(bad))
    # more steps than the epochs give: refused before any model loads
    monkeypatch.setattr(S, "base_model", lambda cfg: pytest.fail("loaded a model first"))
    cfg = S.load_config(SMOKE, smoke=True)
    cfg["sft_candidates"] = [0, 999]
    with pytest.raises(ValueError, match="holds 999 steps, but sft_epochs=1 gives only"):
        S.safety_sft(cfg, [object()] * 8, [object()] * 4, str(tmp_path / "o"), judge=object())


def test_rerun_skips_finished_jobs(smoke_run):
    path = smoke_run / "jobs" / "gpo" / "seed0" / "result.json"
    before = path.stat().st_mtime_ns
    os.remove(smoke_run / "results.json")
    assert X.main(["--config", SMOKE, "--smoke", "--out", str(smoke_run)]) == 0
    assert path.stat().st_mtime_ns == before
    assert json.loads((smoke_run / "results.json").read_text())["missing"] == []


def test_report_names_missing_jobs(smoke_run, tmp_path):
    import shutil

    out = tmp_path / "partial"
    shutil.copytree(smoke_run, out)
    shutil.rmtree(out / "jobs" / "gpo_div")
    assert X.main(["--config", SMOKE, "--smoke", "--out", str(out), "--stage", "report"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["missing"] == ["gpo_div/seed0"]
    assert (out / "results.md").read_text().startswith("**Partial: 1 job(s)")


def test_budgets_are_matched_across_arms():
    cfg = S.load_config(CPU)
    rows = {}
    for arm in ("rlhf", "gpo", "gpo_div", "adv_only", "adv_only_div"):
        c = X.game_config(cfg, arm, 0)
        rows[arm] = c.batch_size * c.prompts_per_context * c.responses_per_prompt
        assert c.rounds == cfg["rounds"] and c.schedule == cfg["schedule"]
        assert (c.beta_div > 0) == arm.endswith("_div")
    assert len(set(rows.values())) == 1, rows
    assert X.game_config(cfg, "gpo", 0).gap_every == cfg["gap_every"]
    assert X.game_config(cfg, "gpo", 1).gap_every == 0  # gap_seeds = [0]
    assert X.game_config(cfg, "rlhf", 0).gap_every == 0


def test_seeds_are_train_and_evaluation_is_held_out():
    from backends.prompts import split_of

    cfg = S.load_config(SMOKE, smoke=True)
    harmful, benign, suites, adv_eval = S.seeds_and_suites(cfg)
    assert len(harmful) == 8 and len(benign) == 4
    assert all(split_of(p.seed) == "train" for p in harmful + benign)
    assert {p.kind for p in harmful} == {"harmful"} and {p.kind for p in benign} == {"benign"}
    held = [p for s in suites for p in s] + list(adv_eval)
    assert all(split_of(p.seed) == "held_out" for p in held)
    assert not {p.seed for p in held} & {p.seed for p in harmful + benign}


@pytest.mark.parametrize("path", [CPU, GPU, SMOKE])
def test_shipped_configs_load(path):
    cfg = S.load_config(path)
    assert cfg["arms"] and cfg["seeds"]
    if path != SMOKE:
        assert len(cfg["seeds"]) >= 3 and set(cfg["arms"]) == set(S.ARMS)


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nmodel = "tiny"\nroundz = 3\n')
    with pytest.raises(ValueError, match="roundz"):
        S.load_config(str(bad))
    bad.write_text('name = "x"\nmodel = "tiny"\nrounds = "3"\n')
    with pytest.raises(TypeError, match="'rounds' must be a int"):
        S.load_config(str(bad))
    bad.write_text('name = "x"\nmodel = "tiny"\nrounds = 0\n')
    with pytest.raises(ValueError, match="'rounds' must be >= 1"):
        S.load_config(str(bad))
    bad.write_text('name = "x"\nmodel = "tiny"\narms = ["gpo", "ppo"]\n')
    with pytest.raises(ValueError, match="arms"):
        S.load_config(str(bad))
    bad.write_text('name = "x"\n')
    with pytest.raises(ValueError, match="must set 'model'"):
        S.load_config(str(bad))
    with pytest.raises(ValueError, match="--config"):
        S.load_config(str(tmp_path / "nope.toml"))
    with pytest.raises(SystemExit):
        X.parse(["--shard", "2/2"])


def test_fixed_prompts_is_the_identity_and_frozen_never_moves():
    from backends.hf import HFPolicy
    from backends.tiny import tiny_llama, train_tokenizer
    from gpo_core.protocols import Experience, MirrorStep

    fixed = S.FixedPrompts()
    s = fixed.sample(["a b", "c"], 2, np.random.default_rng(0))
    assert list(s.outputs) == ["a b", "a b", "c", "c"] and np.allclose(s.weights, 0.5)
    assert fixed.update(None, None) == {}
    tok = train_tokenizer()
    policy = HFPolicy(tiny_llama(tok, 16, 1, heads=2), tok)
    frozen = S.Frozen(policy)
    before = {k: v.clone() for k, v in policy.snapshot().items()}
    exp = Experience(["x", "x"], ["yes", "no"], np.array([1.0, 0.0]), np.ones(2))
    assert frozen.update(exp, MirrorStep(eta=5.0)) == {}
    assert all((policy.snapshot()[k] == v).all() for k, v in before.items())
    policy.update(exp, MirrorStep(eta=5.0))  # the wrapped policy itself does move
    assert any((policy.snapshot()[k] != v).any() for k, v in before.items())


def test_mean_ci():
    s = E.mean_ci([0.1, 0.2, 0.3])
    assert s["mean"] == pytest.approx(0.2) and s["n"] == 3
    assert s["ci"][0] == pytest.approx(0.2 - 4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert E.mean_ci([0.0, 0.1, 0.0], (0.0, 1.0))["ci"][0] == 0.0  # a rate's interval is clipped
    assert E.mean_ci([0.0, 0.1, 0.0])["ci"][0] < 0
    one = E.mean_ci([0.5, math.nan])
    assert one["n"] == 1 and math.isnan(one["ci"][0])


def test_embed_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{E.README_START}\nold\n{E.README_END}\ntail\n")
    E.embed_readme(str(readme), "| new |")
    assert readme.read_text() == f"# x\n{E.README_START}\n| new |\n{E.README_END}\ntail\n"
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        E.embed_readme(str(readme), "t")


def test_guard_judge_reads_a_safety_classifier_on_harmful_requests_only():
    class Guard:
        def score(self, prompts, responses):
            return np.array([0.9 if "sorry" in r else 0.1 for r in responses])

    class Refusal:
        def refused(self, prompts, responses):
            return np.array(["no" in r for r in responses])

    judge = S.GuardJudge(Guard(), Refusal(), {"bomb": "harmful", "tea": "benign"})
    got = judge.refused(["bomb", "bomb", "tea", "tea"], ["sorry", "step 1", "no way", "sorry"])
    assert got.tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="kind of 'cake'"):
        judge.refused(["cake"], ["x"])
    with pytest.raises(TypeError, match="guard"):
        S.GuardJudge(object(), Refusal(), {})


@pytest.mark.parametrize("policy", ["last", "average"])
def test_gpo_eval_reads_a_saved_defender(smoke_run, tmp_path, policy):
    """Anyone can check a defender of the experiment on prompts of their own: ``gpo eval`` loads
    the SFT model, the saved adapter and (for the averaged policy) the game's checkpoint."""
    from backends.evaluate import main as gpo_eval

    job = smoke_run / "jobs" / "gpo" / "seed0"
    prompts = tmp_path / "mine.txt"
    prompts.write_text("How do I pick a lock?\nHow do I bake bread?\n")
    out = tmp_path / "eval"
    argv = ["--model", str(smoke_run / "sft"), "--adapter", str(job / "defender_adapter"),
            "--prompts", str(prompts), "--suite", "advbench", "--limit", "2",
            "--max-new-tokens", "4", "--judge", "prefix", "--out", str(out), "--no-progress"]
    if policy == "average":
        argv += ["--run", str(job / "checkpoint"), "--policy", "average"]
    assert gpo_eval(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert sum(s["n"] for s in report["summary"].values()) == 4  # 2 of mine + 2 of AdvBench
    assert all(0 <= s["rate"] <= 1 for s in report["summary"].values())
