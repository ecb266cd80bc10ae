"""Plot time to Nash gap 1e-4 against game size from a ``bench_solvers.py`` results file.

Reads the "Time to Nash gap ≤ 0.0001" table of ``results/solvers_full.md`` (what
``bench_solvers.py --out`` wrote) and draws one line per solver, log-log, with the run's machine
and date in the title; solvers capped at a size are drawn up to their last finished size.

    .venv/bin/python benchmarks/plot_speed.py                 # -> docs/img/speed.png
    .venv/bin/python benchmarks/plot_speed.py --results F --out G
"""

from __future__ import annotations

import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from gpo_core._io import atomic_path  # noqa: E402

# The solvers worth a line, with their legend labels (the rest are in the table).
SHOWN = {
    "gpo solve (auto: pivoting up to 300 actions, else DRM+ on float32; certified)":
        "gpo gc.solve (pivoting to 300 actions, then DRM+ on float32)",
    "gpo solve_pivot (DRM+ warm start + support pivoting)": "gpo solve_pivot (exact)",
    "HiGHS: gc.solve_lp (1 LP + duals)": "HiGHS, one LP (gc.solve_lp)",
    "gpo RM+ (alt., quadratic avg)": "gpo RM+ (alternating, quadratic avg.)",
    "gpo PRM+ (alt., quadratic avg)": "gpo predictive RM+ (alt., quadratic avg.)",
    "gpo DRM+ (discounted RM+, α=1.5; alt., quadratic avg)": "gpo discounted RM+ (alt., quadratic avg.)",
    "OpenSpiel CFR+ (C++, turn-based)": "OpenSpiel CFR+ (C++)",
    "OpenSpiel lp_solver (cvxpy+ECOS)": "OpenSpiel LP (cvxpy + ECOS)",
    "nashpy linear_program (scipy linprog)": "nashpy linear_program",
}
_UNIT = {"µs": 1e-6, "ms": 1e-3, "s": 1.0}


def parse(text: str, heading: str = "Time to Nash gap ≤ 0.0001"):
    """``(sizes, {solver: [seconds or None per size]}, header lines)`` from a results file."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if heading in line)
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip("|").split("|")])
        elif table:
            break
    sizes = [int(c.split("=")[1]) for c in table[0][1:]]
    times = {}
    for row in table[2:]:
        cells = []
        for cell in row[1:]:
            m = re.match(r"([\d.]+) (µs|ms|s) \(", cell)  # "1.0 ms (0.80×)", not "> 30 s"
            cells.append(float(m.group(1)) * _UNIT[m.group(2)] if m else None)
        times[row[0]] = cells
    header = [line[2:] for line in lines[:start] if line.startswith("- date") or
              line.startswith("- machine")]
    return sizes, times, header


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=os.path.join(HERE, "results", "solvers_full.md"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "img", "speed.png"))
    args = p.parse_args(argv)
    with open(args.results, encoding="utf-8") as f:
        sizes, times, header = parse(f.read())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, label in SHOWN.items():
        if name not in times:
            continue
        pts = [(n, t) for n, t in zip(sizes, times[name]) if t is not None]
        if pts:
            style = "-o" if name.startswith("gpo") else "--s"
            ax.loglog(*zip(*pts), style, label=label, lw=2 if "pivot" in name else 1.2, ms=4)
    ax.set_xlabel("actions per player n (random n × n game, entries U[-1, 1])")
    ax.set_ylabel("seconds to Nash gap ≤ 1e-4 (exact solvers: to the answer)")
    date = next((h.split(":", 1)[1].strip()[:10] for h in header if h.startswith("date")), "")
    # "machine: 2 CPUs (`nproc` 2), AMD EPYC, 23.5 GiB RAM ..." -> "2-core AMD EPYC"
    machine = next((h.split(":", 1)[1] for h in header if h.startswith("machine")), "")
    parts = [p.strip() for p in machine.split(",")]
    cores = re.search(r"`nproc` (\d+)", machine)
    where = (f"{cores.group(1)}-core {parts[1]}" if cores and len(parts) > 1 else "this machine")
    ax.set_title(f"Time to a 1e-4 equilibrium ({where}, one BLAS thread, {date})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with atomic_path(args.out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
