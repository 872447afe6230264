"""A chapter notebook run (papermill) or a benchmark command as one job, so they go through the grids' engines.

``scripts/make_results.py`` builds one call per dataset (chapter 07) and one for the DIGITS splits
(chapter 08); :func:`~izf_lib.experiments.engine.run_calls` runs them here one after the other, or
as submitit jobs (with ``--gpus-per-task`` on a GPU cluster).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["papermill_job", "command_job"]


def papermill_job(job: tuple[str, str, dict[str, Any]]) -> str:
    """Execute ``notebook`` (a path) into ``output`` with ``parameters``, in the notebook's folder; returns a name."""
    import papermill as pm  # the book's extra: only the jobs that run a notebook need it

    notebook, output, parameters = job
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(notebook, output, parameters=parameters, cwd=str(Path(notebook).parent),
                        kernel_name="python3", progress_bar=False, log_output=False)
    return f"{Path(notebook).name} -> {output}"


def command_job(job: tuple[list[str], dict[str, str], str, str]) -> str:
    """Run ``argv`` in ``cwd`` with ``env`` added to the job's environment; returns ``name``, or raises with the
    command's last output lines (``scripts/submit_gpu_benchmarks.py``: one part of ``benchmarks/gpu.sh``)."""
    argv, env, cwd, name = job
    done = subprocess.run(argv, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise RuntimeError(f"{name}: {' '.join(argv)} exited with {done.returncode}\n{tail}")
    return name
