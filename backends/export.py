"""``gpo export``: a trained player as a standard Hugging Face model folder.

A ``run_game`` checkpoint holds only what the run trained (a full ``state_dict``, or the LoRA
adapters under ``peft``), so exporting starts from the model the run started from (``--model``,
plus ``--adapter`` for a LoRA run: the adapter folder's config gives the LoRA structure) and
loads the chosen snapshot into it:

* ``iterate="last"`` (Algorithm 1's output) or an iterate number ``k``: one folder that
  ``transformers.AutoModelForCausalLM.from_pretrained``, vLLM and ``gpo eval`` load; under LoRA
  the adapter alone (``save_pretrained`` of the peft model: load the base and apply it), or with
  ``merge=True`` the base with the adapters merged in (a plain model folder);
* ``iterate="average"`` (the averaged policy of Theorem 3.2): one such folder per kept iterate,
  ``iterate_<n>/``, and ``mixture.json`` listing them with their (uniform) weights.
  :func:`load_mixture` reads it back as :class:`MixtureModel`, which samples the mixture: each
  prompt draws an iterate uniformly, and each drawn iterate is loaded once per call.

Nothing is downloaded and no remote code runs. Folders are written to a temporary sibling and
renamed into place, so an interrupted export leaves no half-written model behind.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Any, Sequence

import numpy as np

from backends.evaluate import _apply_snapshot, generate, load_model
from gpo_core._validate import short

__all__ = ["export", "load_mixture", "MixtureModel", "plain_copy"]

MIXTURE = "mixture.json"


def _snapshot_paths(run: str, player: str, iterate: str | int) -> list[tuple[str, str]]:
    """``[(name, snapshot path)]`` of the chosen iterate(s) in a run_game checkpoint."""
    state_path = os.path.join(run, "state.json")
    if not os.path.isfile(state_path):
        raise FileNotFoundError(
            f"--run {run!r} has no state.json; pass the checkpoint_dir of a run_game run")
    with open(state_path, encoding="utf-8") as fh:
        state = json.load(fh)
    kept = list(state.get(f"{player}_iterates", []))
    if iterate == "last":
        chosen = [("last", state["files"][player])]
    elif iterate == "average":
        chosen = [(name.rsplit("_", 1)[1], name) for name in kept]
    else:
        name = f"iterate_{player}_{iterate}"
        if name not in kept:
            numbers = [k.rsplit("_", 1)[1] for k in kept]
            raise ValueError(f"--iterate {iterate} is not among the run's kept iterates "
                             f"{short(numbers)}; pass one of them, 'last' or 'average'")
        chosen = [(str(iterate), name)]
    paths = [(label, os.path.join(run, name)) for label, name in chosen]
    missing = [p for _, p in paths if not os.path.isfile(p)]
    if not paths or missing:
        raise FileNotFoundError(f"--run {run!r}: snapshot files {missing or 'none'} are missing; "
                                "pass a complete checkpoint")
    return paths


def _check(model: str, out: str, player: str, iterate: Any, merge: Any) -> str | int:
    if player not in ("defender", "adversary"):
        raise ValueError(f"player must be 'defender' or 'adversary', got {short(player)}")
    if not isinstance(merge, bool):
        raise TypeError(f"merge must be True or False, got {short(merge)}")
    if isinstance(iterate, str) and iterate.isdigit():
        iterate = int(iterate)
    if not (iterate in ("last", "average") or (isinstance(iterate, int)
                                               and not isinstance(iterate, bool) and iterate >= 0)):
        raise ValueError(f"iterate must be 'last', 'average' or an iterate number >= 0, got "
                         f"{short(iterate)}")
    if not isinstance(out, str) or not out:
        raise TypeError(f"out must be a folder path, got {short(out)}")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"out {out!r} exists and is not an empty folder; pass a new folder "
                         "(nothing is overwritten)")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"out {out!r}: its folder {parent!r} does not exist; create it")
    return iterate


def plain_copy(model: Any) -> Any:
    """A plain float copy of a model loaded from GGUF (which refuses ``save_pretrained`` and
    training): the same class and weights, without the quantisation record."""
    import copy  # noqa: PLC0415

    import torch  # noqa: PLC0415

    config = copy.deepcopy(model.config)
    for key in ("quantization_config", "gguf_file"):
        if hasattr(config, key):
            delattr(config, key)
    plain = type(model)(config)
    with torch.no_grad():
        plain.load_state_dict(model.state_dict())
    return plain.eval()


def _save(model: Any, tokenizer: Any, folder: str, merge: bool) -> None:
    if merge and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    try:
        model.save_pretrained(folder, safe_serialization=True)
    except (TypeError, ValueError, NotImplementedError, RuntimeError):
        plain_copy(model).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def export(model: str, run: str, out: str, *, adapter: str | None = None,
           player: str = "defender", iterate: str | int = "last", merge: bool = False) -> str:
    """Write ``player``'s chosen iterate of the checkpoint ``run`` as a Hugging Face folder.

    Args:
        model: the folder (or ``"smollm2"``) of the model the run started from.
        run: the run's ``checkpoint_dir``.
        out: a new (or empty) folder to write.
        adapter: for a LoRA run, a peft adapter folder of the same structure (its weights are
            replaced by the snapshot's).
        player: ``"defender"`` or ``"adversary"``.
        iterate: ``"last"``, ``"average"`` (every kept iterate and ``mixture.json``) or a kept
            iterate's number.
        merge: under LoRA, merge the adapters into the base (a plain model folder).

    Returns:
        ``out``.

    Raises:
        TypeError, ValueError, FileNotFoundError: naming the argument and the fix, before any
            model is loaded.
    """
    iterate = _check(model, out, player, iterate, merge)
    paths = _snapshot_paths(run, player, iterate)
    tmp = os.path.join(os.path.dirname(os.path.abspath(out)),
                       f".{os.path.basename(os.path.abspath(out))}.{uuid.uuid4().hex}.tmp")
    os.makedirs(tmp)
    try:
        entries = []
        for label, path in paths:
            lm, tok = load_model(model, adapter)
            _apply_snapshot(lm, path)
            folder = tmp if iterate != "average" else os.path.join(tmp, f"iterate_{label}")
            _save(lm, tok, folder, merge)
            entries.append({"folder": os.path.basename(folder), "snapshot": os.path.basename(path)})
            del lm
        if iterate == "average":
            meta = {"format": "gpo-mixture-1", "player": player,
                    "adapter_only": adapter is not None and not merge,
                    "iterates": [e["folder"] for e in entries],
                    "weights": [1.0 / len(entries)] * len(entries)}
            with open(os.path.join(tmp, MIXTURE), "w", encoding="utf-8") as fh:
                json.dump(meta, fh, indent=1)
        if os.path.isdir(out):
            os.rmdir(out)  # checked empty above
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return out


class MixtureModel:
    """An exported averaged policy: each prompt is answered by a uniformly drawn iterate.

    Args:
        folder: a folder written by :func:`export` with ``iterate="average"``.
        base: for an adapter-only export, the base model folder (or ``"smollm2"``).
    """

    def __init__(self, folder: str, base: str | None = None) -> None:
        path = os.path.join(folder, MIXTURE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder!r} has no {MIXTURE}; pass a folder written by "
                                    "gpo export --iterate average")
        with open(path, encoding="utf-8") as fh:
            self.meta = json.load(fh)
        if self.meta.get("adapter_only") and base is None:
            raise ValueError(f"{folder!r} holds adapters only; pass base= (the model the run "
                             "started from)")
        self.folder, self.base = folder, base
        self.iterates = [os.path.join(folder, name) for name in self.meta["iterates"]]

    def _load(self, k: int) -> tuple[Any, Any]:
        if self.meta.get("adapter_only"):
            return load_model(self.base, self.iterates[k])
        return load_model(self.iterates[k])

    def generate(self, prompts: Sequence[str], rng: np.random.Generator, **kwargs: Any
                 ) -> tuple[list[str], np.ndarray]:
        """Answers and the iterate each prompt drew (``kwargs`` go to
        :func:`backends.evaluate.generate`); each drawn iterate is loaded once."""
        prompts = list(prompts)
        picks = rng.integers(len(self.iterates), size=len(prompts))
        out = [""] * len(prompts)
        for k in np.unique(picks):
            idx = np.flatnonzero(picks == k)
            lm, tok = self._load(int(k))
            for i, text in zip(idx, generate(lm, tok, [prompts[i] for i in idx], **kwargs)):
                out[i] = text
            del lm
        return out, picks


def load_mixture(folder: str, base: str | None = None) -> MixtureModel:
    """Read an exported averaged policy (see :class:`MixtureModel`)."""
    return MixtureModel(folder, base)
