"""The grids through submitit: real worker processes (its local executor), and a real SLURM where one runs.

Each test runs the toy grid at smoke size with ``scripts/run_grids.py``, as a user would, and
compares every result file with the local process pool's, byte for byte.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from izf_lib.experiments.engine import GridRunError, SubmititSettings, read_ledger, run_calls

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("submitit")


def _grid(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "run_grids.py"), "--only", "toy", "--smoke", "--out", str(out),
           *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def _results(out: Path) -> list[Path]:
    return sorted(p.relative_to(out) for p in out.rglob("*.json"))


def _same_files(a: Path, b: Path) -> None:
    files = _results(a)
    assert files and files == _results(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors, mismatch
    assert (a / "toy" / "toy_runs.csv").read_bytes() == (b / "toy" / "toy_runs.csv").read_bytes()


@pytest.fixture(scope="module")
def local_pool(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pool")
    done = _grid(out, "--jobs", "2")
    assert done.returncode == 0, done.stderr
    return out


def _check_engine(out: Path, jobs: Path, local_pool: Path, cluster: str) -> None:
    """The grid through submitit on ``cluster``: same files as the pool, every run inside a job, resumable."""
    args = ("--engine", "submitit", "--folder", str(jobs), "--cluster", cluster, "--local-max-jobs", "2")
    done = _grid(out, *args)
    assert done.returncode == 0, done.stderr
    _same_files(out, local_pool)
    ledger = read_ledger(jobs)
    assert len(ledger) == len(_results(out)) and all(e["ok"] for e in ledger)
    assert {e["cluster"] for e in ledger} == {cluster} and all(e["job_id"] for e in ledger)  # JobEnvironment
    again = _grid(out, *args)
    assert again.returncode == 0 and "0 runs to do" in again.stdout
    assert len(read_ledger(jobs)) == len(ledger)  # a rerun submits nothing
    victim = out / _results(out)[0]
    victim.unlink()
    once = _grid(out, *args)
    assert once.returncode == 0 and "1 runs to do" in once.stdout, once.stderr
    assert len(read_ledger(jobs)) == len(ledger) + 1  # exactly the deleted run was submitted again
    _same_files(out, local_pool)


@pytest.mark.slow  # worker processes
def test_the_toy_grid_through_submitits_local_executor_matches_the_pool(tmp_path: Path, local_pool: Path) -> None:
    _check_engine(tmp_path / "out", tmp_path / "jobs", local_pool, "local")


def _landing(path: str) -> str:
    Path(path).write_text("landed")
    return Path(path).name


def _failing(path: str) -> str:
    raise RuntimeError(f"deliberate failure for {path}")


@pytest.mark.slow  # worker processes
def test_a_failing_run_is_reported_by_name_while_the_others_land(tmp_path: Path) -> None:
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    calls = [(_landing, str(tmp_path / "a.txt")), (_failing, str(tmp_path / "b.txt")),
             (_landing, str(tmp_path / "c.txt"))]
    settings = SubmititSettings(folder=str(tmp_path / "jobs"), cluster="local", runs_per_task=2, poll_s=0.5)
    with pytest.raises(GridRunError) as err:
        run_calls(calls, "submitit", settings=settings, progress=False)
    (name,) = err.value.failed
    assert "_failing" in name and "deliberate failure" in err.value.failed[name]
    assert (tmp_path / "a.txt").read_text() == "landed" and (tmp_path / "c.txt").read_text() == "landed"
    assert [e["ok"] for e in read_ledger(tmp_path / "jobs")].count(True) == 2


def test_submitit_settings_from_a_file_reject_unknown_keys(tmp_path: Path) -> None:
    good = tmp_path / "slurm.json"
    good.write_text('{"partition": "gpu", "gpus_per_task": 1, "timeout_min": 30}')
    s = SubmititSettings.from_json(good)
    assert (s.partition, s.gpus_per_task, s.timeout_min) == ("gpu", 1, 30)
    bad = tmp_path / "bad.json"
    bad.write_text('{"partitions": "gpu"}')
    with pytest.raises(ValueError, match=r"bad.json: unknown submitit settings \['partitions'\]"):
        SubmititSettings.from_json(bad)
    with pytest.raises(ValueError, match="engine must be one of"):
        run_calls([], "ray")


def _slurm_up() -> str | None:
    """Why a real SLURM cannot be used here, or None when sbatch is on PATH and a node answers."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH (.ci/run starts a single-node SLURM where it can: scripts/start_slurm.sh)"
    info = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    if info.returncode != 0 or not any(s in info.stdout for s in ("idle", "mix", "alloc")):
        return f"sbatch is on PATH but no SLURM node is up (sinfo: {info.stdout.strip() or info.stderr.strip()})"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_slurm_up() is not None, reason=str(_slurm_up()))
def test_the_toy_grid_on_a_real_slurm_matches_the_pool(tmp_path: Path, local_pool: Path) -> None:
    _check_engine(tmp_path / "out", tmp_path / "jobs", local_pool, "slurm")
    logs = list((tmp_path / "jobs").glob("*_log.out"))
    assert logs  # the job folders of the SLURM jobs: one log per job


@pytest.mark.slow  # worker processes
def test_a_notebook_runs_as_a_submitit_job_with_its_parameters(tmp_path: Path) -> None:
    """What `make results ENGINE=submitit` sends: one papermill run per job (here a two-cell notebook)."""
    import nbformat

    from izf_lib.experiments.notebook_runs import papermill_job

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"},
                                            "language_info": {"name": "python"}})
    params = nbformat.v4.new_code_cell("value = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("open('value.txt', 'w').write(str(value * 2))")]
    notebook = tmp_path / "nb" / "double.ipynb"
    notebook.parent.mkdir()
    nbformat.write(nb, notebook)
    calls = [(papermill_job, (str(notebook), str(tmp_path / "out" / "double.ipynb"), {"value": 21}))]
    settings = SubmititSettings(folder=str(tmp_path / "jobs"), cluster="local", poll_s=0.5)
    (name,) = run_calls(calls, "submitit", settings=settings, progress=False)
    assert "double.ipynb" in name and (notebook.parent / "value.txt").read_text() == "42"  # ran in its folder
    assert (tmp_path / "out" / "double.ipynb").is_file() and read_ledger(tmp_path / "jobs")[0]["cluster"] == "local"


def test_a_write_interrupted_before_its_rename_leaves_no_result(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C or a cancelled job between writing and renaming: the result file does not exist, so a rerun redoes it."""
    from izf_lib.experiments.grid import write_json_atomic

    target = tmp_path / "seed0.json"

    def killed(self, other):  # the process dies after the temporary file is written, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(target, {"T1": 1.0})
    assert not target.exists()
    monkeypatch.undo()
    write_json_atomic(target, {"T1": 1.0})
    assert target.read_text() == '{\n "T1": 1.0\n}'


@pytest.mark.slow  # worker processes
def test_a_rerun_reattaches_to_a_job_still_running_instead_of_submitting_it_again(tmp_path: Path) -> None:
    import json
    import time

    folder = tmp_path / "jobs"
    driver = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from izf_lib.experiments.engine import SubmititSettings, run_calls; "
         f"run_calls([(time.sleep, 6)], 'submitit', settings=SubmititSettings(folder={str(folder)!r}, "
         "cluster='local', poll_s=0.5), progress=False)"], cwd=ROOT)
    registry = folder / "registry.json"
    for _ in range(300):
        if registry.is_file():
            break
        time.sleep(0.1)
    driver.kill()  # the grid's command dies (a closed terminal, a killed login shell); its job does not
    driver.wait()
    (entry,) = json.loads(registry.read_text())
    settings = SubmititSettings(folder=str(folder), cluster="local", poll_s=0.5)
    run_calls([(time.sleep, 6)], "submitit", settings=settings, progress=False)
    assert len(json.loads(registry.read_text())) == 1  # nothing was submitted again
    (done,) = read_ledger(folder)
    assert done["job_id"] == entry["job_id"] and done["ok"]


@pytest.mark.slow  # worker processes
def test_a_part_of_the_gpu_benchmark_runs_as_a_job_with_its_own_log(tmp_path: Path) -> None:
    """scripts/submit_gpu_benchmarks.py at TINY size on the CPU: the `step` part as a local-executor job."""
    import json
    import os

    cmd = [sys.executable, str(ROOT / "scripts" / "submit_gpu_benchmarks.py"), str(tmp_path / "gpu"), "--parts",
           "step", "--engine", "submitit", "--cluster", "local", "--folder", str(tmp_path / "jobs")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TINY": "1", "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    assert "done: gpu.sh step" in done.stdout
    runs = json.loads((tmp_path / "gpu" / "train_step.json").read_text())["runs"]
    assert runs and (tmp_path / "gpu" / "log_step.txt").is_file()
    assert read_ledger(tmp_path / "jobs")[0]["cluster"] == "local"
