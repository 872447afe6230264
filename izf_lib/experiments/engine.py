"""Where a grid's runs execute: this machine's process pool (``local``) or jobs sent through submitit (``submitit``).

submitit (https://github.com/facebookincubator/submitit) submits to SLURM when ``sbatch`` is on PATH
and otherwise runs the same pickled jobs in detached local worker processes. The rules that make a
sweep safe there are this project's, not submitit's:

* a run is done when its result file exists: callers pass only the runs not done yet, and every
  run function writes its result atomically, so a killed or cancelled job leaves no half-written file;
* runs are chunked, ``runs_per_task`` to a job, so thousands of short runs are tens of jobs;
* the local executor starts every job at once, so at most ``local_max_jobs`` run at a time;
* each job's runs are recorded in ``folder/registry.json``: a rerun re-attaches to the jobs still
  queued or running instead of submitting their runs again;
* a run that raises is reported with its name and traceback while the others land, and
  :class:`GridRunError` names every failed run at the end;
* every run is single-threaded, as in the local pool, so the result files are byte-identical.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .grid import Call, _single_threaded, run_jobs, write_json_atomic

__all__ = ["ENGINES", "SubmititSettings", "GridRunError", "run_calls", "call_key", "read_ledger",
           "add_engine_arguments", "settings_from_args"]

ENGINES = ("local", "submitit")
ALIVE_SLURM_STATES = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")


@dataclass
class SubmititSettings:
    """What a cluster user sets (flags of ``scripts/run_grids.py`` or a JSON file with these keys)."""

    folder: str = "runs/submitit"  # job folder: pickles, logs, registry; on a filesystem the nodes share
    cluster: str | None = None  # None: SLURM when sbatch is on PATH, else submitit's local executor
    partition: str | None = None
    timeout_min: int = 240  # per job (the local executor's default would be 2 minutes)
    cpus_per_task: int = 1
    mem_gb: float | None = None
    gpus_per_task: int = 0
    array_parallelism: int = 64  # SLURM: array tasks running at once
    runs_per_task: int = 0  # runs chunked into one job; 0: one job per local worker, or about 64 on SLURM
    local_max_jobs: int = field(default_factory=lambda: os.cpu_count() or 1)  # local executor: jobs at once
    poll_s: float = 2.0
    slurm_additional_parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> SubmititSettings:
        """Settings from a JSON file; an unknown key is an error naming the file and the known keys."""
        data = json.loads(Path(path).read_text())
        known = set(asdict(cls()))
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown submitit settings {unknown}; known: {sorted(known)}")
        return cls(**data)


class GridRunError(RuntimeError):
    """Some runs of a grid raised; the others landed. ``failed`` maps each failed run to its traceback."""

    def __init__(self, failed: dict[str, str]) -> None:
        self.failed = failed
        super().__init__(f"{len(failed)} run(s) failed: " + ", ".join(failed))

    def report(self) -> None:
        """Print every failed run with its traceback, then the list, to stderr (what the scripts show before exit 1)."""
        for name, error in self.failed.items():
            print(f"FAILED {name}\n{error}", file=sys.stderr)
        print(f"{self}; rerun the same command to retry them", file=sys.stderr)


def call_key(call: Call) -> str:
    """A run's identity across reruns: its function and its argument."""
    fn, arg = call
    return f"{fn.__module__}.{fn.__qualname__}{arg!r}"


def _run_chunk(calls: Sequence[Call]) -> list[dict[str, Any]]:
    """Inside a job: each run single-threaded, its error caught, so one failure costs only that run."""
    import submitit

    env = submitit.JobEnvironment()
    out = []
    for call in calls:
        entry = {"key": call_key(call), "job_id": str(env.job_id), "cluster": env.cluster}
        try:
            name = _single_threaded(call)  # the run functions return their run's name
            entry.update(name=name if isinstance(name, str) else call_key(call)[:160], ok=True)
        except Exception:  # reported with its traceback; the other runs of the chunk go on
            entry.update(name=call_key(call)[:160], ok=False, error=traceback.format_exc())
        out.append(entry)
    return out


def read_ledger(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every run a submitit job reported (``folder/ledger.jsonl``): name, job id, cluster, ok."""
    path = Path(folder) / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _alive(entry: dict[str, Any]) -> bool:
    """Whether a job recorded in the registry is still queued or running."""
    if entry["cluster"] == "slurm":
        if shutil.which("squeue") is None:
            return False
        out = subprocess.run(["squeue", "-h", "-j", entry["job_id"], "-o", "%T"], capture_output=True, text=True)
        return out.returncode == 0 and any(s in out.stdout for s in ALIVE_SLURM_STATES)
    try:  # the local executor's job id is its controller's pid
        os.kill(int(entry["job_id"]), 0)
    except (OSError, ValueError):
        return False
    return True


class _Attached:
    """A job submitted by an earlier, interrupted run of the grid, watched through its result pickle."""

    def __init__(self, folder: Path, entry: dict[str, Any]) -> None:
        self.entry, self.job_id = entry, entry["job_id"]
        self.result_path = folder / f"{self.job_id}_0_result.pkl"

    def done(self) -> bool:
        return self.result_path.is_file() or not _alive(self.entry)

    def result(self) -> list[dict[str, Any]]:
        import pickle

        if not self.result_path.is_file():
            raise RuntimeError(f"job {self.job_id} ended without a result")
        status, value = pickle.loads(self.result_path.read_bytes())
        if status != "success":
            raise RuntimeError(str(value))
        return value


def _executor(settings: SubmititSettings) -> Any:
    import submitit

    ex = submitit.AutoExecutor(folder=settings.folder, cluster=settings.cluster)
    params: dict[str, Any] = {"timeout_min": settings.timeout_min, "cpus_per_task": settings.cpus_per_task,
                              "slurm_array_parallelism": settings.array_parallelism}
    if settings.mem_gb is not None:
        params["mem_gb"] = settings.mem_gb
    if settings.partition is not None:
        params["slurm_partition"] = settings.partition
    if settings.gpus_per_task:
        params["gpus_per_node"] = settings.gpus_per_task
    if settings.slurm_additional_parameters:
        params["slurm_additional_parameters"] = settings.slurm_additional_parameters
    ex.update_parameters(**params)
    return ex


def _run_submitit(calls: Sequence[Call], settings: SubmititSettings, desc: str, progress: bool) -> list[str]:
    from tqdm.auto import tqdm

    folder = Path(settings.folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    registry_path = folder / "registry.json"
    registry = json.loads(registry_path.read_text()) if registry_path.is_file() else []
    wanted = {call_key(c): c for c in calls}
    # re-attach to the jobs of an earlier run that still hold some of these runs and are alive
    attached, covered = [], set()
    for entry in registry:
        keys = set(entry["keys"]) & set(wanted) - covered
        if keys and _alive(entry):
            attached.append((_Attached(folder, entry), sorted(keys)))
            covered |= keys
    todo = [c for k, c in wanted.items() if k not in covered]
    ex = _executor(settings)
    is_local = ex.cluster != "slurm"
    # default chunks: one per local worker (each job pays a Python start), or about 64 SLURM array tasks
    per_task = settings.runs_per_task or max(1, math.ceil(len(todo) / (settings.local_max_jobs if is_local else 64)))
    chunks = [todo[i:i + per_task] for i in range(0, len(todo), per_task)]
    pending = list(chunks)
    running: list[tuple[Any, list[str]]] = list(attached)
    names: list[str] = []
    failed: dict[str, str] = {}
    with tqdm(total=len(wanted), desc=desc, disable=not progress) as bar:

        def submit(batch: list[list[Call]]) -> None:
            if not batch:
                return
            jobs = ex.map_array(_run_chunk, batch)
            for job, chunk in zip(jobs, batch, strict=True):
                keys = [call_key(c) for c in chunk]
                registry.append({"job_id": str(job.job_id), "cluster": ex.cluster, "keys": keys})
                running.append((job, keys))
            write_json_atomic(registry_path, registry)

        if not is_local:
            submit(pending)  # one array; SLURM caps how many run at once (array_parallelism)
            pending = []
        while running or pending:
            if is_local:  # submitit's local executor has no queue: keep at most local_max_jobs alive
                free = settings.local_max_jobs - len(running)
                submit(pending[:max(0, free)])
                pending = pending[max(0, free):]
            still = []
            for job, keys in running:
                if not job.done():
                    still.append((job, keys))
                    continue
                try:
                    entries = job.result()
                except Exception as exc:  # the whole job died (timeout, cancel, node failure)
                    entries = [{"key": k, "name": k[:160], "ok": False, "job_id": str(job.job_id),
                                "error": f"job {job.job_id} failed: {exc}"} for k in keys]
                with (folder / "ledger.jsonl").open("a") as f:
                    for e in entries:
                        f.write(json.dumps({k: e.get(k) for k in ("name", "job_id", "cluster", "ok")}) + "\n")
                for e in entries:
                    if e["ok"]:
                        names.append(e["name"])
                    else:
                        failed[e["name"]] = e["error"]
                    bar.set_postfix_str(e["name"][:60])
                    bar.update()
            running = still
            if running or pending:
                time.sleep(settings.poll_s)
    if failed:
        raise GridRunError(failed)
    return names


def run_calls(calls: Sequence[Call], engine: str = "local", jobs: int = 1, desc: str = "runs",
              settings: SubmititSettings | None = None, progress: bool = True) -> list[str]:
    """Run every call on ``engine``: ``local`` is :func:`~izf_lib.experiments.grid.run_jobs` with ``jobs`` workers;
    ``submitit`` sends them as jobs (``settings``). Returns the runs' names; raises :class:`GridRunError`."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got '{engine}'")
    if engine == "local" or not calls:
        return run_jobs(calls, jobs, desc=desc, progress=progress)
    return _run_submitit(calls, settings or SubmititSettings(), desc, progress)


_FLAGS = (("folder", str, "job folder, shared with the nodes (default runs/submitit)"),
          ("cluster", str, "force 'slurm' or 'local' (default: SLURM when sbatch is on PATH)"),
          ("partition", str, "SLURM partition"), ("timeout-min", int, "time limit per job, minutes"),
          ("cpus-per-task", int, "CPUs per job"), ("mem-gb", float, "memory per job"),
          ("gpus-per-task", int, "GPUs per job"), ("array-parallelism", int, "SLURM array tasks running at once"),
          ("runs-per-task", int, "runs per job (0: one job per local worker, ~64 on SLURM)"),
          ("local-max-jobs", int, "local executor: jobs running at once (default: CPU count)"))


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--engine`` and the submitit settings as flags (and ``--submitit-config FILE.json``), for every script."""
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: this machine (a process pool); submitit: jobs on SLURM when sbatch is on PATH, "
                             "else submitit's local executor")
    g = parser.add_argument_group("submitit (--engine submitit)")
    g.add_argument("--submitit-config", help="JSON file with SubmititSettings keys; the flags below override it")
    for name, kind, what in _FLAGS:
        g.add_argument(f"--{name}", type=kind, help=what)


def settings_from_args(args: argparse.Namespace) -> SubmititSettings:
    """The :class:`SubmititSettings` of parsed :func:`add_engine_arguments` flags."""
    settings = SubmititSettings.from_json(args.submitit_config) if args.submitit_config else SubmititSettings()
    for name, _, _ in _FLAGS:
        key = name.replace("-", "_")
        if getattr(args, key) is not None:
            setattr(settings, key, getattr(args, key))
    return settings
