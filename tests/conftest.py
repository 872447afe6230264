"""Shared fixtures: small datasets in the xlsa17 layout, written to temporary folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import AWA1_ATT


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """An AWA1-shaped surrogate at 2% of the images and d_v = 128, from the real AWA1 attributes when present."""
    from izf_lib.prepare import prepare_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    att_file = AWA1_ATT if AWA1_ATT.is_file() else None
    prepare_synthetic(root, like="AWA1", att_file=att_file, scale=0.02, d_v=128, noise=1.0, seed=0, name="SYN")
    return root
