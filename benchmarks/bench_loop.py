"""Where a GPO round's time goes with tiny models, and HFPolicy.sample vs model.generate.

Issue 4's targets, measured side by side in one process (ratios, not absolute times):

1. time outside generation, model forward, backward and the optimiser step stays under 10% of
   a round;
2. HFPolicy.sample's throughput (generated tokens per second) is within 10% of calling
   ``model.generate`` directly on the same batch with the same settings.

    python benchmarks/bench_loop.py [--rounds 6] [--quick]

Generation is the wall time of ``HFPolicy``'s sampling loop (its forwards included); forward is
the wall time of ``HFPolicy._score_batch`` (the network's forward plus the log-softmax that turns
its logits into the scored tokens' log-probabilities; hooks on the networks catch any other
forward); backward by wrapping
``torch.Tensor.backward``, the optimiser by wrapping
``torch.optim.AdamW.step``; "other" is the rest of the round (Python in the loop, tokenisation,
diversity, rewards, bookkeeping). Runs on one torch thread, as the tests do.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Clock:
    """Accumulates seconds per category."""

    def __init__(self) -> None:
        self.seconds = {"generate": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
        self.generating = False
        self._start: dict[int, float] = {}
        self._depth = 0

    def hook(self, module: torch.nn.Module) -> None:
        def pre(mod, args):
            if self.generating:
                return  # counted as generation time
            if self._depth == 0:
                self._t0 = time.perf_counter()
            self._depth += 1

        def post(mod, args, out):
            if self.generating:
                return
            self._depth -= 1
            if self._depth == 0:
                self.seconds["forward"] += time.perf_counter() - self._t0

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    def wrap(self, owner, name: str, key: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - t0

        setattr(owner, name, timed)

    def wrap_scoring(self, owner) -> None:
        """Count HFPolicy._score_batch (forward + log-softmax of the scored tokens) as forward."""
        original = owner._score_batch

        def timed(this, *args, **kwargs):
            t0 = time.perf_counter()
            self.generating = True  # silence the module hooks inside: no double count
            try:
                return original(this, *args, **kwargs)
            finally:
                self.generating = False
                self.seconds["forward"] += time.perf_counter() - t0

        owner._score_batch = timed

    def wrap_generate(self, owner) -> None:
        original = owner._generate

        def timed(this, *args, **kwargs):
            t0 = time.perf_counter()
            self.generating = True
            try:
                return original(this, *args, **kwargs)
            finally:
                self.generating = False
                self.seconds["generate"] += time.perf_counter() - t0

        owner._generate = timed


def load_example():
    spec = importlib.util.spec_from_file_location("tiny_red_team", os.path.join(ROOT, "examples", "tiny_red_team.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def round_breakdown(rounds: int) -> dict[str, float]:
    from gpo_core.alignment import GameConfig, run_game

    ex = load_example()
    defender, adversary, reward, diversity, div_metrics = ex.build(0, 1e-2)
    # Warm-up round, untimed: transformers imports submodules lazily on first use.
    run_game(defender, adversary, reward, GameConfig(rounds=1, batch_size=2), seed_prompts=ex.SEEDS)
    clock = Clock()
    for policy in (defender, adversary):
        clock.hook(policy.model)
        if getattr(policy, "_reference", None) is not None:
            clock.hook(policy._reference)
    from backends.hf import HFPolicy

    clock.wrap_generate(HFPolicy)
    clock.wrap_scoring(HFPolicy)
    clock.wrap(torch.Tensor, "backward", "backward")
    clock.wrap(torch.optim.AdamW, "step", "optimizer")
    config = GameConfig(rounds=rounds, batch_size=8, responses_per_prompt=4, defender_eta=30.0,
                        adversary_eta=30.0, beta_div=0.2, attack_threshold=0.3)
    t0 = time.perf_counter()
    run_game(defender, adversary, reward, config, seed_prompts=ex.SEEDS, diversity=diversity,
             diversity_metrics=div_metrics)
    total = time.perf_counter() - t0
    out = dict(clock.seconds)
    out["other"] = total - sum(out.values())
    out["total"] = total
    return out


def generation_ratio(repeats: int, max_new_tokens: int = 32) -> tuple[float, float, float]:
    from backends.hf import GenerationSettings, HFPolicy
    from backends.tiny import HARMLESS_SENTENCES, tiny_llama, train_tokenizer

    tok = train_tokenizer(list(HARMLESS_SENTENCES), vocab_size=512)
    model = tiny_llama(tok, hidden_size=128, layers=4, seed=0)
    gen = GenerationSettings(max_new_tokens=max_new_tokens)
    policy = HFPolicy(model, tok, template="{context}", generation=gen, micro_batch_size=16)
    prompts = list(HARMLESS_SENTENCES[:16])
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    rng = np.random.default_rng(0)

    def ours() -> int:
        s = policy.sample(prompts, 1, rng)
        return sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in s.outputs)

    def theirs() -> int:
        with torch.no_grad():
            out = policy.model.generate(**enc, do_sample=True, max_new_tokens=max_new_tokens,
                                        top_k=0, top_p=1.0, temperature=1.0,
                                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        return int((new != tok.pad_token_id).sum())

    rates = {"ours": [], "generate": []}
    for _ in range(repeats):  # interleaved, so drift in machine load hits both alike
        for name, fn in (("ours", ours), ("generate", theirs)):
            t0 = time.perf_counter()
            n = fn()
            rates[name].append(n / (time.perf_counter() - t0))
    a, b = float(np.median(rates["ours"])), float(np.median(rates["generate"]))
    return a, b, a / b


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="2 rounds, 3 generation repeats")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rounds = 2 if args.quick else args.rounds
    b = round_breakdown(rounds)
    ours, theirs, ratio = generation_ratio(3 if args.quick else 10)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"1 thread; {time.strftime('%Y-%m-%d')}\n")
    print(f"| GPO round breakdown ({rounds} rounds, tiny_red_team settings) | share |")
    print("|---|---|")
    for key in ("generate", "forward", "backward", "optimizer", "other"):
        print(f"| {key} | {b[key] / b['total']:.1%} |")
    print("\n| generation (16 prompts x 32 new tokens) | tokens/s ratio |\n|---|---|")
    print(f"| HFPolicy.sample / model.generate | {ratio:.2f} |")
    print(f"\ntargets: other < 10% of a round -> {'met' if b['other'] / b['total'] < 0.10 else 'MISSED'}; "
          f"sample within 10% of generate -> {'met' if ratio >= 0.9 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
