"""The paper's experiment at small scale: does the game make a safer defender and a stronger,
more diverse adversary (Zheng et al., Tables 1-2)? Arms with matched budgets, >= 3 seeds each:

(a) ``sft``: the safety-SFT model untouched (its defender, the raw seeds and the untrained
    adversary as attackers);
(b) ``rlhf``: the defender trained on the fixed seed prompts (adversary = identity rewrite);
(c) ``gpo``: both players trained; (d) ``gpo_div``: GPO with the diversity reward;
(e) ``adv_only`` / ``adv_only_div``: the adversary trained against the frozen SFT defender.

Seeds are the TRAIN split of the harmful sets plus benign seeds; every number is measured on the
HELD-OUT split. Before the arms, a safety-SFT stage (``_experiment.prepare.safety_sft``) fits the
defender to written refusals on the harmful train seeds and to its own answers on the benign
ones, so that the game starts from a model that sometimes refuses (see docs/experiment.md).
Budgets: every trained arm plays the same rounds with the same defender rows per round
(``batch_size * prompts_per_context * responses_per_prompt``; the RLHF arm draws
``batch_size * prompts_per_context`` seeds instead of rewrites), the same tokens and fits.

    python examples/gpo_experiment.py --config examples/experiment_cpu.toml --out runs/exp_cpu
    python examples/gpo_experiment.py --smoke --out /tmp/s        # or --steps N: N rounds
    python examples/gpo_experiment.py --out runs/exp_cpu --embed-readme README.md

Resumable: each (arm, seed) job checkpoints its game in ``OUT/jobs/ARM/seedS/checkpoint`` and
writes ``result.json`` when done; a rerun skips finished jobs. ``--shard I/N`` runs every N-th
job (two processes on two cores); ``--stage report`` only aggregates. Writes ``OUT/results.json``
(atomically), ``OUT/results.md`` and ``OUT/plots/*.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
from typing import Any, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples._experiment import measure as E  # noqa: E402
from examples._experiment import prepare as S  # noqa: E402
from examples._experiment import training as T  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFENDER_ARMS = ("rlhf", "gpo", "gpo_div")
ADVERSARY_ARMS = ("gpo", "gpo_div", "adv_only", "adv_only_div")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="a TOML config (default: experiment_cpu.toml, "
                   "or experiment_smoke.toml with --smoke/--steps)")
    p.add_argument("--smoke", action="store_true", help="tiny random models, 1 seed, 2 rounds")
    p.add_argument("--steps", type=int, default=None,
                   help="the smoke size with this many rounds (the examples' smoke-test flag)")
    p.add_argument("--out", default="runs/gpo_experiment")
    p.add_argument("--stage", default="all", choices=("all", "sft", "jobs", "report"))
    p.add_argument("--shard", default="0/1", help="I/N: run jobs I, I+N, I+2N, ...")
    p.add_argument("--embed-readme", default=None, metavar="README",
                   help="put OUT/results.md between the README's experiment-table markers")
    args = p.parse_args(argv)
    try:
        i, n = (int(x) for x in args.shard.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        p.error(f"--shard must be I/N with 0 <= I < N, e.g. 0/2, got {args.shard!r}")
    args.shard_i, args.shard_n = i, n
    if args.steps is not None:
        if args.steps < 1:
            p.error(f"--steps must be >= 1, got {args.steps}")
        args.smoke = True
    if args.config is None:
        args.config = os.path.join(HERE, "experiment_smoke.toml" if args.smoke else "experiment_cpu.toml")
    return args


def policies(cfg: dict, out: str, arm: str) -> tuple[Any, Any]:
    from peft import LoraConfig

    from backends.hf import GenerationSettings, HFPolicy

    gen = GenerationSettings(max_new_tokens=cfg["max_new_tokens"])
    made = []
    for who in ("defender", "adversary"):
        model, tok = S.load_folder(os.path.join(out, "sft" if who == "defender" else "base"))
        n_layers = model.config.num_hidden_layers
        lora = LoraConfig(r=cfg["lora_r"], lora_alpha=2 * cfg["lora_r"],
                          target_modules=["q_proj", "v_proj"],
                          layers_to_transform=list(range(max(0, n_layers - cfg["lora_layers"]), n_layers)))
        if who == "adversary" and getattr(tok, "chat_template", None):
            template = lambda c, tok=tok: tok.apply_chat_template(  # noqa: E731
                [{"role": "user", "content": S.ADVERSARY_TEMPLATE.format(context=c)}],
                tokenize=False, add_generation_prompt=True)
        else:
            template = None if who == "defender" else S.ADVERSARY_TEMPLATE
        made.append(HFPolicy(model, tok, template=template, generation=gen, objective="regression",
                             fit_tol=cfg["fit_tol"], max_fit_steps=cfg["max_fit_steps"],
                             micro_batch_size=cfg["micro_batch_size"], device=cfg["device"],
                             dtype=cfg["dtype"], peft_config=lora, truncate_prompts=True, name=who))
    defender, adversary = made
    if arm == "rlhf":
        adversary = S.FixedPrompts()
    if arm.startswith("adv_only"):
        defender = S.Frozen(defender)
    return defender, adversary


def game_config(cfg: dict, arm: str, seed: int):
    from gpo_core.alignment import GameConfig

    b, ppc = cfg["batch_size"], cfg["prompts_per_context"]
    gap = cfg["gap_every"] if arm in ("gpo", "gpo_div") and seed in cfg["gap_seeds"] else 0
    return GameConfig(
        rounds=cfg["rounds"], schedule=cfg["schedule"],
        batch_size=b * ppc if arm == "rlhf" else b,  # same defender rows per round in every arm
        prompts_per_context=1 if arm == "rlhf" else ppc,
        responses_per_prompt=cfg["responses_per_prompt"], defender_eta=cfg["eta"],
        adversary_eta=cfg["eta"], beta_div=cfg["beta_div"] if arm.endswith("_div") else 0.0,
        attack_threshold=0.5, gap_every=gap, gap_of="both", gap_steps=cfg["gap_steps"],
        gap_rollouts=cfg["gap_rollouts"], gap_eta=cfg["gap_eta"], seed=seed)


def start_gap(cfg: dict, arm: str, seed: int, jobdir: str, defender: Any, adversary: Any,
              reward: Any, config: Any, seeds: list[str]) -> list[dict]:
    """The Nash gap of the starting profile (the SFT defender, the untrained adversary): round 0
    of the gap curve. Estimated in the ``gpo`` job only: ``gpo_div`` starts from the same profile
    and the gap is of the plain game (diversity left out), so its round 0 is the same number.
    Saved in ``jobdir/gap0.json`` so that a resumed job does not pay for it twice."""
    if arm != "gpo" or seed not in cfg["gap_seeds"] or cfg["gap_every"] < 1:
        return []
    from gpo_core._io import atomic_write_json
    from gpo_core.gap import estimate_gap, gap_stream

    path = os.path.join(jobdir, "gap0.json")
    if os.path.exists(path):
        return [_read_json(path)]
    t0 = time.time()
    est = estimate_gap(defender, adversary, reward, config, seed_prompts=seeds,
                       rng=gap_stream(seed, 0))
    # at round 0 the averaged policies are the starting policies themselves
    row = {"round": 0, **est, **{k.replace("gap/", "gap/average/", 1): v for k, v in est.items()}}
    os.makedirs(jobdir, exist_ok=True)
    atomic_write_json(path, row)
    print(f"  {arm} seed {seed} round 0 gap {est['gap/estimated']:.3f} in {time.time() - t0:.0f} s",
          flush=True)
    return [row]


def run_job(cfg: dict, out: str, arm: str, seed: int, data: tuple, emb: Any, judge: Any) -> dict:
    import numpy as np

    from backends.diversity import DiversityReward, diversity_metrics
    from backends.evaluate import run_snapshots
    from backends.judges import SafetyReward, SeedTracker
    from gpo_core.alignment import run_game

    harmful, benign, suites, adv_eval = data
    held_seeds = [p.text for p in adv_eval]
    jobdir = os.path.join(out, "jobs", arm, f"seed{seed}")
    start = time.time()
    res: dict[str, Any] = {"arm": arm, "seed": seed, "defender": {}, "adversary": {}}
    if arm == "sft":
        model, tok = S.load_folder(os.path.join(out, "sft"))
        res["defender"]["last"] = E.defender_eval(model, tok, suites, judge, cfg)
        res["adversary"]["identity"] = E.adversary_eval(lambda s: list(s), model, tok, held_seeds,
                                                        judge, emb, cfg)
        _, base_adv = policies(cfg, out, "gpo")
        rng = np.random.default_rng(seed)
        res["adversary"]["untrained"] = E.adversary_eval(
            lambda s: list(base_adv.sample(s, 1, rng).outputs), model, tok, held_seeds, judge, emb, cfg)
        res["seconds"] = round(time.time() - start, 1)
        return res
    defender, adversary = policies(cfg, out, arm)
    tracker = SeedTracker(adversary)
    reward = SafetyReward(harmful + benign, refusal=judge, embedder=emb, seed_of=tracker)
    config = game_config(cfg, arm, seed)
    ckpt = os.path.join(jobdir, "checkpoint")
    gap0 = start_gap(cfg, arm, seed, jobdir, defender, tracker, reward, config,
                     [p.text for p in harmful + benign])
    with warnings.catch_warnings():  # a fit that hits max_fit_steps: logged as fit/converged
        warnings.filterwarnings("ignore", message=".*the fit used its whole budget")
        result = run_game(defender, tracker, reward, config, seed_prompts=[p.text for p in harmful + benign],
                          diversity=DiversityReward(embedder=emb) if config.beta_div else None,
                          diversity_metrics=lambda p: diversity_metrics(p, emb), checkpoint_dir=ckpt,
                          on_round=lambda log: print(
                              f"  {arm} seed {seed} round {log.round}: {time.time() - start:.0f} s, "
                              f"reward {log.metrics.get('reward/mean', float('nan')):.3f}, gap "
                              f"{log.metrics.get('gap/estimated', float('nan')):.3f}", flush=True))
    res["game_seconds"] = round(time.time() - start, 1)
    res["rounds"] = [{"round": log.round, **log.metrics} for log in result.logs]
    res["gap"] = gap0 + [{"round": log.round, **{k: v for k, v in log.metrics.items()
                                                  if k.startswith("gap/")}}
                         for log in result.logs if "gap/estimated" in log.metrics]
    t_eval = time.time()
    d_policy = defender.policy if arm.startswith("adv_only") else defender
    if arm in DEFENDER_ARMS:
        model, tok = d_policy.model, d_policy.tokenizer
        res["defender"]["last"] = E.defender_eval(model, tok, suites, judge, cfg)
        res["defender"]["average"] = E.defender_eval(model, tok, suites, judge, cfg,
                                                     snapshots=run_snapshots(ckpt, "average"))
        with warnings.catch_warnings():  # peft cannot tell from a local folder whether vocab grew
            warnings.simplefilter("ignore")
            model.save_pretrained(os.path.join(jobdir, "defender_adapter"))
    if arm in ADVERSARY_ARMS:
        rng = np.random.default_rng([seed, 1])
        with d_policy.model.disable_adapter():  # the fixed SFT defender
            res["adversary"]["trained"] = E.adversary_eval(
                lambda s: list(adversary.sample(s, 1, rng).outputs), d_policy.model,
                d_policy.tokenizer, held_seeds, judge, emb, cfg)
    res["eval_seconds"] = round(time.time() - t_eval, 1)
    res["seconds"] = round(time.time() - start, 1)
    return res


def report(cfg: dict, out: str, jobs_done: dict, expected: list, meta: dict) -> dict:
    from gpo_core._io import atomic_write_json, atomic_write_text

    summary = E.aggregate(jobs_done)
    missing = [f"{a}/seed{s}" for a, s in expected if s not in jobs_done.get(a, {})]
    md = E.tables(summary, jobs_done)
    signal = T.signal_table(jobs_done, meta.get("sft_stage"))
    md += "\n\n" + signal if signal else ""
    if missing:
        md = f"**Partial: {len(missing)} job(s) not finished: {', '.join(missing)}.**\n\n" + md
    results = {"config": cfg, "meta": meta, "missing": missing, "summary": summary,
               "jobs": {a: {str(s): r for s, r in v.items()} for a, v in jobs_done.items()}}
    atomic_write_json(os.path.join(out, "results.json"), results)
    atomic_write_text(os.path.join(out, "results.md"), md + "\n")
    E.plots(summary, jobs_done, os.path.join(out, "plots"))
    T.plot_sft(meta.get("sft_stage"), os.path.join(out, "plots"))
    E.plot_rounds(jobs_done, os.path.join(out, "metrics.png"))
    print(E.round_table(jobs_done) + "\n")
    return results


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.embed_readme:
        with open(os.path.join(args.out, "results.md"), encoding="utf-8") as f:
            E.embed_readme(args.embed_readme, f.read().rstrip())
        print(f"embedded {args.out}/results.md into {args.embed_readme}")
        return 0
    cfg = S.load_config(args.config, smoke=args.smoke)
    if args.steps is not None:
        cfg["rounds"] = args.steps
    import torch

    torch.set_num_threads(cfg["threads"])
    from gpo_core._io import atomic_write_json

    os.makedirs(args.out, exist_ok=True)
    data = S.seeds_and_suites(cfg)
    kinds = {p.seed: p.kind for group in (data[0], data[1], *data[2], data[3]) for p in group}
    emb, judge = S.embedder_and_judge(cfg, kinds)
    t0 = time.time()
    sft_done = os.path.join(args.out, "sft_stage.json")
    if args.stage in ("all", "sft") and not os.path.exists(sft_done):
        stats = S.safety_sft(cfg, data[0], data[1], args.out, judge=judge)
        stats["seconds"] = round(time.time() - t0, 1)
        atomic_write_json(sft_done, stats)
        print(f"safety-SFT stage: {stats}", flush=True)
    # seed-major order: a run stopped early has every arm for its first seeds
    expected = [(a, s) for s in cfg["seeds"] for a in cfg["arms"]
                if a != "sft" or s == cfg["seeds"][0]]
    if args.stage in ("all", "jobs"):
        if not os.path.exists(sft_done):
            raise SystemExit(f"no safety-SFT model in {args.out}; run --stage sft first")
        for i, (arm, seed) in enumerate(expected):
            path = os.path.join(args.out, "jobs", arm, f"seed{seed}", "result.json")
            if i % args.shard_n != args.shard_i or os.path.exists(path):
                continue
            print(f"[{time.strftime('%H:%M:%S')}] job {arm} seed {seed}", flush=True)
            res = run_job(cfg, args.out, arm, seed, data, emb, judge)
            atomic_write_json(path, res)
            print(f"[{time.strftime('%H:%M:%S')}] done {arm} seed {seed} in {res['seconds']} s",
                  flush=True)
    if args.stage in ("all", "report") and args.shard_n == 1:
        done: dict[str, dict[int, dict]] = {}
        for arm, seed in expected:
            path = os.path.join(args.out, "jobs", arm, f"seed{seed}", "result.json")
            if os.path.exists(path):
                done.setdefault(arm, {})[seed] = _read_json(path)
        import platform

        meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads "
                           f"{torch.get_num_threads()}", "torch": torch.__version__,
                "command": "python " + " ".join([sys.argv[0]] + list(argv if argv is not None else sys.argv[1:])),
                "sft_stage": _read_json(sft_done) if os.path.exists(sft_done) else None}
        res = report(cfg, args.out, done, expected, meta)
        with open(os.path.join(args.out, "results.md"), encoding="utf-8") as f:
            print(f.read())
        if res["missing"]:
            print(f"missing jobs: {res['missing']}; rerun the same command to finish them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
