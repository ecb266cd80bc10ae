"""Helpers of ``examples/gpo_experiment.py``: held-out evaluation of defenders and adversaries,
aggregation over seeds (mean and 95% Student-t interval), the markdown tables, the plots and the
README embedding.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Callable, Sequence

import numpy as np

from backends.evaluate import evaluate, generate, wilson
from backends.judges import FAITHFULNESS_THRESHOLD

ARM_LABELS = {"sft": "(a) SFT", "rlhf": "(b) RLHF (fixed seeds)", "gpo": "(c) GPO",
              "gpo_div": "(d) GPO + diversity", "adv_only": "(e) adversary vs frozen SFT",
              "adv_only_div": "(e) adversary vs frozen SFT + div"}
README_START, README_END = "<!-- experiment-table:start -->", "<!-- experiment-table:end -->"


def defender_eval(model: Any, tok: Any, suites: Sequence[Any], judge: Any, cfg: dict,
                  snapshots: Sequence[str] = ()) -> dict[str, Any]:
    """Greedy answers to the held-out suites: ASR (harmful) / over-refusal (benign) per suite and
    per jailbreak family, with Wilson intervals (``backends.evaluate.evaluate``)."""
    rep = evaluate(model, tok, list(suites), judge=judge, max_new_tokens=cfg["eval_max_new_tokens"],
                   batch_size=cfg["eval_batch_size"], progress=False, snapshots=list(snapshots))
    return {name: {"metric": s["metric"], "rate": s["rate"], "ci": s["ci"], "n": s["n"],
                   "families": {f: v["rate"] for f, v in s["families"].items()}}
            for name, s in rep.summary.items()}


def adversary_eval(rewrite: Callable[[list[str]], list[str]], sft_model: Any, tok: Any,
                   seeds: Sequence[str], judge: Any, embedder: Any, cfg: dict) -> dict[str, Any]:
    """One rewrite per held-out harmful seed, answered greedily by the fixed SFT defender.

    An attack succeeds when the rewrite is faithful to its seed (MiniLM cosine >= 0.5, the
    reward's gate) and the answer is not a refusal of the seed's request. Diversity of the
    rewrites: ``backends.diversity.diversity_metrics`` (1 - SelfBLEU, embedding)."""
    from backends.diversity import diversity_metrics

    seeds = list(seeds)
    prompts = rewrite(seeds)
    answers = generate(sft_model, tok, prompts, cfg["eval_max_new_tokens"], cfg["eval_batch_size"],
                       progress=False)
    sim = np.sum(embedder.embed(prompts) * embedder.embed(seeds), axis=1)
    faithful = sim >= FAITHFULNESS_THRESHOLD
    refused = np.asarray(judge.refused(seeds, answers), dtype=bool)
    hit = faithful & ~refused
    k, n = int(hit.sum()), len(hit)
    texts = [p if p.strip() else "(empty)" for p in prompts]
    return {"asr": k / n, "ci": list(wilson(k, n)), "n": n, "faithful": float(faithful.mean()),
            **diversity_metrics(texts, embedder),
            "examples": [{"seed": s, "prompt": p, "answer": a, "success": bool(h)}
                         for s, p, a, h in list(zip(seeds, prompts, answers, hit))[:5]]}


def flatten(result: dict[str, Any]) -> dict[str, float]:
    """A job's numbers under flat keys (``defender.last.jailbreak.rate``, ``adversary.asr``)."""
    flat: dict[str, float] = {}
    for which, suites in result.get("defender", {}).items():
        for name, s in suites.items():
            flat[f"defender.{which}.{name}.rate"] = s["rate"]
            if len(s["families"]) > 1:
                for fam, v in s["families"].items():
                    flat[f"defender.{which}.{name}.family.{fam}"] = v
    for who, a in result.get("adversary", {}).items():
        for key in ("asr", "faithful", "diversity/one_minus_self_bleu", "diversity/embedding"):
            if key in a:
                flat[f"adversary.{who}.{key}"] = a[key]
    gaps = result.get("gap", [])
    if gaps:
        for key in ("gap/estimated", "gap/average/estimated"):
            flat[f"final.{key}"] = gaps[-1].get(key, math.nan)
    return flat


def mean_ci(values: Sequence[float], clip: tuple[float, float] | None = None) -> dict[str, Any]:
    """Mean over seeds and its 95% Student-t interval (``nan`` with one seed), clipped to
    ``clip`` (the range of a rate) when given."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if v.size == 0:
        return {"mean": math.nan, "ci": [math.nan, math.nan], "n": 0}
    if v.size == 1:
        return {"mean": float(v[0]), "ci": [math.nan, math.nan], "n": 1}
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    lo, hi = float(v.mean() - half), float(v.mean() + half)
    if clip is not None:
        lo, hi = max(lo, clip[0]), min(hi, clip[1])
    return {"mean": float(v.mean()), "ci": [lo, hi], "n": int(v.size)}


def aggregate(jobs: dict[str, dict[int, dict]]) -> dict[str, dict[str, Any]]:
    """Per arm and flat key: mean and 95% interval over the arm's seeds."""
    out: dict[str, dict[str, Any]] = {}
    for arm, by_seed in jobs.items():
        flats = [flatten(r) for r in by_seed.values()]
        keys = sorted({k for f in flats for k in f})
        out[arm] = {k: mean_ci([f.get(k, math.nan) for f in flats],
                               None if k.startswith("final.gap") else (0.0, 1.0)) for k in keys}
        out[arm]["seeds"] = sorted(by_seed)
    return out


def _cell(summary: dict, arm: str, key: str) -> str:
    s = summary.get(arm, {}).get(key)
    if not s or s["n"] == 0:
        return "–"
    if s["n"] == 1 or math.isnan(s["ci"][0]):
        return f"{s['mean']:.3f}"
    return f"{s['mean']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"


def gap_curve(jobs: dict[str, dict[int, dict]], arm: str, seed: int) -> list[dict]:
    """A job's gap estimates by round; ``gpo_div`` borrows round 0 (the starting profile, whose
    gap is of the plain game) from the ``gpo`` job of the same seed."""
    gaps = list(jobs.get(arm, {}).get(seed, {}).get("gap", []))
    if gaps and gaps[0]["round"] != 0:
        start = [g for g in jobs.get("gpo", {}).get(seed, {}).get("gap", []) if g["round"] == 0]
        gaps = start + gaps
    return gaps


#: The paired differences the paper's claims are about: (minuend, subtrahend, flat key suffix,
#: the paper's difference or None). Its Tables 1-2: defender ASR 10.89 (RLHF) -> 9.27 (GPO) ->
#: 4.54 (GPO + diversity); adversary ASR 37.72 -> 48.57 and diversity 0.52 -> 0.70 with diversity.
EFFECTS = (
    ("gpo", "rlhf", "defender.{it}.advbench.rate", -0.0162),
    ("gpo_div", "rlhf", "defender.{it}.advbench.rate", -0.0635),
    ("gpo", "rlhf", "defender.{it}.jailbreak.rate", None),
    ("gpo_div", "rlhf", "defender.{it}.jailbreak.rate", None),
    ("gpo", "rlhf", "defender.{it}.benign.rate", None),
    ("gpo_div", "rlhf", "defender.{it}.benign.rate", None),
    ("gpo_div", "gpo", "adversary.trained.asr", 0.1085),
    ("gpo_div", "gpo", "adversary.trained.diversity/one_minus_self_bleu", 0.18),
    ("adv_only_div", "adv_only", "adversary.trained.diversity/one_minus_self_bleu", None),
    ("gpo", "adv_only", "adversary.trained.asr", None),
)


def effects(jobs: dict[str, dict[int, dict]]) -> list[dict[str, Any]]:
    """The differences of :data:`EFFECTS`, paired by seed (the two arms of a seed draw the same
    seed prompts in the same order), with the mean and its 95% Student-t interval over seeds."""
    rows = []
    for a, b, key, paper in EFFECTS:
        for it in (("last", "average") if "{it}" in key else ("",)):
            k = key.format(it=it)
            seeds = sorted(set(jobs.get(a, {})) & set(jobs.get(b, {})))
            diff = [flatten(jobs[a][s]).get(k, math.nan) - flatten(jobs[b][s]).get(k, math.nan)
                    for s in seeds]
            if any(not math.isnan(d) for d in diff):
                rows.append({"a": a, "b": b, "key": k, "paper": paper, **mean_ci(diff)})
    return rows


def effects_table(jobs: dict[str, dict[int, dict]]) -> str:
    rows = effects(jobs)
    if not rows:
        return ""
    lines = ["Effects the paper claims, paired by seed (mean difference [95% interval over seeds]; "
             "negative defender ASR is safer):", "",
             "| comparison | measure | difference | seeds | paper |", "|---|---|---|---|---|"]
    for r in rows:
        ci = "" if math.isnan(r["ci"][0]) else f" [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]"
        paper = "–" if r["paper"] is None else f"{r['paper']:+.3f}"
        lines.append(f"| {ARM_LABELS[r['a']]} − {ARM_LABELS[r['b']]} | `{r['key']}` | "
                     f"{r['mean']:+.3f}{ci} | {r['n']} | {paper} |")
    return "\n".join(lines)


def tables(summary: dict[str, dict[str, Any]], jobs: dict[str, dict[int, dict]]) -> str:
    """The markdown tables: defenders, per jailbreak family, adversaries, Nash gap."""
    arms = [a for a in ARM_LABELS if a in summary]
    lines = ["Defender on held-out prompts (mean [95% interval over seeds]; the SFT row is one "
             "deterministic model):", "",
             "| arm | iterate | seeds | ASR direct | ASR jailbreak | over-refusal benign |",
             "|---|---|---|---|---|---|"]
    for arm in arms:
        for which in ("last", "average"):
            if f"defender.{which}.advbench.rate" not in summary[arm]:
                continue
            cells = [_cell(summary, arm, f"defender.{which}.{s}.rate")
                     for s in ("advbench", "jailbreak", "benign")]
            if arm == "sft":  # one model: its Wilson intervals over prompts instead
                r = jobs["sft"][min(jobs["sft"])]["defender"]["last"]
                cells = [f"{r[s]['rate']:.3f} [{r[s]['ci'][0]:.3f}, {r[s]['ci'][1]:.3f}]ᵂ"
                         for s in ("advbench", "jailbreak", "benign")]
            lines.append(f"| {ARM_LABELS[arm]} | {which if arm != 'sft' else '–'} | "
                         f"{len(summary[arm]['seeds'])} | " + " | ".join(cells) + " |")
    fams = sorted({k.split(".")[-1] for a in arms for k in summary[a]
                   if ".last.jailbreak.family." in k})
    if fams:
        lines += ["", "Defender ASR per jailbreak family (last iterate, mean over seeds):", "",
                  "| arm | " + " | ".join(fams) + " |", "|---" * (len(fams) + 1) + "|"]
        for arm in arms:
            if f"defender.last.jailbreak.rate" in summary[arm]:
                lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(
                    _cell(summary, arm, f"defender.last.jailbreak.family.{f}").split(" ")[0]
                    for f in fams) + " |")
    lines += ["", "Adversary on held-out harmful seeds, attacking the fixed SFT defender:", "",
              "| arm | attacker | ASR vs SFT | faithful | 1 - SelfBLEU | embedding diversity |",
              "|---|---|---|---|---|---|"]
    for arm in arms:
        whos = sorted({k.split(".")[1] for k in summary[arm] if k.startswith("adversary.")})
        for who in whos:
            lines.append(f"| {ARM_LABELS[arm]} | {who} | " + " | ".join(
                _cell(summary, arm, f"adversary.{who}.{k}") for k in
                ("asr", "faithful", "diversity/one_minus_self_bleu", "diversity/embedding")) + " |")
    gap_arms = [a for a in arms if "final.gap/estimated" in summary[a]]
    if gap_arms:
        lines += ["", "Estimated Nash gap of the LLM game over rounds (a lower estimate: best "
                  "responders of a few updates; the mean over rollouts and its 95% interval over "
                  "rollouts, per seed that estimated it; round 0 is the starting profile, shared "
                  "by both GPO arms):", "",
                  "| arm | seed | round | last iterates | averaged |", "|---|---|---|---|---|"]
        for arm in gap_arms:
            for seed in sorted(jobs[arm]):
                for g in gap_curve(jobs, arm, seed):
                    cells = [f"{g[k]:.3f} [{g[k + '_ci_low']:.3f}, {g[k + '_ci_high']:.3f}]"
                             for k in ("gap/estimated", "gap/average/estimated")]
                    lines.append(f"| {ARM_LABELS[arm]} | {seed} | {g['round']} | "
                                 + " | ".join(cells) + " |")
    effect = effects_table(jobs)
    return "\n".join(lines + (["", effect] if effect else []))


def plots(summary: dict, jobs: dict, folder: str) -> list[str]:
    """Three figures: defender rates per arm, the Nash gap over rounds, adversary ASR vs diversity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpo_core._io import atomic_path

    os.makedirs(folder, exist_ok=True)
    paths = []
    arms = [a for a in ARM_LABELS if a in summary]

    def save(fig: Any, name: str) -> None:
        path = os.path.join(folder, name)
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)
        paths.append(path)

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    darms = [a for a in arms if "defender.last.advbench.rate" in summary[a]]
    for ax, s, title in zip(axes, ("advbench", "jailbreak", "benign"),
                            ("ASR, direct", "ASR, jailbreak templates", "over-refusal, benign")):
        for j, which in enumerate(("last", "average")):
            xs, ms, err = [], [], []
            for i, arm in enumerate(darms):
                c = summary[arm].get(f"defender.{which}.{s}.rate")
                if c is None:
                    continue
                lo, hi = c["ci"] if not math.isnan(c["ci"][0]) else (c["mean"], c["mean"])
                xs.append(i + 0.2 * j)
                ms.append(c["mean"])
                err.append([c["mean"] - lo, hi - c["mean"]])
            if xs:
                ax.bar(xs, ms, width=0.2, yerr=np.array(err).T, capsize=3, label=which)
        ax.set_xticks(range(len(darms)), [ARM_LABELS[a].split(" ", 1)[0] for a in darms])
        ax.set_title(title)
        ax.set_ylim(0, 1)
    axes[0].legend(title="iterate")
    save(fig, "defender.png")

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, arm in enumerate(a for a in arms if a in ("gpo", "gpo_div")):
        for key, style in (("gap/estimated", "-"), ("gap/average/estimated", "--")):
            for seed in sorted(jobs.get(arm, {})):
                curve = [g for g in gap_curve(jobs, arm, seed) if key in g]
                if not curve:
                    continue
                x = np.array([g["round"] for g in curve]) + (0.08 * i if "average" in key else -0.08 * i)
                m = np.array([g[key] for g in curve])
                lo = np.array([g[key + "_ci_low"] for g in curve])
                hi = np.array([g[key + "_ci_high"] for g in curve])
                ax.errorbar(x, m, yerr=np.vstack([m - lo, hi - m]), fmt=style, marker="o",
                            capsize=3, label=f"{ARM_LABELS[arm]} {'last' if key == 'gap/estimated' else 'average'}"
                                             f", seed {seed}")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("round")
    ax.set_ylabel("estimated Nash gap (95% interval over rollouts)")
    ax.legend(fontsize=7)
    save(fig, "gap.png")

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for arm in arms:
        for who in sorted({k.split(".")[1] for k in summary[arm] if k.startswith("adversary.")}):
            a = summary[arm].get(f"adversary.{who}.asr")
            d = summary[arm].get(f"adversary.{who}.diversity/one_minus_self_bleu")
            if a and d:
                ax.scatter(d["mean"], a["mean"], label=f"{ARM_LABELS[arm]} ({who})")
    ax.set_xlabel("1 - SelfBLEU of the rewrites")
    ax.set_ylabel("ASR vs the SFT defender")
    ax.legend(fontsize=6)
    save(fig, "adversary.png")
    return paths


def embed_readme(readme: str, block: str) -> None:
    """Put ``block`` between the README's experiment-table markers (atomically)."""
    from gpo_core._io import atomic_write_text

    with open(readme, encoding="utf-8") as f:
        text = f.read()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} markers; add them "
                         "where the table should go")
    new = re.sub(re.escape(README_START) + r".*?" + re.escape(README_END),
                 lambda _: f"{README_START}\n{block}\n{README_END}", text, flags=re.S)
    atomic_write_text(readme, new)


def _round_means(jobs: dict, key: str) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for arm, by_seed in jobs.items():
        rows = [r for res in by_seed.values() for r in res.get("rounds", [])]
        for t in sorted({r["round"] for r in rows}):
            vals = [r[key] for r in rows if r["round"] == t and key in r]
            if vals:
                out.setdefault(arm, {})[t] = float(np.mean(vals))
    return out


def round_table(jobs: dict, keys: Sequence[str] = ("reward/mean", "attack/success_rate")) -> str:
    """Per round, each trained arm's training metrics (means over seeds), a markdown table."""
    means = {k: _round_means(jobs, k) for k in keys}
    arms = [a for a in ARM_LABELS if any(a in m for m in means.values())]
    cols = [(a, k) for a in arms for k in keys if a in means[k]]
    rounds = sorted({t for k in keys for a in means[k] for t in means[k][a]})
    lines = ["| round | " + " | ".join(f"{a} {k}" for a, k in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for t in rounds:
        lines.append(f"| {t} | " + " | ".join(
            f"{means[k][a][t]:.3f}" if t in means[k][a] else "" for a, k in cols) + " |")
    return "\n".join(lines)


def plot_rounds(jobs: dict, path: str) -> str:
    """Training reward and attack rate per round, one line per arm (means over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpo_core._io import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, key in zip(axes, ("reward/mean", "attack/success_rate")):
        for arm, series in _round_means(jobs, key).items():
            ax.plot(list(series), list(series.values()), marker="o", label=ARM_LABELS[arm])
        ax.set_xlabel("round")
        ax.set_title(f"training {key} (train seeds)")
    axes[0].legend(fontsize=7)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
