"""Helpers of examples/gpo_experiment.py (a package, so that tests/test_examples.py, which runs every
examples/*.py as a script, runs only the experiment script itself)."""
