"""Shared fixtures: small datasets in the xlsa17 layout, written to temporary folders."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """An AWA1-shaped surrogate at 2% of the images and d_v = 128, with the real (bundled) AWA1 attributes."""
    from izf_lib.prepare import prepare_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(root, like="AWA1", scale=0.02, d_v=128, noise=1.0, seed=0, name="SYN")
    return root
