"""``gpo train CONFIG.toml``: the GPO loop from a config file, with every option of the loop.

A config has top-level ``out`` (folder for checkpoints, table, plot) and ``seed_prompts`` (a list)
or ``seed_file`` (one prompt per line, relative to the config), and five tables:

* ``[game]`` -- any field of :class:`gpo_core.alignment.GameConfig` (rounds, schedule,
  defender_steps, adversary_steps, defender_eta, adversary_eta, defender_alpha, adversary_alpha,
  kl_anchor, batch_size, responses_per_prompt, prompts_per_context, beta_div, seed_mix, conditional_adversary,
  output, attack_threshold, snapshot_every, gap_every, gap_steps, gap_eta, seed);
* ``[defender]`` and ``[adversary]`` -- ``model`` (``"tiny"``: a random tiny Llama built on the
  spot over a tokenizer trained on the seed prompts; or a local folder of a ``transformers``
  causal LM, with optional ``gguf_file``), ``template``, ``max_new_tokens``, ``temperature``,
  ``top_p``, ``repetition_penalty``, ``objective`` (``"regression"``/``"pg"``), ``lr``,
  ``inner_steps``, ``micro_batch_size``, ``device``, ``dtype``, ``lora_r`` (> 0 adds a LoRA
  adapter), ``truncate_prompts``;
* ``[reward]`` -- ``kind = "lexical"`` (toy profanity + refusal scorer), ``"keywords"`` (share of
  the response's words in ``words``) or ``"classifier"`` (a local sequence classifier: ``path``,
  ``label``, optional ``template``);
* ``[diversity]`` -- ``form`` (``"code"``/``"paper"``), ``embedder`` (``"hashing"`` or
  ``"minilm"``), ``bleu_weight``, ``embed_weight``.

Unknown keys are errors that list the valid ones. ``examples/gpo_train.toml`` shows every key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import tomllib
from typing import Any, Mapping

from gpo_core._io import atomic_write_text
from gpo_core._validate import short
from gpo_core.alignment import GameConfig, GameResult, run_game

__all__ = ["PolicySpec", "load_config", "build_run", "train_from_toml"]

_TOP = {"out", "seed_prompts", "seed_file", "game", "defender", "adversary", "reward", "diversity"}


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
    inner_steps: int = 4
    micro_batch_size: int = 16
    device: str | None = None
    dtype: str | None = None
    lora_r: int = 0
    truncate_prompts: bool = False
    hidden_size: int = 64
    layers: int = 2
    init_seed: int = 0


def _table(data: Mapping[str, Any], key: str, allowed: set[str], where: str) -> dict[str, Any]:
    section = data.get(key, {})
    if not isinstance(section, Mapping):
        raise ValueError(f"{where}: [{key}] must be a table, got {short(section)}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} in [{key}]; valid keys: {sorted(allowed)}")
    return dict(section)


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
    game_fields = {f.name for f in dataclasses.fields(GameConfig)}
    spec_fields = {f.name for f in dataclasses.fields(PolicySpec)}
    game = GameConfig.from_dict(_table(data, "game", game_fields, path))
    defender = PolicySpec(**_table(data, "defender", spec_fields, path))
    adversary = PolicySpec(**_table(data, "adversary", spec_fields, path))
    reward = _table(data, "reward", {"kind", "words", "path", "label", "template"}, path)
    diversity = _table(data, "diversity", {"form", "embedder", "bleu_weight", "embed_weight"}, path)
    seeds = list(data.get("seed_prompts", []))
    if "seed_file" in data:
        seed_path = os.path.join(os.path.dirname(os.path.abspath(path)), data["seed_file"])
        with open(seed_path) as fh:
            seeds += [line.strip() for line in fh if line.strip()]
    if any(not isinstance(s, str) for s in seeds):
        raise ValueError(f"{path}: seed_prompts must be strings")
    out = data.get("out", os.path.splitext(os.path.basename(path))[0])
    return {"game": game, "defender": defender, "adversary": adversary, "reward": reward,
            "diversity": diversity, "seed_prompts": seeds, "out": out}


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
                    lr=spec.lr, inner_steps=spec.inner_steps, micro_batch_size=spec.micro_batch_size,
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

    cfg = load_config(path)
    out = out or cfg["out"]
    os.makedirs(out, exist_ok=True)
    defender, adversary, reward, diversity, div_metrics = build_run(cfg)
    game: GameConfig = cfg["game"]
    on_round, close = progress(game.rounds)
    try:
        result: GameResult = run_game(
            defender, adversary, reward, game, seed_prompts=cfg["seed_prompts"],
            diversity=diversity if game.beta_div > 0 else None, diversity_metrics=div_metrics,
            checkpoint_dir=os.path.join(out, "checkpoint"), resume=resume, on_round=on_round)
    finally:
        close()
    table = metrics_table(result)
    atomic_write_text(os.path.join(out, "metrics.md"), table + "\n")
    atomic_write_text(os.path.join(out, "metrics.json"),
                json.dumps([{"round": log.round, **log.metrics} for log in result.logs], indent=1))
    png = plot_metrics(result, os.path.join(out, "metrics.png"), title=os.path.basename(path))
    print(table)
    print(f"\nwrote {out}/metrics.md, metrics.json, {os.path.basename(png)} and checkpoint/", file=sys.stderr)
    return 0
