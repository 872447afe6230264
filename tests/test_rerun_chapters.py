"""Every chapter reruns through papermill with a seed that is in no stored grid, as a reader would.

Each chapter runs with `seed 12345` (chapters 07 and 08 take `seeds`), with its cheapest settings
(few epochs or iterations) and every output folder under a temporary directory, so that nothing
tracked is written. A chapter either computes to its end or stops at once naming the parameter.
The chapters run two at a time, one thread each (CI has two cores), started once for all the
selected chapters; each test waits for its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
SEED = 12345  # in no stored grid (the toy grid holds seeds 0-9, the ablations 0-2)
AT_ONCE = 2  # chapters run in parallel, each kernel on one thread: never more threads than CI's two cores
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _parameters(name: str, tmp: Path) -> dict:
    """The rerun's parameters: the new seed, short runs, outputs under tmp."""
    data = str(tmp / "data")
    return {
        "01": {"seed": SEED, "n_samples": 20_000},
        "05": {"seed": SEED, "epochs": 3, "data_dir": data, "run_dir": str(tmp / "ch05")},
        "06": {"seed": SEED, "iterations": 30},
        "07": {"seeds": [SEED], "epochs": 2, "data_dir": data, "out_root": str(tmp / "runs")},
        "08": {"seeds": [SEED], "epochs": 2, "n_splits": 0, "out_dir": str(tmp / "splits")},
    }.get(name[:2], {"seed": SEED})


def _papermill(chapter: Path, out: Path, params: dict, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "papermill", str(chapter), str(out), "--cwd", str(ROOT / "notebooks"),
            "-k", "python3", "--log-level", "ERROR"]
    args += ["-y", json.dumps(params)]  # JSON is YAML: one mapping of all the parameters
    return subprocess.run(args, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})


def _rerun(chapter: Path, tmp: Path) -> subprocess.CompletedProcess:
    tmp.mkdir(parents=True)
    return _papermill(chapter, tmp / chapter.name, _parameters(chapter.name, tmp), env=ONE_THREAD)


@pytest.fixture(scope="module")
def reruns(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[dict[str, Future[subprocess.CompletedProcess]]]:
    """Every selected chapter's rerun, started at once on AT_ONCE workers (each in its own folder)."""
    selected = [item.callspec.params["chapter"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_chapter_reruns_with_a_seed_outside_the_stored_grids"]
    tmp = tmp_path_factory.mktemp("reruns")
    with ThreadPoolExecutor(AT_ONCE) as pool:
        # the later chapters train more: started first, they do not leave one worker running alone at the end
        futures = {c.name: pool.submit(_rerun, c, tmp / c.stem) for c in sorted(selected, reverse=True)}
        yield futures
        for f in futures.values():
            f.cancel()


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_chapter_reruns_with_a_seed_outside_the_stored_grids(
        chapter: Path, reruns: dict[str, Future[subprocess.CompletedProcess]]) -> None:
    out = reruns[chapter.name].result()
    assert out.returncode == 0, f"{chapter.name} with seed {SEED}:\n{out.stderr[-3000:]}"


@pytest.mark.slow
def test_a_seed_without_stored_samples_is_named_with_the_values_that_work(tmp_path: Path) -> None:
    """Chapter 06 pictures a stored run: asking for one the grid does not hold stops with the seeds it holds."""
    chapter = ROOT / "notebooks" / "06_toy_experiment.ipynb"
    out = _papermill(chapter, tmp_path / "06.ipynb", {"picture_seed": SEED, "iterations": 30})
    assert out.returncode != 0
    assert f"picture_seed = {SEED}" in out.stderr and "holds generated samples of seeds [0]" in out.stderr


@pytest.mark.slow
def test_the_benchmark_appendix_reruns_on_a_dataset_without_features(tmp_path: Path) -> None:
    """Chapter 07 with another dataset: without its features it says what is missing and finishes."""
    chapter = ROOT / "notebooks" / "07_benchmark.ipynb"
    out = _papermill(chapter, tmp_path / "07.ipynb", {"dataset": "CUB", "data_dir": str(tmp_path / "none"),
                                                      "out_root": str(tmp_path / "runs")})
    assert out.returncode == 0, out.stderr[-3000:]
    printed = json.loads((tmp_path / "07.ipynb").read_text())["cells"]
    text = "".join("".join(o.get("text", "")) for c in printed if c["cell_type"] == "code" for o in c["outputs"])
    assert "CUB: features not available" in text and "res101.mat" in text
