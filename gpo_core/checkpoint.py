"""Checkpoints of the GPO loop: one run per folder, resumed exactly or refused with the reason.

A checkpoint folder holds ``state.json`` (the commit point, written last and atomically), the two
players' current snapshots and one file per kept iterate. What defines the run is recorded with it
(:func:`run_identity`: the config, a hash of the seed prompts, descriptions of the players, the
reward and the diversity reward, the library version); a resume compares every entry and names
what differs. A fresh run never mixes with an earlier one: :func:`prepare_folder` refuses a folder
that holds anything unless ``overwrite=True``, which clears only the files this module writes.
Temporary files that an interrupted write left behind (``.NAME.<32 hex>.tmp``,
:func:`gpo_core._io.atomic_path`) are removed before a run starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from gpo_core._io import atomic_write_json
from gpo_core._validate import short

__all__ = ["Persistent", "PolicyError", "run_identity", "describe"]

STATE = "state.json"
FORMAT = 2
_OURS = re.compile(r"^(state\.json|(defender|adversary)_r\d+|iterate_(defender|adversary)_\d+)$")
_TMP = re.compile(r"^\..+\.[0-9a-f]{32}.*\.tmp$")


@runtime_checkable
class Persistent(Protocol):
    """A policy whose snapshots can be written to and read from files (for checkpoints)."""

    def save_snapshot(self, snapshot: Any, path: str) -> None:
        """Write ``snapshot`` to ``path`` atomically."""
        ...

    def load_snapshot(self, path: str) -> Any:
        """Read a snapshot written by :meth:`save_snapshot`."""
        ...


class PolicyError(RuntimeError):
    """A policy method failed inside the loop; the message names the player, the method and the fix."""


def call(player: str, method: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, with any failure re-raised as a :class:`PolicyError` naming the player."""
    try:
        return fn(*args)
    except Exception as exc:
        raise PolicyError(
            f"the {player}'s {method}() failed: {type(exc).__name__}: {exc}. Nothing on disk was "
            f"changed (the last checkpoint, if any, is intact); fix the {player}'s {method} "
            "(disk space, permissions, device memory) and rerun to resume"
        ) from exc


def describe(obj: Any) -> str:
    """``obj.describe()`` when it has one, else its class's full name (stable across runs)."""
    if obj is None:
        return "none"
    method = getattr(obj, "describe", None)
    if callable(method):
        return str(method())
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def run_identity(config: Any, seeds: Sequence[str], defender: Any, adversary: Any, reward: Any,
                 diversity: Any) -> dict[str, Any]:
    """What defines a run, as JSON-ready values (compared on resume)."""
    digest = hashlib.sha256(json.dumps(list(seeds)).encode("utf-8")).hexdigest()[:16]
    try:
        from importlib.metadata import version  # noqa: PLC0415

        gpo_version = version("gpo")
    except Exception:  # running from a source tree that is not installed
        gpo_version = "unknown"
    return {
        "config": {k: v for k, v in config.to_dict().items() if k != "rounds"},
        "seed_prompts": f"{len(seeds)} prompts, sha256 {digest}",
        "defender": describe(defender),
        "adversary": describe(adversary),
        "reward": describe(reward),
        "diversity": describe(diversity),
        "gpo": gpo_version,
    }


def prepare_folder(ckpt: str, *, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Check the checkpoint folder before any work; return the saved state to resume, or None.

    Raises:
        ValueError: naming ``checkpoint_dir`` and the fix, for a file in its place, an unwritable
            folder, a corrupt ``state.json``, or an earlier run (or foreign files) that neither
            ``resume`` nor ``overwrite`` says what to do with.
    """
    if os.path.exists(ckpt) and not os.path.isdir(ckpt):
        raise ValueError(f"checkpoint_dir={ckpt!r} is a file, not a folder; pass a folder path")
    if not os.path.isdir(ckpt):
        parent = os.path.dirname(os.path.abspath(ckpt))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(
                f"checkpoint_dir={ckpt!r} cannot be created: {parent!r} is not a writable folder; "
                "pass a folder you can write to"
            )
        return None
    if not os.access(ckpt, os.W_OK | os.X_OK):
        raise ValueError(f"checkpoint_dir={ckpt!r} is not writable; fix its permissions or pass another")
    for name in os.listdir(ckpt):  # leftovers of a write that was killed: never committed
        if _TMP.match(name):
            os.unlink(os.path.join(ckpt, name))
    entries = sorted(os.listdir(ckpt))
    if STATE in entries:
        state = read_state(ckpt)
        if resume:
            return state
        if not overwrite:
            raise ValueError(
                f"checkpoint_dir={ckpt!r} holds an earlier run (round {state.get('round')}); pass "
                "resume=True to continue it, overwrite=True to clear it and start afresh, or "
                "another folder"
            )
    if not entries:
        return None
    foreign = [e for e in entries if not _OURS.match(e)]
    if foreign:
        raise ValueError(
            f"checkpoint_dir={ckpt!r} holds files a gpo run did not write ({short(foreign)}); "
            "pass an empty or new folder (nothing there is deleted)"
        )
    if not overwrite:
        raise ValueError(
            f"checkpoint_dir={ckpt!r} holds {len(entries)} files of an unfinished earlier run "
            f"({short(entries)}) but no state.json; pass overwrite=True to clear them, or another "
            "folder"
        )
    # state.json first: from here on the folder no longer claims to hold a run
    for name in sorted(entries, key=lambda e: e != STATE):
        _remove(os.path.join(ckpt, name))
    return None


def read_state(ckpt: str) -> dict[str, Any]:
    """The parsed ``state.json`` of ``ckpt`` (ValueError naming the file when it is unreadable)."""
    path = os.path.join(ckpt, STATE)
    try:
        with open(path) as fh:
            state = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"checkpoint_dir={ckpt!r}: {STATE} cannot be read ({type(exc).__name__}: {exc}); pass "
            "overwrite=True to discard that run, or another folder"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(
            f"checkpoint_dir={ckpt!r}: {STATE} is not a gpo checkpoint of format {FORMAT} (got "
            f"{short(state.get('format') if isinstance(state, dict) else state)}); pass "
            "overwrite=True to discard it, or another folder"
        )
    return state


def check_identity(ckpt: str, state: Mapping[str, Any], identity: Mapping[str, Any],
                   rounds: int) -> None:
    """Refuse to resume a run that another run's arguments would continue."""
    saved = state["identity"]
    differ = []
    for key, value in identity.items():
        if key == "config":
            keys = sorted(k for k in value if saved["config"].get(k) != value[k])
            differ += [f"config.{k}: saved {saved['config'].get(k)!r}, now {value[k]!r}"
                       for k in keys]
        elif saved.get(key) != value:
            differ.append(f"{key}: saved {saved.get(key)!r}, now {value!r}")
    if differ:
        raise ValueError(
            f"checkpoint_dir={ckpt!r} holds a run made with other arguments ({'; '.join(differ)}); "
            "rerun with the same ones, or pass overwrite=True (with resume=False) or another folder"
        )
    if int(state["round"]) > rounds:
        raise ValueError(
            f"checkpoint_dir={ckpt!r} already holds {state['round']} rounds but config.rounds="
            f"{rounds}; ask for at least {state['round']} rounds, or use another folder"
        )


def iterate_name(player: str, n: int) -> str:
    """The file of ``player``'s iterate number ``n`` in a checkpoint folder."""
    return f"iterate_{player}_{n}"


def save(ckpt: str, t: int, rng: np.random.Generator, identity: Mapping[str, Any], defender: Any,
         adversary: Any, logs: Sequence[Any], d_iter: Sequence[Any], a_iter: Sequence[Any],
         ids: Sequence[int], history: Sequence[str]) -> None:
    """Write round ``t``'s checkpoint; ``state.json`` is replaced last, so a crash keeps the old.

    ``ids[k]`` is the iterate number of the snapshots in slot ``k`` (a reservoir replaces slots);
    an iterate's file is written once, and files no slot holds any more are removed after the
    commit.
    """
    os.makedirs(ckpt, exist_ok=True)
    old = read_state(ckpt) if os.path.exists(os.path.join(ckpt, STATE)) else None
    files = {"defender": f"defender_r{t}", "adversary": f"adversary_r{t}"}
    for name, policy in (("defender", defender), ("adversary", adversary)):
        snap = call(name, "snapshot", policy.snapshot)
        call(name, "save_snapshot", policy.save_snapshot, snap, os.path.join(ckpt, files[name]))
    written = set(old["defender_iterates"] + old["adversary_iterates"]) if old else set()
    names: dict[str, list[str]] = {"defender": [], "adversary": []}
    for slot, n in enumerate(ids):
        for player, policy, snaps in (("defender", defender, d_iter),
                                      ("adversary", adversary, a_iter)):
            name = iterate_name(player, n)
            names[player].append(name)
            if name not in written:  # iterates are immutable once taken: written once
                call(player, "save_snapshot", policy.save_snapshot, snaps[slot],
                     os.path.join(ckpt, name))
    state = {
        "format": FORMAT,
        "round": t,
        "identity": dict(identity),
        "rng": rng.bit_generator.state,
        "files": files,
        "defender_iterates": names["defender"],
        "adversary_iterates": names["adversary"],
        "history": list(history),
        "logs": [{"round": log.round, "metrics": dict(log.metrics)} for log in logs],
    }
    atomic_write_json(os.path.join(ckpt, STATE), state)  # the commit point
    if old:
        stale = [old["files"][k] for k in files if old["files"][k] != files[k]]
        stale += sorted(written - set(names["defender"] + names["adversary"]))
        for name in stale:
            if os.path.exists(os.path.join(ckpt, name)):
                _remove(os.path.join(ckpt, name))


def load(ckpt: str, state: Mapping[str, Any], defender: Any, adversary: Any, *, lazy: bool = False
         ) -> tuple[int, np.random.Generator, list[Any], list[Any], list[int], list[str],
                    list[dict]]:
    """Restore both players from ``state``; the next round, the generator, the kept iterates
    (:class:`~gpo_core.mixture.OnDisk` references when ``lazy``), their numbers, the history and
    the logs."""
    from gpo_core.mixture import OnDisk  # noqa: PLC0415  (mixture does not import this module)

    for key, policy in (("defender", defender), ("adversary", adversary)):
        path = os.path.join(ckpt, state["files"][key])
        snap = call(key, "load_snapshot", policy.load_snapshot, path)
        call(key, "restore", policy.restore, snap)
    kept = []
    for key, policy in (("defender", defender), ("adversary", adversary)):
        paths = [os.path.join(ckpt, f) for f in state[f"{key}_iterates"]]
        kept.append([OnDisk(p, policy.load_snapshot) if lazy else
                     call(key, "load_snapshot", policy.load_snapshot, p) for p in paths])
    ids = [int(name.rsplit("_", 1)[1]) for name in state["defender_iterates"]]
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    return (int(state["round"]) + 1, rng, kept[0], kept[1], ids, list(state["history"]),
            list(state["logs"]))


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
