"""Numbers reported elsewhere, shown beside measured ones and always labelled as such.

Sources and certainty: the book's page "Sources" (notebooks/11_sources.ipynb). IZF-Softmax GZSL
values are as listed by public leaderboards (partly confirmed); CZSL T1 values are from
recollection only; IZF-NBC values are unknown. None of these were produced by this project.
"""

from __future__ import annotations

__all__ = ["REPORTED_IZF", "REPORTED_NOTE", "CERTAINTY", "PEER_H"]

REPORTED_NOTE = "reported, unverified (public leaderboards); CZSL T1 from recollection only; IZF-NBC unknown"

# how sure each reported IZF-Softmax score is
CERTAINTY = {"T1": "recollection only", "U": "leaderboards", "S": "leaderboards", "H": "leaderboards"}

# dataset -> {"U", "S", "H", "T1"} for IZF-Softmax
REPORTED_IZF: dict[str, dict[str, float]] = {
    "AWA1": {"U": 61.3, "S": 80.5, "H": 69.6, "T1": 74.3},
    "AWA2": {"U": 60.6, "S": 77.5, "H": 68.0, "T1": 74.5},
    "CUB": {"U": 52.7, "S": 68.0, "H": 59.4, "T1": 67.1},
    "SUN": {"U": 52.7, "S": 57.0, "H": 54.8, "T1": 68.4},
    "APY": {"U": 42.3, "S": 60.5, "H": 49.8, "T1": 44.9},
}

# GZSL H of peers on the same ResNet-101 features: method -> dataset -> H (reported)
PEER_H: dict[str, dict[str, float]] = {
    "f-CLSWGAN": {"AWA1": 59.6, "CUB": 49.7, "SUN": 39.4},
    "f-VAEGAN-D2": {"AWA2": 63.5, "CUB": 53.6, "SUN": 41.3},
    "CADA-VAE": {"AWA1": 64.1, "AWA2": 63.9, "CUB": 52.4, "SUN": 40.6},
    "TF-VAEGAN": {"AWA2": 66.6, "CUB": 58.1, "SUN": 43.0},
}
