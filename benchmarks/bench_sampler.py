"""HFPolicy's own sampler against ``model.generate``, on the same batch, per setting.

For each model (``tiny``: a random tiny Llama; ``smollm2``: SmolLM2-135M), batch size and token
count, both decode the same left-padded prompts for exactly ``tokens`` steps (no stop id, so
neither stops early and both do the same work):

* ``own``: :func:`backends.hf_sampling.generate` through the policy's step (KV cache, never-
  generated ids masked, one counter-based random stream per row);
* ``generate``: ``model.generate(do_sample=True, top_k=0, top_p=1, temperature=1)`` with the
  same KV cache and torch's global generator (rows share one stream).

Each cell is the median of ``--repeats`` runs, interleaved so that drift in machine load hits
both alike; the table reports seconds per batch and ``generate``'s time over the own sampler's
(``> 1``: the own sampler is faster). One torch thread.

    python benchmarks/bench_sampler.py [--models tiny smollm2] [--out results/sampler.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _common import emit  # noqa: E402  (benchmarks/ is on the path: run as a script)


def _model(kind: str):
    from backends.tiny import tiny_llama, train_tokenizer

    if kind == "tiny":
        tok = train_tokenizer(vocab_size=400)
        return tiny_llama(tok, seed=0), tok
    from backends.evaluate import load_model

    return load_model("smollm2")


def _cell(policy, batch: int, tokens: int, repeats: int) -> tuple[float, float]:
    import numpy as np
    import torch
    from transformers import GenerationConfig

    from backends.hf import GenerationSettings
    from backends.hf_sampling import _row_keys, generate
    from backends.tiny import HARMLESS_SENTENCES

    gen = GenerationSettings(max_new_tokens=tokens)
    prompts = [HARMLESS_SENTENCES[i % len(HARMLESS_SENTENCES)] for i in range(batch)]
    ids, mask = policy._scorer.left_pad(policy._encoder.prompts(prompts))
    keys = _row_keys(0, np.arange(batch, dtype=np.uint64), 1)
    no_stop = torch.zeros(0, dtype=torch.long)
    config = GenerationConfig(do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                              max_new_tokens=tokens, min_new_tokens=tokens,
                              pad_token_id=policy.pad_token_id, eos_token_id=None)

    def own() -> int:
        rows, _ = generate(policy._scorer.step(policy.model), ids, mask, keys, gen,
                           stop_ids=no_stop, pad_id=policy.pad_token_id)
        return sum(map(len, rows))

    def theirs() -> int:
        with torch.no_grad():
            out = policy.model.generate(input_ids=ids, attention_mask=mask,
                                        generation_config=config)
        return int(out.shape[0] * (out.shape[1] - ids.shape[1]))

    own(), theirs()  # warm-up: lazy imports, allocator
    seconds: dict[str, list[float]] = {"own": [], "generate": []}
    for _ in range(repeats):
        for name, fn in (("own", own), ("generate", theirs)):
            t0 = time.perf_counter()
            n = fn()
            seconds[name].append(time.perf_counter() - t0)
            assert n == batch * tokens, (name, n)  # both ran every step
    return statistics.median(seconds["own"]), statistics.median(seconds["generate"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=("tiny", "smollm2"),
                        default=["tiny", "smollm2"])
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--tokens", nargs="+", type=int, default=[24, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args(argv)
    if min(args.batches + args.tokens) < 1 or args.repeats < 1:
        parser.error("--batches, --tokens and --repeats must be >= 1")
    import torch

    from backends.hf import HFPolicy

    torch.set_num_threads(1)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# HFPolicy's sampler vs model.generate ({stamp})", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"1 thread; load average {os.getloadavg()[0]:.1f} at the start (other jobs share the "
        "cores: compare the two columns of a row, measured interleaved). Command: "
        f"`python benchmarks/bench_sampler.py {' '.join(argv or sys.argv[1:])}`.", "",
        "| model | batch | tokens | own s | generate s | generate / own |",
        "|---|---|---|---|---|---|",
    ]
    for kind in args.models:
        model, tok = _model(kind)
        policy = HFPolicy(model, tok, template="{context}", name=kind)
        for batch in args.batches:
            for tokens in args.tokens:
                own, theirs = _cell(policy, batch, tokens, args.repeats)
                lines.append(f"| {kind} | {batch} | {tokens} | {own:.3f} | {theirs:.3f} | "
                             f"{theirs / own:.2f} |")
                print(lines[-1], flush=True)
    emit("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
