"""Snapshots of :class:`backends.hf.HFPolicy`: what its trainable state is, and its file I/O.

A snapshot is the state that defines an iterate: under ``peft`` the adapter parameters by name
(the base never changes), otherwise the model's full ``state_dict()``. Files are safetensors,
written atomically (a temporary file, then ``os.replace``), so a crash never leaves a half-written
iterate behind. :class:`Snapshots` gives the policy its snapshot methods; :func:`check_snapshot`
is the one check of a snapshot against a policy's shapes, used by restore, save and load alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from gpo_core._io import atomic_path
from gpo_core._validate import short

__all__ = ["Snapshots", "save_snapshot", "load_snapshot", "take", "shapes", "check_snapshot", "put"]


def _items(model: torch.nn.Module, peft: bool):
    if peft:
        return ((n, p) for n, p in model.named_parameters() if p.requires_grad)
    return model.state_dict().items()


def take(model: torch.nn.Module, peft: bool) -> dict[str, torch.Tensor]:
    """An independent CPU copy of the trainable state (module docstring)."""
    return {n: t.detach().to("cpu", copy=True) for n, t in _items(model, peft)}


def shapes(model: torch.nn.Module, peft: bool) -> dict[str, tuple[int, ...]]:
    """Names and shapes that :func:`take` returns (nothing copied)."""
    return {n: tuple(t.shape) for n, t in _items(model, peft)}


def check_snapshot(snapshot: Any, expected: Mapping[str, tuple[int, ...]], *, who: str,
                   what: str, fix: str, finite: bool = False) -> None:
    """Raise unless ``snapshot`` maps exactly ``expected``'s names to tensors of those shapes.

    ``who`` starts the message (``"HFPolicy 'defender': restore failed"``), ``what`` names the
    state compared, ``fix`` ends it; ``finite`` also refuses NaN or infinite values.

    Examples:
        >>> check_snapshot({"w": torch.zeros(2)}, {"w": (3,)}, who="restore failed",
        ...                what="state_dict", fix="pass snapshot()")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: restore failed: ... wrong shape or type ['w: (2,) vs (3,)']); pass snapshot()
    """
    if not isinstance(snapshot, Mapping):
        raise TypeError(
            f"{who}: snapshot must be a mapping of names to tensors (what snapshot() returns), "
            f"got {short(snapshot)}"
        )
    missing = sorted(set(expected) - set(snapshot))
    unexpected = sorted(set(snapshot) - set(expected))
    wrong = [
        f"{k}: {tuple(getattr(v, 'shape', ()))} vs {expected[k]}"
        for k, v in snapshot.items()
        if k in expected and (not isinstance(v, torch.Tensor) or tuple(v.shape) != expected[k])
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{who}: the snapshot does not match this policy's {what} (missing {short(missing)}, "
            f"unexpected {short(unexpected)}, wrong shape or type {short(wrong)}); {fix}"
        )
    if finite:
        bad = [k for k, v in snapshot.items() if v.is_floating_point()
               and not bool(torch.isfinite(v).all())]
        if bad:
            raise ValueError(
                f"{who}: the snapshot holds NaN or infinite values in {short(bad)}; nothing was "
                "changed. Restore a snapshot of a healthy iterate (a checkpoint's earlier round) "
                "instead"
            )


def put(model: torch.nn.Module, peft: bool, snapshot: Mapping[str, torch.Tensor]) -> None:
    """Load a checked snapshot into ``model`` (each tensor keeps the parameter's dtype)."""
    with torch.no_grad():
        if peft:
            params = dict(model.named_parameters())
            for k, v in snapshot.items():
                params[k].copy_(v)
        else:
            model.load_state_dict(dict(snapshot), strict=True)


def save_snapshot(snapshot: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Write a snapshot to ``path`` as safetensors, atomically (temporary file + ``os.replace``).

    Args:
        snapshot: a mapping of names to tensors (what :meth:`HFPolicy.snapshot` returns).
        path: the file to write; its directory must exist. An existing file is replaced only once
            the new one is complete.

    Returns:
        The path written.

    Raises:
        TypeError: if ``snapshot`` is not a mapping of ``str`` to tensors.
        FileNotFoundError: if the folder does not exist.
    """
    from safetensors.torch import save_file  # noqa: PLC0415

    if not isinstance(snapshot, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in snapshot.items()
    ):
        raise TypeError(
            f"snapshot must be a mapping of str to torch.Tensor (HFPolicy.snapshot()), got "
            f"{short(snapshot)}"
        )
    target = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in snapshot.items()}
    if not target.parent.is_dir():
        raise FileNotFoundError(f"save_snapshot: the folder {str(target.parent)!r} does not exist")
    with atomic_path(target) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", "content": "gpo HFPolicy snapshot"})
    return target


def load_snapshot(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a snapshot written by :func:`save_snapshot` (CPU tensors).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not a readable safetensors file.
    """
    from safetensors.torch import load_file  # noqa: PLC0415

    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"no snapshot file at {str(source)!r}; save one with save_snapshot")
    try:
        return load_file(source, device="cpu")
    except Exception as exc:
        raise ValueError(
            f"could not read a safetensors snapshot from {str(source)!r} ({exc}); was it written "
            "by save_snapshot?"
        ) from exc


class Snapshots:
    """The snapshot methods of :class:`backends.hf.HFPolicy` (a mixin over its ``_model``,
    ``_peft`` and ``_name``)."""

    _model: torch.nn.Module
    _peft: bool
    _name: str


    def snapshot(self) -> dict[str, torch.Tensor]:
        """An independent CPU copy of the trainable state: under ``peft`` the adapter parameters
        by name, otherwise the model's full ``state_dict()``."""
        return take(self._model, self._peft)

    def snapshot_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes that :meth:`snapshot` returns (without copying anything)."""
        return shapes(self._model, self._peft)

    def _check_snapshot(self, snapshot: Any, action: str, finite: bool = False) -> None:
        check_snapshot(
            snapshot, self.snapshot_shapes(), who=f"HFPolicy {self._name!r}: {action}",
            what="adapter parameters" if self._peft else "state_dict", finite=finite,
            fix="pass a value from this policy's snapshot() or a file saved from a policy built "
                "the same way",
        )

    def restore(self, snapshot: Mapping[str, torch.Tensor]) -> None:
        """Load a value that :meth:`snapshot` (or :func:`load_snapshot`) returned; the optimiser
        state is left as it is (call :meth:`reset_optimizer` for a fresh start).

        Raises:
            TypeError, ValueError: naming this policy, if the snapshot's names, shapes or types
                do not match this policy's trainable state, or it holds NaN or infinite values;
                nothing is changed then.
        """
        self._check_snapshot(snapshot, "restore failed", finite=True)
        put(self._model, self._peft, snapshot)

    def save_snapshot(
        self, snapshot: Mapping[str, torch.Tensor], path: str | os.PathLike[str]
    ) -> None:
        """Write ``snapshot`` to ``path`` as safetensors, atomically (see :func:`save_snapshot`).

        Raises:
            TypeError, ValueError: naming this policy, if ``snapshot`` does not fit it.
        """
        self._check_snapshot(snapshot, "save_snapshot failed")
        save_snapshot(snapshot, path)

    def load_snapshot(self, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
        """Read a snapshot file written by :meth:`save_snapshot` and check it fits this policy.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: naming this policy, if the file is unreadable or holds another shape.
        """
        try:
            snap = load_snapshot(path)
        except ValueError as exc:
            raise ValueError(f"HFPolicy {self._name!r}: load_snapshot failed: {exc}") from exc
        self._check_snapshot(snap, f"load_snapshot failed for {str(path)!r}")
        return snap
