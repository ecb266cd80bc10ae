"""Send each round's metrics to TensorBoard or Weights & Biases: ``on_round`` callbacks.

:func:`gpo_core.alignment.run_game` calls ``on_round(log)`` after every round with a
:class:`~gpo_core.alignment.RoundLog` ``(round, metrics)``; the callbacks here write each metric
as a scalar at step ``round``, so a run's curves (reward, attack success, diversity, KL, fit
residuals) can be watched live and compared across runs, as Hugging Face's ``report_to`` does:

* :func:`tensorboard` -- ``torch.utils.tensorboard.SummaryWriter`` event files (needs the
  ``tensorboard`` package, in the ``llm`` extra); flushed every round, so a crashed run keeps
  every finished round;
* :func:`wandb` -- a Weights & Biases run, imported on use, **offline by default** (nothing is
  sent; ``wandb sync DIR`` uploads later);
* :func:`combine` -- several callbacks (and ``backends.report.progress``'s bar) as one;
* :func:`report_to` -- the same chosen by name: ``"tensorboard"``, ``"wandb"``, a list, or
  ``"none"``.

Each tracker is callable, has ``close()`` and is a context manager. Metric names are kept as
they are (``defender/loss`` groups under ``defender`` in both tools). Torch-free until a
TensorBoard tracker is made.

Examples:
    >>> from gpo_core.alignment import RoundLog
    >>> seen = []
    >>> both = combine(seen.append, None, lambda log: seen.append(log.round * 10))
    >>> both(RoundLog(1, {"reward/mean": 0.5}))
    >>> seen
    [RoundLog(round=1, metrics={'reward/mean': 0.5}), 10]
"""

from __future__ import annotations

import json
import numbers
import os
from typing import Any, Callable, Mapping, Sequence

from gpo_core._validate import short
from gpo_core.alignment import RoundLog

__all__ = ["Tracker", "tensorboard", "wandb", "combine", "report_to", "REPORT_TO"]

REPORT_TO = ("tensorboard", "wandb")
_WANDB_MODES = ("offline", "online", "disabled")


def _check_log(log: Any) -> tuple[int, dict[str, float]]:
    """``log``'s round and metrics, or a ``TypeError``/``ValueError`` naming what is wrong."""
    rnd, metrics = getattr(log, "round", None), getattr(log, "metrics", None)
    if isinstance(rnd, bool) or not isinstance(rnd, numbers.Integral) or not isinstance(
        metrics, Mapping
    ):
        raise TypeError(
            f"log must be a gpo_core.alignment.RoundLog (round: int, metrics: mapping), got "
            f"{short(log)}; pass the callback as run_game(..., on_round=callback)"
        )
    if rnd < 0:
        raise ValueError(f"log.round must be >= 0 (the step to log at), got {rnd}")
    out = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f"log.metrics keys must be str metric names, got {short(key)}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"log.metrics[{key!r}] must be a real number, got {type(value).__name__} "
                f"{short(value)}"
            )
        out[key] = float(value)
    return int(rnd), out


class Tracker:
    """An ``on_round`` callback over a ``write(round, metrics)`` and a ``close()``.

    Args:
        write: called with ``(round, {name: float})`` for each checked :class:`RoundLog`.
        close: called once by :meth:`close` (later calls do nothing).
        name: shown in ``repr``.
    """

    def __init__(self, write: Callable[[int, dict[str, float]], None],
                 close: Callable[[], None], name: str) -> None:
        self._write, self._close, self.name, self.closed = write, close, name, False

    def __repr__(self) -> str:
        return f"Tracker({self.name}{', closed' if self.closed else ''})"

    def __call__(self, log: RoundLog) -> None:
        if self.closed:
            raise ValueError(f"{self!r} is closed; make a new tracker to log again")
        self._write(*_check_log(log))

    def close(self) -> None:
        """Flush and release the writer (idempotent)."""
        if not self.closed:
            self.closed = True
            self._close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _config_dict(config: Any) -> dict[str, Any] | None:
    if config is None:
        return None
    if hasattr(config, "__dataclass_fields__"):
        import dataclasses  # noqa: PLC0415

        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise TypeError(
            f"config must be a mapping or a dataclass (e.g. the GameConfig), got {short(config)}"
        )
    return dict(config)


def _check_dir(value: Any, name: str) -> str:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise TypeError(f"{name} must be a folder path (str or os.PathLike), got {short(value)}")
    return os.fspath(value)


def tensorboard(log_dir: str | os.PathLike, *, config: Any = None) -> Tracker:
    """A tracker writing TensorBoard event files to ``log_dir`` (``tensorboard --logdir ...``).

    Args:
        log_dir: the folder (created if missing); one run per folder.
        config: optional mapping or dataclass (e.g. the ``GameConfig``) written once as the
            text summary ``config`` (JSON).

    Returns:
        A :class:`Tracker`; each round adds one scalar per metric at step ``round`` and flushes.

    Raises:
        TypeError: ``log_dir`` is not a path; ``config`` is neither a mapping nor a dataclass.
        ImportError: ``tensorboard`` (or torch) is missing; the message names the install.
    """
    log_dir = _check_dir(log_dir, "log_dir")
    cfg = _config_dict(config)
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(
            "report_to='tensorboard' needs torch and the tensorboard package: "
            "pip install tensorboard (or pip install 'gpo[llm]')"
        ) from exc
    writer = SummaryWriter(log_dir=log_dir)
    if cfg is not None:
        writer.add_text("config", json.dumps(cfg, indent=1, default=str))

    def write(rnd: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            writer.add_scalar(key, value, global_step=rnd)
        writer.flush()

    return Tracker(write, writer.close, f"tensorboard: {log_dir}")


def wandb(
    project: str = "gpo",
    *,
    name: str | None = None,
    mode: str = "offline",
    dir: str | os.PathLike | None = None,  # noqa: A002  (wandb.init's own name)
    config: Any = None,
) -> Tracker:
    """A tracker logging to a Weights & Biases run (``wandb`` is imported here, on use).

    Args:
        project: the W&B project.
        name: the run's display name (W&B picks one when ``None``).
        mode: ``"offline"`` (default: written under ``dir``, nothing sent; ``wandb sync`` uploads
            later), ``"online"`` or ``"disabled"``.
        dir: where W&B writes its files (its default ``./wandb`` when ``None``).
        config: optional mapping or dataclass (e.g. the ``GameConfig``) stored as the run config.

    Returns:
        A :class:`Tracker`: ``run.log(metrics, step=round)`` each round; ``close()`` finishes the
        run.

    Raises:
        TypeError, ValueError: a bad argument (checked before ``wandb`` is imported).
        ImportError: ``wandb`` is not installed; the message says ``pip install wandb``.
    """
    if not isinstance(project, str) or not project:
        raise TypeError(f"project must be a non-empty str, got {short(project)}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {short(name)}")
    if mode not in _WANDB_MODES:
        raise ValueError(f"mode must be one of {_WANDB_MODES}, got {short(mode)}")
    dir_ = None if dir is None else _check_dir(dir, "dir")
    cfg = _config_dict(config)
    try:
        import wandb as wandb_lib  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(
            "report_to='wandb' needs Weights & Biases: pip install wandb "
            "(runs offline by default: nothing is sent until `wandb sync`)"
        ) from exc
    run = wandb_lib.init(project=project, name=name, mode=mode, dir=dir_, config=cfg)

    def write(rnd: int, metrics: dict[str, float]) -> None:
        run.log(metrics, step=rnd)

    return Tracker(write, run.finish, f"wandb: {project}, {mode}")


def combine(*callbacks: Callable[[RoundLog], Any] | None) -> Tracker:
    """One ``on_round`` callback calling each of ``callbacks`` in order (``None`` is skipped).

    ``close()`` closes every callback that has a ``close`` method, in order.

    Raises:
        TypeError: an argument is neither callable nor ``None``.
    """
    calls = []
    for i, cb in enumerate(callbacks):
        if cb is None:
            continue
        if not callable(cb):
            raise TypeError(
                f"callbacks[{i}] must be a callable taking a RoundLog (or None), got {short(cb)}"
            )
        calls.append(cb)

    def write(rnd: int, metrics: dict[str, float]) -> None:
        log = RoundLog(rnd, metrics)
        for cb in calls:
            cb(log)

    def close() -> None:
        for cb in calls:
            if callable(getattr(cb, "close", None)):
                cb.close()

    return Tracker(write, close, f"combine of {len(calls)}")


def report_to(
    targets: str | Sequence[str],
    *,
    log_dir: str | os.PathLike = "runs/gpo",
    project: str = "gpo",
    config: Any = None,
) -> Tracker:
    """Trackers chosen by name, combined: ``"tensorboard"``, ``"wandb"``, a list, or ``"none"``.

    Args:
        targets: a name, a list of names, ``"all"`` (both) or ``"none"`` (a tracker that drops
            the logs).
        log_dir: TensorBoard's folder; W&B writes under ``log_dir`` too (offline).
        project: the W&B project.
        config: passed to each tracker (e.g. the ``GameConfig``).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        ImportError: a chosen tool is not installed (the message names the install).

    Examples:
        >>> report_to("none")
        Tracker(combine of 0)
    """
    names = [targets] if isinstance(targets, str) else targets
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"targets must be a name or a list of names, got {short(targets)}")
    if list(names) == ["all"]:
        names = REPORT_TO
    elif list(names) == ["none"]:
        names = []
    for n in names:
        if n not in REPORT_TO:
            raise ValueError(
                f"unknown report_to target {n!r}; choose from {REPORT_TO}, 'all' or 'none'"
            )
    made: list[Tracker] = []
    try:
        for n in dict.fromkeys(names):
            if n == "tensorboard":
                made.append(tensorboard(log_dir, config=config))
            else:
                made.append(wandb(project, dir=log_dir, config=config))
    except BaseException:
        for tracker in made:  # do not leave a writer open when a later one cannot start
            tracker.close()
        raise
    return combine(*made)
