"""Loads the nbval tolerance plugin for `pytest --nbval` run from the repository root (see tests/nbval_tolerance.py)."""

pytest_plugins = ["tests.nbval_tolerance"]
