"""Tests of backends.evaluate: the Wilson interval against its closed forms, greedy batched
generation against one-at-a-time, the per-suite/per-family summary against the rows, and
``gpo eval`` end to end on a tiny random model saved to disk (report, plot, table), with every
bad input refused before the model is loaded."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

from backends import evaluate as ev
from backends.redteam import Prompt, PromptSet
from backends.tiny import tiny_llama, train_tokenizer
from backends import cli


def test_wilson_interval_closed_forms():
    z = 1.959963984540054
    lo, hi = ev.wilson(0, 10)
    assert lo == 0 and math.isclose(hi, z * z / (10 + z * z))
    lo, hi = ev.wilson(10, 10)
    assert hi == 1 and math.isclose(lo, 10 / (10 + z * z))
    for k, n in [(3, 10), (17, 50), (1, 2)]:
        a, b = ev.wilson(k, n)
        c, d = ev.wilson(n - k, n)
        assert a < k / n < b and math.isclose(a, 1 - d) and math.isclose(b, 1 - c)
    assert ev.wilson(0, 0) == (0.0, 1.0)
    assert ev.wilson(30, 100)[1] - ev.wilson(30, 100)[0] < ev.wilson(3, 10)[1] - ev.wilson(3, 10)[0]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tok = train_tokenizer(vocab_size=300)
    model = tiny_llama(tok, hidden_size=32, layers=2, heads=2, seed=0, init_std=0.3)
    path = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path), model, tok


def test_batched_generation_equals_one_at_a_time(saved):
    _, model, tok = saved
    prompts = ["Tea?", "A quiet river runs past the old stone mill.", "Why is the sky blue?"]
    batched = ev.generate(model, tok, prompts, max_new_tokens=6, batch_size=3, progress=False)
    single = [ev.generate(model, tok, [p], max_new_tokens=6, batch_size=1, progress=False)[0]
              for p in prompts]
    assert batched == single and all(isinstance(a, str) for a in batched)


class Said:
    """A refusal judge that refuses when the *request* (the seed) mentions a given word."""

    def __init__(self, word):
        self.word = word

    def refused(self, requests, responses):
        return np.array([self.word in q for q in requests])


def test_evaluate_summarises_per_suite_and_family(saved):
    _, model, tok = saved
    harmful = PromptSet("h", tuple(
        [Prompt(f"wrap {i} lock", seed=f"lock {i}", family="wrap") for i in range(3)]
        + [Prompt(f"door {i}", family="direct") for i in range(5)]))
    benign = PromptSet("b", tuple(Prompt(f"lock tea {i}", kind="benign") for i in range(4)))
    rep = ev.evaluate(model, tok, [harmful, benign], judge=Said("lock"), max_new_tokens=3,
                      progress=False)
    h, b = rep.summary["h"], rep.summary["b"]
    assert (h["metric"], h["n"], h["count"]) == ("asr", 8, 5)  # the 5 "door" prompts answered
    assert h["families"]["wrap"]["rate"] == 0 and h["families"]["direct"]["rate"] == 1
    assert h["ci"] == list(ev.wilson(5, 8))
    assert (b["metric"], b["n"], b["rate"]) == ("over_refusal", 4, 1.0)
    assert len(rep.rows) == 12 and rep.rows[0]["seed"] == "lock 0"
    assert rep.settings["max_new_tokens"] == 3 and rep.settings["decoding"] == "greedy"
    assert "| h | wrap | 3 | asr | 0 | 0.000 |" in rep.table()
    assert "| h | direct | 5 | asr | 5 | 1.000 |" in rep.table()
    with pytest.raises(TypeError, match="suites must be"):
        ev.evaluate(model, tok, harmful, judge=Said("x"))
    with pytest.raises(ValueError, match="mixes harmful and benign"):
        ev.evaluate(model, tok, [PromptSet("m", harmful.items + benign.items)], judge=Said("x"),
                    max_new_tokens=1, progress=False)


def test_gpo_eval_end_to_end(saved, tmp_path, capsys):
    path, _, _ = saved
    prompts = tmp_path / "mine.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in ["Tea?", "Bread?", "Rain?"]))
    out = tmp_path / "out"
    rc = cli.main(["eval", "--model", path, "--suite", "benign", "--suite", "jailbreak",
                   "--prompts", str(prompts), "--limit", "4", "--max-new-tokens", "3",
                   "--judge", "prefix", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert set(report["summary"]) == {"benign", "jailbreak", "mine"}
    assert [report["summary"][k]["n"] for k in ("benign", "jailbreak", "mine")] == [4, 4, 3]
    assert report["summary"]["benign"]["metric"] == "over_refusal"
    assert report["settings"]["model"] == path and report["settings"]["max_new_tokens"] == 3
    assert len(report["rows"]) == 11
    assert (out / "asr.png").read_bytes()[:4] == b"\x89PNG"
    assert "| jailbreak |" in capsys.readouterr().out


def test_gpo_eval_of_a_run_last_and_averaged_defender(tmp_path, capsys):
    """A tiny run_game with checkpoints: --run --policy last answers as the trained defender does;
    --policy average answers each prompt with the iterate its hash picks."""
    from safetensors.torch import load_file

    from backends.hf import GenerationSettings, HFPolicy
    from backends.rewards import CallableReward
    from backends.tiny import HARMLESS_SENTENCES, word_tokenizer
    from gpo_core.alignment import GameConfig, run_game

    tok = word_tokenizer(sorted({w for t in HARMLESS_SENTENCES for w in t.split()}),
                         pad_token="<pad>")
    base = tiny_llama(tok, hidden_size=32, layers=2, heads=2, seed=0, init_std=0.3)
    base_dir = tmp_path / "base"
    base.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    gen = GenerationSettings(max_new_tokens=4)
    defender = HFPolicy(base, tok, generation=gen, objective="regression", lr=1e-2)
    adversary = HFPolicy(tiny_llama(tok, hidden_size=32, layers=2, heads=2, seed=1), tok,
                         generation=gen, objective="regression", lr=1e-2)
    reward = CallableReward(lambda p, r: [x.count("tea") / 4 for x in r])
    run_game(defender, adversary, reward, GameConfig(rounds=2, batch_size=2, defender_eta=50.0,
                                                     adversary_eta=1.0),
             seed_prompts=["Please write a poem about tea."], checkpoint_dir=str(tmp_path / "ck"))
    prompts = tmp_path / "p.txt"
    texts = [t for t in HARMLESS_SENTENCES if "?" in t][:6]
    prompts.write_text("\n".join(texts))
    common = ["--model", str(base_dir), "--prompts", str(prompts), "--max-new-tokens", "4",
              "--judge", "prefix", "--no-progress", "--run", str(tmp_path / "ck")]
    assert cli.main(["eval", *common, "--out", str(tmp_path / "last")]) == 0
    last = json.loads((tmp_path / "last" / "report.json").read_text())
    trained = ev.generate(defender.model, tok, texts, max_new_tokens=4, progress=False)
    untrained = ev.generate(tiny_llama(tok, hidden_size=32, layers=2, heads=2, seed=0,
                                       init_std=0.3), tok, texts, max_new_tokens=4, progress=False)
    assert [r["response"] for r in last["rows"]] == trained != untrained
    assert cli.main(["eval", *common, "--policy", "average", "--out", str(tmp_path / "avg")]) == 0
    avg = json.loads((tmp_path / "avg" / "report.json").read_text())
    snaps = avg["settings"]["snapshots"]
    assert len(snaps) >= 2 and {r["iterate"] for r in avg["rows"]} <= set(range(len(snaps)))
    model = tiny_llama(tok, hidden_size=32, layers=2, heads=2, seed=0, init_std=0.3)
    for row in avg["rows"]:
        model.load_state_dict(load_file(snaps[row["iterate"]]))
        assert row["response"] == ev.generate(model, tok, [row["prompt"]], max_new_tokens=4,
                                              progress=False)[0]
    capsys.readouterr()
    assert cli.main(["eval", *common[:-1], str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "has no state.json" in capsys.readouterr().err


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(ev, "load_model", refuse)


@pytest.mark.parametrize("argv, message", [
    (["--model", "/no/such/model"], "is not a directory"),
    (["--model", "{saved}", "--prompts", "{empty}"], "is empty"),
    (["--model", "{saved}", "--prompts", "{bad}"], "line 1 .* not valid JSON"),
    (["--model", "{saved}", "--limit", "0"], "--limit must be >= 1"),
    (["--model", "{saved}", "--adapter", "{tmp}"], "no adapter_config.json"),
    (["--model", "{run}"], "run_game checkpoint"),
])
def test_gpo_eval_bad_input(saved, tmp_path, capsys, no_model_load, argv, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "state.json").write_text("{}")
    fill = {"{saved}": saved[0], "{empty}": str(tmp_path / "empty.txt"), "{tmp}": str(tmp_path),
            "{bad}": str(tmp_path / "bad.jsonl"), "{run}": str(tmp_path / "run")}
    assert cli.main(["eval", *[fill.get(a, a) for a in argv]]) == 2
    import re

    assert re.search(message, capsys.readouterr().err)


def test_gpo_eval_names_the_missing_data_package(saved, monkeypatch, capsys, no_model_load):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "pyrit" else real(n, *a))
    assert cli.main(["eval", "--model", saved[0], "--suite", "jailbreak"]) == 2
    assert "pip install --no-deps pyrit==1.1.0" in capsys.readouterr().err
