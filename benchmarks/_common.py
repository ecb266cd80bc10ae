"""Shared plumbing of the benchmark scripts: machine facts, timing, capped solver runs, tables.

Nothing here is timed itself. Every script prints a header (machine, date, versions, BLAS kernel,
load average, the exact command) above its tables, so a table never travels without the facts
it was measured under.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import multiprocessing as _mp
import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

import numpy as np

ENV_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


# ----------------------------------------------------------------------------- machine facts
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib(key: str) -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def mem_available_gib() -> float:
    """``MemAvailable`` from /proc/meminfo, in GiB (nan where unknown)."""
    return _mem_gib("MemAvailable")


def _version(dist: str) -> str:
    try:
        return _md.version(dist)
    except _md.PackageNotFoundError:
        return "not installed"


def blas_kernels() -> str:
    """The BLAS libraries numpy/scipy loaded, with the kernel (architecture) and thread count."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed (kernel unknown)"
    seen = []
    for info in threadpool_info():
        if info.get("user_api") != "blas":
            continue
        lib = os.path.basename(info.get("filepath", "?")).split("-")[0]
        seen.append(
            f"{lib} {info.get('version')} kernel={info.get('architecture')} "
            f"threads={info.get('num_threads')}"
        )
    return "; ".join(seen) or "no BLAS found"


def limit_threads(threads: int) -> Any:
    """Limit BLAS/OpenMP threads of this process (benchmarks only; the library never does)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn/scipy stacks
        return None
    return threadpool_limits(limits=threads)


def header(title: str, argv: list[str], extra: dict[str, str] | None = None) -> str:
    """A markdown block with machine, date, versions and the exact command."""
    env = {k: os.environ[k] for k in ENV_BLAS_VARS if k in os.environ}
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [
        f"### {title}",
        "",
        f"- command: `{' '.join(shlex.quote(a) for a in argv)}`",
        f"- date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {os.cpu_count()} CPUs (`nproc` {len(os.sched_getaffinity(0))}), "
        f"{_cpu_model()}, {_mem_gib('MemTotal'):.1f} GiB RAM "
        f"({mem_available_gib():.1f} GiB available), load average {load} at start",
        f"- python {platform.python_version()}, numpy {np.__version__}, scipy {_version('scipy')}, "
        f"open-spiel {_version('open-spiel')}, nashpy {_version('nashpy')}, "
        f"cvxpy {_version('cvxpy')}, ecos {_version('ecos')}, gpo {_version('gpo')}",
        f"- BLAS: {blas_kernels()}",
        f"- BLAS env vars: {env if env else 'none set'}",
        f"- gpo_core C kernels (gpo_core/_kernels.c): {_kernels_status()}",
    ]
    for key, value in (extra or {}).items():
        lines.append(f"- {key}: {value}")
    return "\n".join(lines) + "\n"


def _kernels_status() -> str:
    import gpo_core._fused

    if gpo_core._fused.KERNELS is None:
        return "not built (steps run in numpy)"
    exp = "glibc's libmvec (vector)" if gpo_core._fused.VECTOR_EXP else "libm (scalar)"
    return f"built; Hedge's exp from {exp}"


# --------------------------------------------------------------------------------- timing
def best_of(
    fn: Callable[[], Any], *, repeat_below: float = 0.2, max_repeat: int = 5
) -> tuple[float, Any]:
    """Time ``fn()``; repeat (up to ``max_repeat`` runs) while a run takes < ``repeat_below`` s.

    Returns the fastest time and the result of the last run. On a shared machine the minimum is
    the least noisy estimate of the cost itself (the other runs lost time to other processes).
    """
    best, result = float("inf"), None
    for _ in range(max_repeat):
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        if dt >= repeat_below:
            break
    return best, result


def fmt_time(seconds: float | None) -> str:
    """``1.23 ms`` / ``4.56 s`` style."""
    if seconds is None or not np.isfinite(seconds):
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(ratio: float | None, prefix: str = "") -> str:
    if ratio is None or not np.isfinite(ratio):
        return "n/a"
    if ratio >= 100:
        return f"{prefix}{ratio:.0f}×"
    if ratio >= 10:
        return f"{prefix}{ratio:.1f}×"
    if ratio >= 0.1:
        return f"{prefix}{ratio:.2f}×"
    return f"{prefix}{ratio:.2g}×"  # 0.0008×: two significant digits, never a bare 0.00×


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".md")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------- capped runs in a worker
def _worker_main(conn: Any, threads: int) -> None:
    """Worker loop: receive ``(module, function, args)``, reply ``('ok', seconds, result)``."""
    import importlib

    limit_threads(threads)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        module, name, args, repeat_below = task
        try:
            fn = getattr(importlib.import_module(module), name)
            fn(*args, warmup=True)  # imports and first-call costs are not the solver's time
            conn.send(("started", None, None))
            seconds, result = best_of(lambda: fn(*args), repeat_below=repeat_below)
            conn.send(("ok", seconds, result))
        except Exception:  # noqa: BLE001 - reported to the parent as a failed run
            conn.send(("error", None, traceback.format_exc(limit=3)))


class CappedRunner:
    """Runs solver functions in a separate process and kills them past a time cap.

    An exact solver (an LP, support enumeration) cannot be interrupted from Python, so it runs
    in a worker process; the time is measured inside the worker around the call alone (after a
    warm-up call on a 2x2 game that pays for imports). If the call is not back within ``cap``
    seconds, the worker is killed and restarted and the run is reported as capped.
    """

    def __init__(self, threads: int) -> None:
        self._ctx = _mp.get_context("spawn")
        self._threads = threads
        self._proc: Any = None
        self._conn: Any = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(
            target=_worker_main, args=(child, self._threads), daemon=True
        )
        self._proc.start()
        self._conn = parent

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
        self._proc = self._conn = None

    def run(self, module: str, name: str, args: tuple, cap: float, repeat_below: float = 0.2):
        """``('ok', seconds, result)``, ``('capped', cap, None)`` or ``('error', None, tb)``."""
        if self._proc is None:
            self._start()
        self._conn.send((module, name, args, repeat_below))
        if not self._conn.poll(120.0):  # the warm-up (imports) must not take this long
            self._kill()
            return ("error", None, "worker did not start within 120 s")
        status, _, info = self._conn.recv()
        if status == "error":
            return (status, None, info)
        # The cap covers the first (timed) call; best-of repeats only happen for runs < 0.2 s.
        if not self._conn.poll(cap + 1.0):
            self._kill()
            return ("capped", cap, None)
        status, seconds, result = self._conn.recv()
        if status == "ok" and seconds > cap:
            return ("capped", cap, None)
        return (status, seconds, result)

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._conn.send(None)
                self._proc.join(timeout=5)
            finally:
                self._kill()


def parse_common(parser: Any) -> None:
    """Options every script has."""
    parser.add_argument("--quick", action="store_true", help="small sizes and caps (< ~60 s)")
    parser.add_argument(
        "--out", default=None, help="also write the markdown to this file (atomically)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS threads for every solver (default 1: the fair and least noisy choice on a "
        "shared 2-core machine; HiGHS and OpenSpiel's C++ CFR+ are single-threaded)",
    )


def emit(text: str, out: str | None) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
    if out:
        write_atomic(out, text)
