"""gpo export: a run's player as a model folder that transformers and gpo eval load back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from backends.cli import main
from backends.export import export, load_mixture
from backends.hf import GenerationSettings, HFPolicy
from backends.rewards import CallableReward
from backends.tiny import tiny_llama, word_tokenizer
from gpo_core.alignment import GameConfig, run_game

WORDS = ["yes", "no", "tea", "please", "why"]


def _base(tmp_path):
    tok = word_tokenizer(WORDS, pad_token="<pad>")
    folder = tmp_path / "base"
    tiny_llama(tok, 16, 1, seed=0, heads=2).save_pretrained(folder)
    tok.save_pretrained(folder)
    return tok, str(folder)


def _run(tmp_path, tok, base, peft_config=None, rounds=3, **kw):
    players = [HFPolicy(AutoModelForCausalLM.from_pretrained(base), tok,
                        generation=GenerationSettings(max_new_tokens=3), peft_config=peft_config,
                        name=name, **kw) for name in ("defender", "adversary")]
    reward = CallableReward(lambda p, r: [float("tea" in x) for x in r])
    ckpt = tmp_path / "ckpt"
    res = run_game(*players, reward, GameConfig(rounds=rounds, batch_size=2,
                                               conditional_adversary=False, defender_eta=2.0,
                                               adversary_eta=2.0), checkpoint_dir=ckpt)
    return players[0], res, str(ckpt)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


def test_the_last_iterate_exports_as_a_plain_model_that_transformers_loads(tmp_path):
    tok, base = _base(tmp_path)
    defender, _, ckpt = _run(tmp_path, tok, base)
    out = tmp_path / "exported"
    assert main(["export", "--model", base, "--run", ckpt, "--out", str(out)]) == 0
    loaded = AutoModelForCausalLM.from_pretrained(out)
    ids = tok("why tea please")["input_ids"]
    torch.testing.assert_close(_logits(loaded, ids), _logits(defender.model, ids))
    original = AutoModelForCausalLM.from_pretrained(base)
    assert not torch.allclose(_logits(original, ids), _logits(loaded, ids))  # it trained
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_average_exports_every_iterate_and_samples_their_mixture(tmp_path):
    tok, base = _base(tmp_path)
    _, res, ckpt = _run(tmp_path, tok, base)
    out = tmp_path / "avg"
    export(base, ckpt, str(out), iterate="average")
    meta = json.loads((out / "mixture.json").read_text())
    assert meta["iterates"] == ["iterate_0", "iterate_1", "iterate_2"]
    assert meta["weights"] == pytest.approx([1 / 3] * 3)
    ids = tok("tea")["input_ids"]
    for folder, snap in zip(meta["iterates"], res.defender_iterates):
        model = AutoModelForCausalLM.from_pretrained(base)
        model.load_state_dict(snap)
        torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(out / folder), ids),
                                   _logits(model, ids))
    answers, picks = load_mixture(str(out)).generate(["tea", "why", "yes", "no"],
                                                     np.random.default_rng(0), max_new_tokens=2,
                                                     progress=False)
    assert len(answers) == 4 and set(picks) <= {0, 1, 2}


# What is checked is the export; whether a rank-2 adapter reaches the fit's tolerance depends on
# its random init, so the budget warning is not this test's business.
@pytest.mark.filterwarnings("ignore:.*the fit used its whole budget:RuntimeWarning")
def test_a_lora_run_exports_its_adapter_or_merged(tmp_path):
    from peft import LoraConfig, PeftModel

    tok, base = _base(tmp_path)
    torch.manual_seed(0)  # init_lora_weights=False draws from the global stream: not test order
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    # rank-2 adapters on q and v cannot fit these targets to 1e-2: a loose tolerance here
    defender, _, ckpt = _run(tmp_path, tok, base, peft_config=lora, rounds=2, fit_tol=0.5)
    adapter = tmp_path / "adapter"
    defender.model.save_pretrained(adapter)  # the structure (its weights are replaced)
    ids = tok("tea please")["input_ids"]
    want = _logits(defender.model, ids)
    export(base, ckpt, str(tmp_path / "a"), adapter=str(adapter))
    applied = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "a")
    torch.testing.assert_close(_logits(applied, ids), want)
    export(base, ckpt, str(tmp_path / "m"), adapter=str(adapter), merge=True)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(_logits(merged, ids), want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kw, error, match", [
    (dict(player="judge"), ValueError, "player must be 'defender' or 'adversary'"),
    (dict(iterate="best"), ValueError, "iterate must be 'last', 'average'"),
    (dict(iterate=7), ValueError, "not among the run's kept iterates"),
    (dict(merge="yes"), TypeError, "merge must be True or False"),
])
def test_bad_export_arguments_are_named_before_any_model_loads(tmp_path, kw, error, match):
    tok, base = _base(tmp_path)
    _, _, ckpt = _run(tmp_path, tok, base, rounds=1)
    with pytest.raises(error, match=match):
        export(base, ckpt, str(tmp_path / "out"), **kw)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(ValueError, match="not an empty folder"):
        export(base, ckpt, str(tmp_path / "full"))
    with pytest.raises(FileNotFoundError, match="has no state.json"):
        export(base, str(tmp_path), str(tmp_path / "o2"))
    assert (tmp_path / "full" / "x").read_text() == "keep"
