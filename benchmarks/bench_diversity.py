"""The diversity reward's cost per call as the prompt history grows: incremental index vs plain.

Issue 17 item 7. The game loop scores each round's ``N = 32`` adversary prompts against the
whole history of earlier prompts, then appends them. Side by side in one process, on the same
prompts and histories, at history sizes 1,000, 4,000 and 16,000:

* **before**: the plain, non-incremental path, ``-(5 * self_bleu(...) +
  embedding_similarity(...))`` (what ``DiversityReward`` computed until the index), which
  tokenises and embeds the whole history on every call;
* **after**: ``DiversityReward(embedder=...)`` (``form="code"``) called round after round with
  the growing history, so each call indexes only the 32 prompts the previous round added
  (median of ``--rounds`` calls whose histories end at the stated size), and, separately, the
  same rounds through a bare ``SelfBLEUIndex`` and ``EmbeddingIndex`` (the two parts);
* **rebuild**: a fresh ``DiversityReward`` on the full history (what a history that does not
  extend the indexed one costs).

Times are CPU times of this process (``time.process_time``, one BLAS thread), which other jobs
on a shared machine inflate far less than wall time. The values must agree (the largest
difference is shown). Prompts are synthetic and seeded:
8-30 words drawn from a Zipf(1.1) law over a 5,000-word vocabulary with a question mark, and one
prompt in five a copy of an earlier one with one word changed (as a collapsing adversary writes).
The embedder is ``HashingEmbedder(dim=384)`` (model-free); ``--embedder minilm`` uses
all-MiniLM-L6-v2 on the CPU (slow to build the history: about 1 ms per prompt).

    .venv/bin/python benchmarks/bench_diversity.py --quick        # 1,000 and 4,000 (~30 s)
    .venv/bin/python benchmarks/bench_diversity.py --out benchmarks/results/diversity.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _common import (  # noqa: E402
    emit,
    fmt_ratio,
    fmt_time,
    header,
    limit_threads,
    markdown_table,
)

from backends.diversity import (  # noqa: E402
    DiversityReward,
    EmbeddingIndex,
    HashingEmbedder,
    SelfBLEUIndex,
    embedding_similarity,
    self_bleu,
)

BATCH = 32


def synthetic_prompts(count: int, seed: int = 0) -> list[str]:
    """``count`` seeded prompts (see the module docstring)."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, 5001)
    p = ranks ** -1.1
    p /= p.sum()
    out: list[str] = []
    for _ in range(count):
        if out and rng.random() < 0.2:
            words = out[int(rng.integers(len(out)))].rstrip(" ?").split()
            words[int(rng.integers(len(words)))] = f"w{int(rng.choice(ranks, p=p))}"
        else:
            words = [f"w{r}" for r in rng.choice(ranks, size=int(rng.integers(8, 31)), p=p)]
        out.append(" ".join(words) + " ?")
    return out


def cpu_best_of(fn, repeat: int = 2):
    """The smallest CPU time of ``repeat`` runs of ``fn()``, and its result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return best, out


def plain(prompts: list[str], history: list[str], embedder) -> np.ndarray:
    """The non-incremental path: what ``DiversityReward(form="code")`` computed before."""
    return -(5.0 * self_bleu(prompts, history) + embedding_similarity(prompts, history, embedder))


def measure(size: int, rounds: int, stream: list[str], probes: list[str], embedder) -> list[str]:
    start = size - BATCH * (rounds - 1)
    div = DiversityReward(embedder=embedder)
    bleu_index, emb_index = SelfBLEUIndex(), EmbeddingIndex(embedder)
    history = stream[: start - BATCH]
    for f in (div, bleu_index, emb_index):  # index the history before the timed rounds
        f(probes[:1], history)
    t_div, t_bleu, t_emb = [], [], []
    for r in range(rounds):
        history = history + stream[start - BATCH + r * BATCH : start + r * BATCH]
        prompts = probes[r * BATCH : (r + 1) * BATCH]
        for times, f in ((t_div, div), (t_bleu, bleu_index), (t_emb, emb_index)):
            t0 = time.process_time()
            after = f(prompts, history)
            times.append(time.process_time() - t0)
    assert len(history) == size
    t_before, before = cpu_best_of(lambda: plain(prompts, history, embedder))
    t_rebuild, rebuilt = cpu_best_of(lambda: DiversityReward(embedder=embedder)(prompts, history))
    after = div(prompts, history)
    diff = max(float(np.abs(after - before).max()), float(np.abs(rebuilt - before).max()))
    index = div._bleu_index
    med = float(np.median(t_div))
    return [
        f"{size:,}",
        f"{len(index._rows):,} / {len(index._grams):,}",
        fmt_time(t_before),
        fmt_time(med),
        fmt_ratio(med / t_before),
        f"{fmt_time(float(np.median(t_bleu)))} / {fmt_time(float(np.median(t_emb)))}",
        fmt_time(t_rebuild),
        f"{diff:.1e}",
    ], med


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="history sizes 1,000 and 4,000")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per size")
    parser.add_argument("--embedder", choices=("hashing", "minilm"), default="hashing")
    parser.add_argument("--out", default=None, help="also write the markdown here (atomically)")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([1000, 4000] if args.quick else [1000, 4000, 16000])
    if args.rounds < 1 or min(sizes) < BATCH * (args.rounds + 1):
        parser.error(f"--sizes must each be >= {BATCH} * (rounds + 1) and --rounds >= 1")
    if args.embedder == "minilm":
        from backends.embedders import MiniLMEmbedder

        embedder = MiniLMEmbedder(device="cpu")
    else:
        embedder = HashingEmbedder(dim=384)
    stream = synthetic_prompts(max(sizes), seed=0)
    probes = synthetic_prompts(BATCH * args.rounds, seed=1)
    rows, meds = [], []
    t_all = time.perf_counter()
    with limit_threads(1) or contextlib.nullcontext():  # one BLAS thread, as every benchmark here (a shared 2-core machine)
        for size in sizes:
            row, med = measure(size, args.rounds, stream, probes, embedder)
            rows.append(row)
            meds.append(med)
            print(f"  size {size}: done", file=sys.stderr)
    text = header(
        "The diversity reward per call: incremental index vs the plain path",
        [os.path.relpath(sys.argv[0]) if argv is None else "bench_diversity.py", *(argv or sys.argv[1:])],
        {"embedder": repr(embedder), "prompts per call": f"{BATCH} (and {BATCH} new history prompts)",
         "timed calls per size": str(args.rounds), "BLAS threads": "1"},
    )
    text += "\n" + markdown_table(
        ["history prompts", "distinct prompts / n-grams indexed", "before: plain path per call (CPU)",
         "after: incremental call (median, CPU)", "after / before", "after: SelfBLEU / embedding part",
         "rebuild from scratch", "largest difference, after vs before"],
        rows,
    )
    growth = ", ".join(f"{s:,}: {m / meds[0]:.2f}×" for s, m in zip(sizes, meds))
    text += (
        f"\nAn incremental call's time relative to the one at {sizes[0]:,} history prompts: "
        f"{growth}.\nTotal wall time {time.perf_counter() - t_all:.0f} s.\n"
    )
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
