"""The README's promises: its quickstart runs, and CI runs exactly its test command."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_first_lines_are_the_two_setup_commands():
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block is not None and README.index("```sh") < 120, "the commands must come first"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].endswith("gpo demo")
    assert "pytest" in lines[1]
    assert lines[1] in (ROOT / ".ci" / "run").read_text(), ".ci/run must run the README's test command"


def test_quickstart_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "the README has a python quickstart"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
