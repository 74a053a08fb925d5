"""Real `rq worker` processes for fan-out tests and bench/bench_fanout.py: started with the stack's
settings in their environment, each in a session of its own, so one can be SIGKILLed with whatever
it started (an ingest process pool) as a machine dying would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_workers(count: int, *, env: dict[str, str], queues: tuple[str, ...] = ("predictions", "imports"),
                  log_dir: Path | None = None, cpus: list[list[int]] | None = None) -> list[subprocess.Popen]:
    """`count` RQ SimpleWorkers (jobs run in the worker process itself, so a worker keeps its loaded
    model between chunks) on `queues`; `cpus[i]` pins worker i (taskset), when given."""
    workers = []
    for index in range(count):
        command = [sys.executable, "-m", "rq.cli", "worker", "--url", env["REDIS_URL"], "--worker-class",
                   "rq.worker.SimpleWorker", "--name", f"fanout-{os.getpid()}-{index}-{time.time_ns()}",
                   "--maintenance-interval", "5", *queues]
        if cpus:
            command = ["taskset", "-c", ",".join(map(str, cpus[index])), *command]
        out = open(log_dir / f"worker-{index}.log", "wb") if log_dir else subprocess.DEVNULL  # noqa: SIM115
        workers.append(subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True))
    return workers


def kill(worker: subprocess.Popen) -> None:
    """SIGKILL the worker and everything in its session (it was started in one of its own)."""
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    worker.wait(timeout=10)


def stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            kill(worker)


def current_chunk(connection, worker: subprocess.Popen) -> str | None:
    """The id of the RQ job the worker process runs now (None when idle or not registered yet)."""
    from rq import Worker

    for registered in Worker.all(connection=connection):
        if registered.pid == worker.pid:  # taskset execs the worker: the same pid
            return registered.get_current_job_id()
    return None
