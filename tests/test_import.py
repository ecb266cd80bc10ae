"""The public surface: importing gpo_core stays light, and every exported name resolves."""

from __future__ import annotations

import subprocess
import sys

import gpo_core as gc

# torch is imported by conftest in this process, so the check must run in a fresh interpreter.
_CHECK = (
    "import sys, gpo_core; "
    "heavy = sorted(m for m in ('torch', 'transformers', 'pyspiel', 'cvxpy', 'array_api_compat') "
    "if m in sys.modules); "
    "assert not heavy, heavy"
)


def test_import_gpo_core_loads_no_torch_or_transformers():
    result = subprocess.run(
        [sys.executable, "-c", _CHECK], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_every_name_in_all_resolves_and_is_documented():
    assert len(gc.__all__) == len(set(gc.__all__)), "duplicate names in gpo_core.__all__"
    for name in gc.__all__:
        obj = getattr(gc, name)  # AttributeError names the missing export
        assert obj.__doc__ and obj.__doc__.strip(), f"gpo_core.{name} has no docstring"
    assert isinstance(gc.__version__, str) and gc.__version__


def test_star_import_exports_exactly_all():
    namespace: dict[str, object] = {}
    exec("from gpo_core import *", namespace)  # noqa: S102
    assert set(namespace) - {"__builtins__"} == set(gc.__all__)


def test_gpo_core_never_imports_backends_or_proofs_check():
    """The arrows run one way: backends and proofs_check import gpo_core, never the reverse
    (not even lazily inside a function; the CLI that joins them lives in backends.cli)."""
    import ast
    import pathlib

    offenders = []
    for path in sorted(pathlib.Path(gc.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names
                          if n.split(".")[0] in ("backends", "proofs_check")]
    assert not offenders, offenders
    assert (pathlib.Path(gc.__file__).parent / "cli.py").exists() is False


def test_the_gpo_command_is_backends_cli():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "gpo"]
    assert script.value == "backends.cli:main"
