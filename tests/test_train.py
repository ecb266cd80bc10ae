"""``gpo train CONFIG.toml``: the example config runs, and bad configs fail clearly."""

from __future__ import annotations

import json
import re
import pathlib

import pytest

from backends.train import load_config
from gpo_core.cli import main

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


def test_missing_config_file(capsys):
    assert main(["train", "/no/such.toml"]) == 2
    assert "does not exist" in capsys.readouterr().err
