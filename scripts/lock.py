"""Write constraints.txt: every package of a fresh `pip install -e .[dev]`, pinned (transitive ones included).

`make setup`, `make test`, `.ci/run` and the conda route install with `-c constraints.txt`, so a new
release of any dependency changes nothing until this file is regenerated (`make lock`) and the tests
pass with it. Local version labels are dropped (torch 2.13.0+cpu is pinned as 2.13.0, which the
CPU wheel and PyPI's build both satisfy).

    python scripts/lock.py                 # from a fresh virtual environment in a temporary folder
    python scripts/lock.py --from .venv    # from an environment that is already installed
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"


def frozen(python: Path) -> list[str]:
    """`pip freeze` of an environment, without the project itself and without local version labels."""
    out = subprocess.run([str(python), "-m", "pip", "freeze", "--exclude-editable"], check=True,
                         capture_output=True, text=True).stdout
    pins = []
    for line in out.splitlines():
        if not line or line.startswith("#") or "==" not in line or line.lower().startswith("izf-book"):
            continue
        name, version = line.split("==", 1)
        pins.append(f"{name}=={version.split('+', 1)[0]}")
    return sorted(pins, key=lambda pin: pin.split("==")[0].lower())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="env", type=Path, default=None, help="an installed virtual environment")
    parser.add_argument("--out", type=Path, default=LOCK)
    args = parser.parse_args()
    if args.env is not None:
        pins = frozen(args.env / "bin" / "python")
    else:
        with tempfile.TemporaryDirectory(prefix="izf-lock-") as tmp:
            venv = Path(tmp) / "venv"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-e", f"{ROOT}[dev]"], check=True)
            pins = frozen(venv / "bin" / "python")
    header = [
        "# Every package of `pip install -e .[dev]`, pinned: written by `make lock` (scripts/lock.py).",
        f"# Resolved with Python {platform.python_version()} on {platform.machine()}; the tests passed with these.",
        "# Installed with `pip install -c constraints.txt -e .[dev]` (make setup, .ci/run, environment.yml).",
    ]
    args.out.write_text("\n".join(header + pins) + "\n")
    print(f"wrote {args.out}: {len(pins)} packages")


if __name__ == "__main__":
    main()
