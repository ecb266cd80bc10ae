"""The README's promises: its quickstart runs, and CI runs exactly its test command."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_first_lines_are_the_two_setup_commands():
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block is not None and README.index("```sh") < 120, "the commands must come first"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].endswith("gpo demo")
    assert "pytest" in lines[1]


def test_ci_runs_exactly_the_readmes_test_command():
    """.ci/run takes the command from README.md itself (not a copy that can drift) and runs it
    verbatim; --print shows what it runs."""
    lines = [line for line in re.search(r"```sh\n(.*?)```", README, re.S).group(1).splitlines()
             if line.strip()]
    shown = subprocess.run(["bash", str(ROOT / ".ci" / "run"), "--print"], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == lines[1] + "\n"
    script = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert script[-1] == 'exec bash -c "$cmd"'  # the line itself, nothing added around it


def test_ci_run_executes_the_second_line_of_any_readme(tmp_path):
    """The mechanism on a stand-in README: the second line runs, as written, with CI=true (so the
    suite's skip policy applies); the first line does not."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "README.md").write_text(
        "# x\n\n```sh\necho first > first.txt\nprintf '%s|%s' \"$CI\" 'a  b' > second.txt\n```\n"
        "\n```sh\necho later > later.txt\n```\n"
    )
    proc = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], cwd="/", capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "second.txt").read_text() == "true|a  b"
    assert not (tmp_path / "first.txt").exists() and not (tmp_path / "later.txt").exists()
    (tmp_path / "README.md").write_text("# no commands\n")
    proc = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "no second command line" in proc.stderr


def test_quickstart_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "the README has a python quickstart"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
