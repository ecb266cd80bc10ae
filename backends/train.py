"""``gpo train CONFIG.toml``: the GPO loop from a config file, with every option of the loop.

A config has top-level ``out`` (folder for checkpoints, table, plot), ``seed_prompts`` (a list)
or ``seed_file`` (one prompt per line, relative to the config), optional ``report_to``
(``"tensorboard"``, ``"wandb"``, a list of them, ``"all"`` or ``"none"``: each round's metrics
also go there, under ``<out>/tracking``; :func:`backends.tracking.report_to`), and five tables:

* ``[game]`` -- any field of :class:`gpo_core.alignment.GameConfig` (rounds, schedule,
  defender_steps, adversary_steps, defender_eta, adversary_eta, defender_alpha, adversary_alpha,
  kl_anchor, batch_size, responses_per_prompt, prompts_per_context, beta_div, seed_mix, conditional_adversary,
  output, attack_threshold, snapshot_every, gap_every, gap_steps, gap_eta, seed);
* ``[defender]`` and ``[adversary]`` -- ``model`` (``"tiny"``: a random tiny Llama built on the
  spot over a tokenizer trained on the seed prompts; or a local folder of a ``transformers``
  causal LM, with optional ``gguf_file``), ``template``, ``max_new_tokens``, ``temperature``,
  ``top_p``, ``repetition_penalty``, ``objective`` (``"regression"``/``"pg"``), ``optimizer``
  (``"lbfgs"``/``"adam"``), ``fit_tol``, ``max_fit_steps``, ``lr`` (AdamW only),
  ``micro_batch_size``, ``generation_batch_size`` (rows per sampling batch; default
  ``micro_batch_size``), ``stop_token_ids`` (a list of ids that also end an output, e.g. a chat
  model's end-of-turn token), ``gradient_checkpointing`` (true: recompute activations in the
  backward), ``device``, ``dtype``, ``lora_r`` (> 0 adds a LoRA adapter), ``truncate_prompts``;
* ``[reward]`` -- ``kind = "lexical"`` (toy profanity + refusal scorer), ``"keywords"`` (share of
  the response's words in ``words``) or ``"classifier"`` (a local sequence classifier: ``path``,
  ``label``, optional ``template``);
* ``[diversity]`` -- ``form`` (``"code"``/``"paper"``), ``embedder`` (``"hashing"`` or
  ``"minilm"``), ``bleu_weight``, ``embed_weight``.

Every value is checked against its type and range when the file loads (a string where a list
belongs is not split into characters), and unknown keys are errors that list the valid ones; each
message names the file, the table and the key. ``out`` and ``seed_file`` are checked as paths
before any model is built. ``examples/gpo_train.toml`` shows every key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import tomllib
from typing import Any, Mapping

from gpo_core._io import atomic_write_text
from gpo_core._validate import check_output_dir, short
from gpo_core.alignment import GameConfig, GameResult, run_game

__all__ = ["PolicySpec", "load_config", "build_run", "train_from_toml"]

_TOP = {"out", "seed_prompts", "seed_file", "report_to", "game", "defender", "adversary", "reward",
        "diversity"}


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """How to build one player (see the module docstring for each field)."""

    model: str = "tiny"
    gguf_file: str | None = None
    template: str | None = None
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    objective: str = "regression"
    lr: float = 1e-3
    optimizer: str = "lbfgs"
    fit_tol: float = 1e-2
    max_fit_steps: int = 50
    micro_batch_size: int = 16
    generation_batch_size: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    gradient_checkpointing: bool = False
    device: str | None = None
    dtype: str | None = None
    lora_r: int = 0
    truncate_prompts: bool = False
    hidden_size: int = 64
    layers: int = 2
    init_seed: int = 0


# What each key takes: a checker returns None for a good value, else (error type, what it must be).
def _integer(low: int):
    def check(v: Any):
        if isinstance(v, bool) or not isinstance(v, int):
            return TypeError, f"an integer >= {low}"
        return None if v >= low else (ValueError, f"an integer >= {low}")
    return check


def _real(low: float, *, strict: bool, high: float | None = None):
    span = f"> {low:g}" if strict else f">= {low:g}"
    if high is not None:
        span = f"in ({low:g}, {high:g}]"

    def check(v: Any):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return TypeError, f"a number {span}"
        ok = math.isfinite(v) and (v > low if strict else v >= low) and (high is None or v <= high)
        return None if ok else (ValueError, f"a finite number {span}")
    return check


def _text(v: Any):
    if not isinstance(v, str):
        return TypeError, "a string"
    return None if v.strip() else (ValueError, "a non-empty string")


def _choice(*options: str):
    def check(v: Any):
        return None if v in options and isinstance(v, str) else (
            TypeError if not isinstance(v, str) else ValueError, f"one of {list(options)}")
    return check


def _boolean(v: Any):
    return None if isinstance(v, bool) else (TypeError, "true or false")


def _token_ids(v: Any):
    if not isinstance(v, list):  # one id would be read as a list of one only by accident
        return TypeError, "a list of token ids, e.g. [128009]"
    bad = [i for i in v if isinstance(i, bool) or not isinstance(i, int)]
    if bad:
        return TypeError, "a list of integer token ids, e.g. [128009]"
    return None if all(i >= 0 for i in v) else (ValueError, "a list of token ids >= 0")


def _report_to(v: Any):
    from backends.tracking import REPORT_TO  # noqa: PLC0415  (torch-free)

    names = [v] if isinstance(v, str) else v
    expected = (f"one of {[*REPORT_TO, 'all', 'none']} or a list of {list(REPORT_TO)}, e.g. "
                "\"tensorboard\"")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return TypeError, expected
    ok = names in (["all"], ["none"]) or all(n in REPORT_TO for n in names)
    return None if ok else (ValueError, expected)


def _strings(v: Any):
    if not isinstance(v, list):  # a bare string would become a list of its characters
        return TypeError, "a list of strings, e.g. [\"...\", \"...\"]"
    bad = [s for s in v if not isinstance(s, str) or not s.strip()]
    return None if not bad else (TypeError, "a list of non-empty strings")


_POLICY = {
    "model": _text, "gguf_file": _text, "template": _text, "max_new_tokens": _integer(1),
    "temperature": _real(0, strict=True), "top_p": _real(0, strict=True, high=1.0),
    "repetition_penalty": _real(0, strict=True), "objective": _choice("regression", "pg"),
    "lr": _real(0, strict=True), "optimizer": _choice("lbfgs", "adam"),
    "fit_tol": _real(0, strict=True, high=1.0), "max_fit_steps": _integer(1),
    "micro_batch_size": _integer(1), "generation_batch_size": _integer(1),
    "stop_token_ids": _token_ids, "gradient_checkpointing": _boolean,
    "device": _text, "dtype": _choice("float32", "bfloat16"), "lora_r": _integer(0),
    "truncate_prompts": _boolean, "hidden_size": _integer(1), "layers": _integer(1),
    "init_seed": _integer(0),
}
_REWARD = {"kind": _choice("lexical", "keywords", "classifier"), "words": _strings,
           "path": _text, "label": _text, "template": _text}
_DIVERSITY = {"form": _choice("code", "paper"), "embedder": _choice("hashing", "minilm"),
              "bleu_weight": _real(0, strict=False), "embed_weight": _real(0, strict=False)}
_TOP_VALUES = {"out": _text, "seed_prompts": _strings, "seed_file": _text, "report_to": _report_to}


def _check_values(section: Mapping[str, Any], checks: Mapping[str, Any], where: str) -> None:
    for key, value in section.items():
        problem = checks[key](value)
        if problem is not None:
            error, expected = problem
            raise error(f"{where} {key} must be {expected}, got {short(value)}")


def _table(data: Mapping[str, Any], key: str, allowed: Any, where: str) -> dict[str, Any]:
    section = data.get(key, {})
    if not isinstance(section, Mapping):
        raise ValueError(f"{where}: [{key}] must be a table, got {short(section)}")
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} in [{key}]; valid keys: {sorted(allowed)}")
    if isinstance(allowed, Mapping):
        _check_values(section, allowed, f"{where}: [{key}]")
    return dict(section)


def _reward_keys(reward: Mapping[str, Any], where: str) -> None:
    """Keys that the chosen kind would ignore, and the ones it needs."""
    kind = reward.get("kind", "lexical")
    takes = {"lexical": set(), "keywords": {"words"}, "classifier": {"path", "label", "template"}}
    ignored = sorted(set(reward) - {"kind"} - takes[kind])
    if ignored:
        raise ValueError(f"{where}: [reward] {ignored} do nothing with kind = {kind!r}; remove "
                         f"them (kind {kind!r} takes {sorted(takes[kind]) or 'no other key'})")
    if kind == "keywords" and not reward.get("words"):
        raise ValueError(f"{where}: [reward] kind = 'keywords' needs a non-empty 'words' list")
    if kind == "classifier" and not {"path", "label"} <= set(reward):
        raise ValueError(f"{where}: [reward] kind = 'classifier' needs 'path' (a local folder) "
                         "and 'label'")


def _seed_file(path: str, name: str) -> list[str]:
    seed_path = os.path.join(os.path.dirname(os.path.abspath(path)), name)
    if not os.path.exists(seed_path):
        raise ValueError(f"{path}: seed_file {seed_path!r} does not exist (it is relative to the "
                         "config); give a text file with one prompt per line")
    if not os.path.isfile(seed_path):
        raise ValueError(f"{path}: seed_file {seed_path!r} is a folder, not a file; give a text "
                         "file with one prompt per line")
    try:
        with open(seed_path, encoding="utf-8") as fh:
            return [line.strip() for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: seed_file {seed_path!r} cannot be read as text ({exc})") from exc


def load_config(path: str) -> dict[str, Any]:
    """Read and check a TOML config; returns the parsed sections with defaults filled in."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config {path!r} does not exist; see examples/gpo_train.toml")
    with open(path, "rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config {path!r} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {unknown}; valid keys: {sorted(_TOP)}")
    _check_values({k: v for k, v in data.items() if k in _TOP_VALUES}, _TOP_VALUES, f"{path}:")
    game_fields = {f.name for f in dataclasses.fields(GameConfig)}
    try:
        game = GameConfig.from_dict(_table(data, "game", game_fields, path))
    except (TypeError, ValueError) as exc:
        if str(exc).startswith(f"{path}:"):
            raise
        raise type(exc)(f"{path}: [game] {exc}") from exc
    defender, adversary = (_spec(_table(data, key, _POLICY, path))
                           for key in ("defender", "adversary"))
    reward = _table(data, "reward", _REWARD, path)
    _reward_keys(reward, path)
    diversity = _table(data, "diversity", _DIVERSITY, path)
    seeds = list(data.get("seed_prompts", []))
    if "seed_file" in data:
        seeds += _seed_file(path, data["seed_file"])
    if not seeds and game.conditional_adversary:
        raise ValueError(f"{path}: the adversary rewrites seed prompts (conditional_adversary = "
                         "true): give seed_prompts = [...] or seed_file")
    out = data.get("out", os.path.splitext(os.path.basename(path))[0])
    check_output_dir(out, f"{path}: out")
    report = data.get("report_to", "none")
    return {"game": game, "defender": defender, "adversary": adversary, "reward": reward,
            "diversity": diversity, "seed_prompts": seeds, "out": out,
            "report_to": [report] if isinstance(report, str) else list(report)}


def _spec(section: dict[str, Any]) -> PolicySpec:
    if "stop_token_ids" in section:  # a tuple: the spec is frozen, and so are its fields
        section["stop_token_ids"] = tuple(section["stop_token_ids"])
    return PolicySpec(**section)


def _policy(spec: PolicySpec, name: str, tiny_tokenizer):
    from backends.hf import GenerationSettings, HFPolicy  # noqa: PLC0415

    if spec.model == "tiny":
        from backends.tiny import tiny_llama  # noqa: PLC0415

        tok = tiny_tokenizer()
        model = tiny_llama(tok, hidden_size=spec.hidden_size, layers=spec.layers, seed=spec.init_seed)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

        if not os.path.isdir(spec.model):
            raise ValueError(
                f"[{name}] model must be 'tiny' or a local folder with a transformers model, "
                f"got {spec.model!r} (nothing is downloaded)"
            )
        kw = {"local_files_only": True, "trust_remote_code": False}
        if spec.gguf_file:
            kw["gguf_file"] = spec.gguf_file
        tok = AutoTokenizer.from_pretrained(spec.model, **kw)
        model = AutoModelForCausalLM.from_pretrained(spec.model, **kw)
    peft_config = None
    if spec.lora_r > 0:
        from peft import LoraConfig  # noqa: PLC0415

        peft_config = LoraConfig(r=spec.lora_r, lora_alpha=2 * spec.lora_r, target_modules="all-linear")
    gen = GenerationSettings(max_new_tokens=spec.max_new_tokens, temperature=spec.temperature,
                             top_p=spec.top_p, repetition_penalty=spec.repetition_penalty)
    return HFPolicy(model, tok, template=spec.template, generation=gen, objective=spec.objective,
                    lr=spec.lr, optimizer=spec.optimizer, fit_tol=spec.fit_tol,
                    max_fit_steps=spec.max_fit_steps, micro_batch_size=spec.micro_batch_size,
                    generation_batch_size=spec.generation_batch_size,
                    stop_token_ids=list(spec.stop_token_ids) or None,
                    gradient_checkpointing=spec.gradient_checkpointing,
                    device=spec.device, dtype=spec.dtype, peft_config=peft_config,
                    truncate_prompts=spec.truncate_prompts, name=name)


def _reward(cfg: Mapping[str, Any]):
    from backends import rewards  # noqa: PLC0415

    kind = cfg.get("kind", "lexical")
    if kind == "lexical":
        return rewards.LexicalReward()
    if kind == "keywords":
        words = {w.lower() for w in cfg.get("words", [])}
        if not words:
            raise ValueError("[reward] kind='keywords' needs a non-empty 'words' list")

        def share(prompts, responses):
            out = []
            for r in responses:
                toks = re.findall(r"[a-z']+", r.lower())
                out.append(sum(t in words for t in toks) / len(toks) if toks else 0.0)
            return out

        return rewards.CallableReward(share, name="keywords")
    if kind == "classifier":
        if "path" not in cfg or "label" not in cfg:
            raise ValueError("[reward] kind='classifier' needs 'path' (a local folder) and 'label'")
        return rewards.SequenceClassifierReward.from_pretrained(cfg["path"], label=cfg["label"],
                                                                template=cfg.get("template"))
    raise ValueError(f"[reward] kind must be 'lexical', 'keywords' or 'classifier', got {kind!r}")


def build_run(cfg: Mapping[str, Any]):
    """Build ``(defender, adversary, reward, diversity, diversity_metrics)`` from a loaded config."""
    from backends import diversity as div  # noqa: PLC0415

    cache: dict[str, Any] = {}

    def tiny_tokenizer():
        if "tok" not in cache:
            from backends.tiny import HARMLESS_SENTENCES, train_tokenizer  # noqa: PLC0415

            cache["tok"] = train_tokenizer(list(HARMLESS_SENTENCES) + list(cfg["seed_prompts"]), vocab_size=512)
        return cache["tok"]

    defender = _policy(cfg["defender"], "defender", tiny_tokenizer)
    adversary = _policy(cfg["adversary"], "adversary", tiny_tokenizer)
    reward = _reward(cfg["reward"])
    dcfg = cfg["diversity"]
    kind = dcfg.get("embedder", "hashing")
    if kind not in ("hashing", "minilm"):
        raise ValueError(f"[diversity] embedder must be 'hashing' or 'minilm', got {kind!r}")
    embedder = div.HashingEmbedder() if kind == "hashing" else div.MiniLMEmbedder()
    kwargs = {k: dcfg[k] for k in ("bleu_weight", "embed_weight") if k in dcfg}
    diversity = div.DiversityReward(embedder=embedder, form=dcfg.get("form", "code"), **kwargs)
    return defender, adversary, reward, diversity, (lambda prompts: div.diversity_metrics(prompts, embedder))


def train_from_toml(path: str, out: str | None = None, resume: bool = True) -> int:
    """Run the config at ``path``; write checkpoints, ``metrics.md``, ``metrics.json``, a plot."""
    from backends.report import metrics_table, plot_metrics, progress  # noqa: PLC0415
    from backends.tracking import combine, report_to  # noqa: PLC0415

    cfg = load_config(path)
    out = check_output_dir(out, "--out") if out is not None else cfg["out"]
    os.makedirs(out, exist_ok=True)
    defender, adversary, reward, diversity, div_metrics = build_run(cfg)
    game: GameConfig = cfg["game"]
    tracker = report_to(cfg["report_to"], log_dir=os.path.join(out, "tracking"), config=game)
    on_round, close = progress(game.rounds)
    try:
        result: GameResult = run_game(
            defender, adversary, reward, game, seed_prompts=cfg["seed_prompts"],
            diversity=diversity if game.beta_div > 0 else None, diversity_metrics=div_metrics,
            checkpoint_dir=os.path.join(out, "checkpoint"), resume=resume,
            on_round=combine(on_round, tracker))
    finally:
        close()
        tracker.close()
    table = metrics_table(result)
    atomic_write_text(os.path.join(out, "metrics.md"), table + "\n")
    atomic_write_text(os.path.join(out, "metrics.json"),
                json.dumps([{"round": log.round, **log.metrics} for log in result.logs], indent=1))
    png = plot_metrics(result, os.path.join(out, "metrics.png"), title=os.path.basename(path))
    print(table)
    print(f"\nwrote {out}/metrics.md, metrics.json, {os.path.basename(png)} and checkpoint/", file=sys.stderr)
    return 0
