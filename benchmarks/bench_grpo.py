"""A GPO defender update against TRL's GRPOTrainer step, on the same model, batch and completions.

In one process, for one model: TRL's ``GRPOTrainer`` generates ``num_generations`` completions
for each prompt and scores them (its own generation, timed apart); then, on exactly those
completions and rewards,

* ``grpo step``: TRL's loss on the batch, its backward and an AdamW step (``beta = 0``: no
  reference model, TRL's default);
* ``gpo, 1 evaluation``: ``HFPolicy.update`` with one AdamW step (``max_fit_steps=1``) and
  ``reference_metrics=False`` (at ``alpha = 0``, as TRL's ``beta = 0``, no reference forward):
  the same training work, plus what the update adds (the fit's final scoring, for the residual
  it reports; ``pi_t``'s scores are the evaluation's own forward);
* ``gpo, 1 evaluation + kl/reference``: the same with the default ``reference_metrics=True``,
  which scores the reference for the ``kl/reference`` metrics;
* ``gpo, fit to 1e-2``: the default update, L-BFGS until the residual is within 1% of the move
  (the cost of reaching the target, shown separately).

Each is the median of ``--repeats`` runs from the same weights, the rows interleaved (one run of
each per repeat, so drift in the machine's load hits every row alike); the table reports seconds
and the ratio to the GRPO step. Needs TRL (``pip install 'trl==1.16.*'``; not a dependency of gpo).
Run: ``python benchmarks/bench_grpo.py [--model tiny|smollm2] [--out benchmarks/results/grpo.md]``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import platform
import statistics
import sys
import time
import warnings
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _common import emit  # noqa: E402  (benchmarks/ is on the path: run as a script)


def _model(kind: str):
    from backends.tiny import HARMLESS_SENTENCES, tiny_llama, train_tokenizer

    if kind == "tiny":
        tok = train_tokenizer(vocab_size=400)
        return tiny_llama(tok, seed=0), tok, list(HARMLESS_SENTENCES[:8]), None
    from peft import LoraConfig

    from backends.evaluate import load_model
    from backends.export import plain_copy

    model, tok = load_model("smollm2")
    model = plain_copy(model)  # TRL refuses to train a model that records a GGUF quantisation
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    return model, tok, list(HARMLESS_SENTENCES[:8]), lora


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt")
    parser.add_argument("--tokens", type=int, default=32, help="max completion tokens")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write a markdown table here")
    args = parser.parse_args(argv)
    if args.generations < 2 or args.tokens < 1 or args.repeats < 1:
        parser.error("--generations must be >= 2, --tokens and --repeats >= 1")
    if importlib.util.find_spec("trl") is None:
        print("bench_grpo needs TRL: pip install 'trl==1.16.*'", file=sys.stderr)
        return 2
    import numpy as np
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from backends.hf import GenerationSettings, HFPolicy
    from gpo_core.protocols import Experience, MirrorStep

    torch.set_num_threads(1)  # a benchmark's choice, stated in its table
    model, tok, prompts, lora = _model(args.model)
    k = args.generations

    def reward(completions, **kw):
        return [float(c.count("e")) / 10 for c in completions]

    config = GRPOConfig(output_dir=os.path.join(ROOT, "runs", "bench_grpo"),
                        per_device_train_batch_size=len(prompts) * k, num_generations=k,
                        max_completion_length=args.tokens, learning_rate=1e-4, max_steps=1,
                        report_to=[], beta=0.0, use_cpu=True, save_strategy="no", bf16=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = GRPOTrainer(model=copy.deepcopy(model), reward_funcs=reward, args=config,
                              train_dataset=Dataset.from_dict({"prompt": prompts}),
                              processing_class=tok, peft_config=lora)
        trainer.model.train()
        start = time.perf_counter()
        inputs = trainer._generate_and_score_completions([{"prompt": p} for p in prompts
                                                          for _ in range(k)])
        generation = time.perf_counter() - start
        trainer.create_optimizer_and_scheduler(num_training_steps=1)
        trainer.current_gradient_accumulation_steps = 1
    state = {n: t.detach().clone() for n, t in trainer.model.state_dict().items()}
    texts = tok.batch_decode(inputs["completion_ids"] * inputs["completion_mask"]
                             + tok.pad_token_id * (1 - inputs["completion_mask"]),
                             skip_special_tokens=True)
    contexts = tuple(p for p in prompts for _ in range(k))
    exp = Experience(contexts, tuple(texts), np.asarray(reward(texts)), np.full(len(texts), 1 / k))
    tokens = int(inputs["completion_mask"].sum())

    def grpo_step() -> float:
        trainer.model.load_state_dict(state)
        begin = time.perf_counter()
        loss = trainer.compute_loss(trainer.model, inputs)
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
        return time.perf_counter() - begin

    def gpo(**kw):
        def once() -> float:
            policy = HFPolicy(copy.deepcopy(model), tok, template="{context}", peft_config=lora,
                              generation=GenerationSettings(max_new_tokens=args.tokens),
                              micro_batch_size=len(texts), name="gpo", **kw)
            begin = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # one AdamW step never converges
                metrics = policy.update(exp, MirrorStep(eta=1.0))
            once.metrics = metrics
            return time.perf_counter() - begin
        return once

    rows = {"grpo step (TRL)": grpo_step,
            "gpo, 1 evaluation": gpo(optimizer="adam", lr=1e-4, max_fit_steps=1,
                                     reference_metrics=False),
            "gpo, 1 evaluation + kl/reference": gpo(optimizer="adam", lr=1e-4, max_fit_steps=1),
            "gpo, fit to 1e-2": gpo()}
    times: dict[str, list[float]] = {label: [] for label in rows}
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits every row alike
        for label, fn in rows.items():
            times[label].append(fn())
            print(label, times[label][-1], flush=True)
    results = {label: (statistics.median(times[label]), getattr(fn, "metrics", None))
               for label, fn in rows.items()}
    base = results["grpo step (TRL)"][0]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# GPO update vs TRL GRPO step ({stamp})", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch 1 thread; TRL "
        f"{importlib.import_module('trl').__version__}. Model: {args.model}"
        f"{' + LoRA r=8' if lora else ''}; {len(prompts)} prompts x {k} completions, "
        f"{tokens} completion tokens in all; TRL's generation and scoring of them took "
        f"{generation:.2f} s (not in the rows). Command: `python benchmarks/bench_grpo.py "
        f"--model {args.model} --repeats {args.repeats}`; rows interleaved, median of "
        f"{args.repeats}.", "",
        "| update on the same completions | s | x GRPO step | gradient evaluations | residual / move |",
        "|---|---|---|---|---|",
    ]
    for label, (seconds, metrics) in results.items():
        evals = "1" if metrics is None else f"{metrics['fit/steps']:.0f}"
        rel = "n/a" if metrics is None else f"{metrics['fit/relative']:.2g}"
        lines.append(f"| {label} | {seconds:.3f} | {seconds / base:.2f} | {evals} | {rel} |")
    emit("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
