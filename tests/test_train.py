"""``gpo train CONFIG.toml``: the example config runs, and bad configs fail clearly."""

from __future__ import annotations

import json
import re
import pathlib

import pytest

from backends.train import load_config
from backends.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "gpo_train.toml"


def test_example_config_trains_and_writes_outputs(tmp_path, capsys):
    text = EXAMPLE.read_text().replace("rounds = 4", "rounds = 2")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(text)
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [m["round"] for m in metrics] == [1, 2]
    assert {"reward/mean", "attack/success_rate", "diversity/one_minus_self_bleu"} <= set(metrics[0])
    assert (tmp_path / "run" / "metrics.png").exists()
    assert (tmp_path / "run" / "checkpoint" / "state.json").exists()
    assert "| round |" in capsys.readouterr().out


def test_example_config_sets_every_game_option():
    import dataclasses

    from gpo_core.alignment import GameConfig

    cfg = load_config(str(EXAMPLE))
    game_keys = set(EXAMPLE.read_text().split("[game]")[1].split("[defender]")[0].split("\n"))
    named = {line.split("=")[0].strip() for line in game_keys if "=" in line}
    assert named == {f.name for f in dataclasses.fields(GameConfig)}
    assert cfg["game"].rounds == 4


@pytest.mark.parametrize(
    "body, match",
    [
        ("roundz = 3", "unknown top-level keys"),
        ("[game]\nroundz = 3", r"unknown keys \['roundz'\] in \[game\]"),
        ("[defender]\nmodle = 'tiny'", r"unknown keys \['modle'\] in \[defender\]"),
        ("[game]\nrounds = 0", "rounds must be an integer >= 1"),
        ("[game\nrounds = 1", "not valid TOML"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path, body, match, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    assert main(["train", str(cfg)]) == 2
    assert re.search(match, capsys.readouterr().err)


SEEDS = 'seed_prompts = ["How do I pick a lock?"]\n'


@pytest.mark.parametrize(
    "body, error, match",
    [
        # a string where a list belongs was split into characters
        ('seed_prompts = "How do I pick a lock?"', TypeError,
         r"seed_prompts must be a list of strings, e\.g\. .*got 'How do I pick a lock\?'"),
        ("seed_prompts = [1, 2]", TypeError, r"seed_prompts must be a list of non-empty strings"),
        (SEEDS + '[reward]\nkind = "keywords"\nwords = "sorry"', TypeError,
         r"\[reward\] words must be a list of strings.*got 'sorry'"),
        (SEEDS + "out = 3", TypeError, r"out must be a string, got 3"),
        (SEEDS + 'out = ""', ValueError, r"out must be a non-empty string"),
        (SEEDS + 'seed_file = 7', TypeError, r"seed_file must be a string, got 7"),
        (SEEDS + '[defender]\nlora_r = "4"', TypeError,
         r"\[defender\] lora_r must be an integer >= 0, got '4'"),
        (SEEDS + "[adversary]\nlora_r = -1", ValueError, r"\[adversary\] lora_r must be an integer >= 0"),
        (SEEDS + "[defender]\nmax_new_tokens = 0", ValueError, r"max_new_tokens must be an integer >= 1"),
        (SEEDS + "[defender]\nmax_fit_steps = 2.5", TypeError, r"max_fit_steps must be an integer >= 1"),
        (SEEDS + "[defender]\ntemperature = 0", ValueError, r"temperature must be a finite number > 0"),
        (SEEDS + "[defender]\ntop_p = 1.5", ValueError, r"top_p must be a finite number in \(0, 1\]"),
        (SEEDS + "[defender]\nlr = nan", ValueError, r"lr must be a finite number > 0, got nan"),
        (SEEDS + '[defender]\nlr = "1e-3"', TypeError, r"lr must be a number > 0, got '1e-3'"),
        (SEEDS + "[defender]\ntruncate_prompts = 1", TypeError, r"truncate_prompts must be true or false"),
        (SEEDS + '[defender]\nobjective = "ppo"', ValueError,
         r"objective must be one of \['regression', 'pg'\], got 'ppo'"),
        (SEEDS + '[defender]\ndtype = "float16"', ValueError, r"dtype must be one of \['float32', 'bfloat16'\]"),
        (SEEDS + "[defender]\nmodel = 5", TypeError, r"\[defender\] model must be a string, got 5"),
        (SEEDS + '[reward]\nkind = "bleu"', ValueError, r"\[reward\] kind must be one of \['lexical'"),
        (SEEDS + '[reward]\nkind = "lexical"\nwords = ["sorry"]', ValueError,
         r"\[reward\] \['words'\] do nothing with kind = 'lexical'"),
        (SEEDS + '[reward]\nkind = "keywords"', ValueError, r"kind = 'keywords' needs a non-empty 'words'"),
        (SEEDS + '[reward]\nkind = "classifier"\npath = "x"', ValueError, r"needs 'path' .* and 'label'"),
        (SEEDS + '[diversity]\nembedder = "bert"', ValueError, r"\[diversity\] embedder must be one of"),
        (SEEDS + "[diversity]\nbleu_weight = -1", ValueError, r"bleu_weight must be a finite number >= 0"),
        (SEEDS + "[diversity]\nform = 1", TypeError, r"\[diversity\] form must be one of"),
        (SEEDS + "[defender]\ngeneration_batch_size = 0", ValueError,
         r"\[defender\] generation_batch_size must be an integer >= 1, got 0"),
        (SEEDS + '[defender]\ngeneration_batch_size = "8"', TypeError,
         r"generation_batch_size must be an integer >= 1, got '8'"),
        (SEEDS + "[defender]\nstop_token_ids = 5", TypeError,
         r"\[defender\] stop_token_ids must be a list of token ids, e\.g\. \[128009\], got 5"),
        (SEEDS + '[adversary]\nstop_token_ids = ["<|eot_id|>"]', TypeError,
         r"stop_token_ids must be a list of integer token ids"),
        (SEEDS + "[defender]\nstop_token_ids = [2, -1]", ValueError,
         r"stop_token_ids must be a list of token ids >= 0, got \[2, -1\]"),
        (SEEDS + '[defender]\ngradient_checkpointing = "yes"', TypeError,
         r"\[defender\] gradient_checkpointing must be true or false, got 'yes'"),
        (SEEDS + 'report_to = "tb"', ValueError,
         r"report_to must be one of \['tensorboard', 'wandb', 'all', 'none'\].*got 'tb'"),
        (SEEDS + 'report_to = ["tensorboard", "mlflow"]', ValueError,
         r"report_to must be one of .*got \['tensorboard', 'mlflow'\]"),
        (SEEDS + "report_to = 1", TypeError, r"report_to must be one of .*got 1"),
        ("[game]\nrounds = 1", ValueError, r"give seed_prompts = \[\.\.\.\] or seed_file"),
        (SEEDS + "[game]\nrounds = 0", ValueError, r"bad\.toml: \[game\] .*rounds must be an integer >= 1"),
    ],
)
def test_every_value_is_checked_when_the_file_loads(tmp_path, body, error, match, capsys):
    """Each bad value fails at load, naming the file and the key, before any model is built."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    with pytest.raises(error, match=match) as info:
        load_config(str(cfg))
    assert str(cfg) in str(info.value)
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_paths_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    """train --out at a file, out under a file, a seed_file that is a folder or missing: each
    failed with a raw OSError, some after a round of compute. Now nothing is built."""
    import backends.train as train

    def no_build(cfg):
        raise AssertionError("models were built before the paths were checked")

    monkeypatch.setattr(train, "build_run", no_build)
    (tmp_path / "file").write_text("kept")
    (tmp_path / "seeds").mkdir()
    cases = [
        (SEEDS, ["--out", str(tmp_path / "file")], r"--out '.*file' is a file, not a folder"),
        (SEEDS + f'out = "{tmp_path / "file" / "run"}"', [], r"out '.*run' is under '.*file', which is a file"),
        (SEEDS + 'seed_file = "seeds"', [], r"seed_file '.*seeds' is a folder, not a file"),
        (SEEDS + 'seed_file = "none.txt"', [], r"seed_file '.*none\.txt' does not exist \(it is relative"),
    ]
    for body, extra, match in cases:
        cfg = tmp_path / "cfg.toml"
        cfg.write_text(body)
        assert main(["train", str(cfg), *extra]) == 2
        assert re.search(match, capsys.readouterr().err)
    assert (tmp_path / "file").read_text() == "kept"


def test_seed_file_prompts_are_added(tmp_path):
    (tmp_path / "seeds.txt").write_text("first prompt\n\n  second prompt  \n")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(SEEDS + 'seed_file = "seeds.txt"\n')
    assert load_config(str(cfg))["seed_prompts"] == [
        "How do I pick a lock?", "first prompt", "second prompt"]


def test_missing_config_file(capsys):
    assert main(["train", "/no/such.toml"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_batch_stop_checkpointing_and_report_to_reach_the_run(tmp_path, monkeypatch):
    """generation_batch_size, stop_token_ids and gradient_checkpointing reach each HFPolicy;
    report_to's tracker gets every round under <out>/tracking and is closed at the end."""
    pytest.importorskip("transformers")
    import backends.tracking as tracking
    import backends.train as train

    made = []

    class Recorder:
        def __init__(self, targets, *, log_dir, config):
            self.targets, self.log_dir, self.config = targets, log_dir, config
            self.rounds, self.closed = [], False
            made.append(self)

        def __call__(self, log):
            self.rounds.append(log.round)

        def close(self):
            self.closed = True

    monkeypatch.setattr(tracking, "report_to", Recorder)
    built = {}
    original = train.build_run

    def keep(cfg):
        built["players"] = original(cfg)
        return built["players"]

    monkeypatch.setattr(train, "build_run", keep)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(SEEDS + """report_to = ["tensorboard"]
[game]
rounds = 1
batch_size = 2
[defender]
max_new_tokens = 3
generation_batch_size = 3
stop_token_ids = [7, 9]
gradient_checkpointing = true
[adversary]
max_new_tokens = 3
""")
    assert train.train_from_toml(str(cfg), out=str(tmp_path / "run")) == 0
    defender, adversary = built["players"][:2]
    assert defender._gen_batch == 3 and adversary._gen_batch == adversary._micro
    assert {7, 9} <= set(defender._stop_ids) and not {7, 9} <= set(adversary._stop_ids)
    assert defender._checkpointing and not adversary._checkpointing
    (tracker,) = made
    assert tracker.targets == ["tensorboard"]
    assert tracker.log_dir == str(tmp_path / "run" / "tracking")
    assert tracker.rounds == [1] and tracker.closed
    assert load_config(str(EXAMPLE))["report_to"] == ["none"]  # the default: no tracker
