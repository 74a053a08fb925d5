"""One training run on several devices (TrainingConfig.devices > 1) with PyTorch DDP, spawned by the job.

The job's process fetches the images once, then starts one process per device (torch.multiprocessing,
spawn): each runs core.ml.pipeline.run_training as one rank (NCCL on GPUs, one per rank; gloo on the
CPU, which is how the tests run it). Rank 0 relays its callbacks through a queue and the job's process
runs them as it would for one device: progress and cancellation, the settled config, and each epoch's
checkpoint and rows (rank 0 waits for that epoch to be recorded before it trains on, so a checkpoint
is stored before the next epoch starts, as on one device). The checkpoint is the one-device format
(the unwrapped module's state_dict, no "module." prefix), so a run resumes on any device count.

A failure anywhere ends every rank: a rank's exception is raised here (a UserError keeps its
message); an exception here (cancelled, role removed, a search pruning the trial) terminates the
ranks; a rank whose parent is gone (the worker was killed) exits on its own.
"""

from __future__ import annotations

import os
import pickle
import queue
import socket
import sys
import threading
import time
import traceback
import types
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from core.errors import InvalidInput
from core.ml import data, pipeline, trainer
from core.ml.config import TrainingConfig
from core.ml.ranks import Ranks

RANK_TIMEOUT = timedelta(hours=1)
"""How long a rank waits in a collective: rank 0 waits for each epoch's checkpoint upload, the others
for rank 0 (the recipe's LR range test runs on rank 0 alone). A dead rank is noticed by the job's
process at once, not by this timeout."""


class LocalFiles:
    """The storage the ranks read: the job's process fetched every image into the local cache (one
    download, not one per rank) and hands each rank the paths, which pickle (an S3 client does not)."""

    def __init__(self, paths: dict[str, str]):
        self.paths = paths

    def local_path(self, key: str) -> Path | None:
        return Path(self.paths[key]) if key in self.paths else None

    def get(self, key: str) -> bytes:
        raise InvalidInput(f"image {key} was not fetched before training")


def check_devices(config: TrainingConfig) -> str:
    """The backend for config.devices on this worker, or a clear refusal."""
    if trainer.pick_device(config.device).type == "cuda":
        present = torch.cuda.device_count()
        if config.devices > present:
            raise InvalidInput(f"devices={config.devices} but this worker has {present} CUDA device(s)")
        return "nccl"
    if config.devices > (os.cpu_count() or 1):
        raise InvalidInput(f"devices={config.devices} but this worker has {os.cpu_count()} CPU cores")
    return "gloo"


def rendezvous_address() -> str:
    """MASTER_PORT when set, else a free loopback port (several runs may train on one worker)."""
    port = os.environ.get("MASTER_PORT")
    if not port:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def run_training_on_devices(config: TrainingConfig, records: list[data.Record], *, storage, workdir: Path,
                            finetune_state: dict | None = None, resume_payload: dict | None = None,
                            on_message=None, on_batch=None, on_epoch=None, on_config=None,
                            **options: Any) -> pipeline.Artifacts:
    """pipeline.run_training's contract (the same arguments and callbacks), trained by config.devices
    ranks. `options`: run_training's other keyword arguments (class_names, weights_file, exports, ...)."""
    import torch.multiprocessing as mp

    backend = check_devices(config)
    files = data.ImageFiles(storage)
    files.fetch_all(records, on_step=(lambda d, t: on_message("downloading images", d, t)) if on_message else None)
    job = {"config": config, "records": records, "storage": LocalFiles({r.key: str(files.path(r)) for r in records}),
           "workdir": workdir, **options}
    for name, value in (("finetune_state", finetune_state), ("resume_payload", resume_payload)):
        if value is not None:  # tensors go through a file: the queue would share them in memory
            torch.save(value, workdir / f"{name}.pt")
            job[name] = workdir / f"{name}.pt"
    context = mp.get_context("spawn")
    events, replies = context.Queue(), context.Queue()
    threads = max(1, torch.get_num_threads() // config.devices) if backend == "gloo" else torch.get_num_threads()
    with _bare_main_module():
        ranks = mp.start_processes(_rank_main, nprocs=config.devices, join=False, start_method="spawn",
                                   args=(config.devices, backend, rendezvous_address(), events, replies, job,
                                         os.getpid(), threads))
    callbacks = {"message": on_message, "batch": on_batch, "config": on_config}
    try:
        artifacts = _relay(ranks, events, replies, callbacks, on_epoch)
    except BaseException:
        _stop(ranks, grace_s=0)
        raise
    _stop(ranks)
    return artifacts


@contextmanager
def _bare_main_module():
    """A spawned process first re-runs its parent's __main__ by path; in the app (and AppTest) that is
    the page script being run, which would draw the page again in each rank (seen: a rank failing in
    pages/training.py). The ranks start from an empty __main__: _rank_main is imported by name."""
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


def _relay(ranks, events, replies, callbacks: dict[str, Any], on_epoch) -> Any:
    """Run rank 0's callbacks here until its result arrives; raise the first rank's error."""
    import torch.multiprocessing as mp

    while True:
        try:
            kind, *rest = events.get(timeout=0.5)
        except queue.Empty:
            kind = None
        if kind is None:
            try:
                finished = ranks.join(timeout=0)
            except (mp.ProcessExitedException, mp.ProcessRaisedException) as exc:  # a rank died without reporting (killed, out of memory)
                raise _reported_error(events) or RuntimeError(f"a training process failed: {exc}") from None
            if finished:
                raise _reported_error(events) or RuntimeError("the training processes ended without a result")
            continue
        if kind == "error":
            raise rest[1]
        if kind == "done":
            return torch.load(rest[0], weights_only=False)  # written by our own rank 0 just now
        if kind == "epoch":
            payload = torch.load(rest[0], weights_only=True)
            if on_epoch:
                on_epoch(trainer.FitState(**payload["fit"]), payload)
            replies.put("recorded")
        elif callbacks.get(kind):
            callbacks[kind](*rest)


def _reported_error(events) -> BaseException | None:
    try:
        while True:
            kind, *rest = events.get(timeout=1)
            if kind == "error":
                return rest[1]
    except queue.Empty:
        return None


def _stop(ranks, grace_s: float = 30) -> None:
    """Let finished ranks exit; terminate the others (an error or a cancel here)."""
    deadline = time.monotonic() + grace_s
    for process in ranks.processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()) if process.exitcode is None else 0)
    for process in ranks.processes:
        if process.is_alive():
            process.terminate()
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def _rank_main(rank: int, world: int, backend: str, address: str, events, replies, job: dict[str, Any],
               parent: int, threads: int) -> None:
    """One rank: join the group, train, and (rank 0) report through `events`."""
    import torch.distributed as dist

    _exit_with_parent(parent)
    torch.set_num_threads(threads)
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(backend, init_method=address, world_size=world, rank=rank, timeout=RANK_TIMEOUT)
        group = dist.new_group(backend="gloo", timeout=RANK_TIMEOUT) if backend == "nccl" else None
        ranks = Ranks(world, rank, group)
        artifacts = _train(job, ranks, events, replies)
        if ranks.main:
            path = Path(job["workdir"]) / "artifacts.pt"
            torch.save(artifacts, path)
            events.put(("done", str(path)))
        dist.destroy_process_group()
    except BaseException as exc:
        traceback.print_exc(file=sys.stderr)
        events.put(("error", rank, _picklable(exc)))
        raise


def _train(job: dict[str, Any], ranks: Ranks, events, replies):
    job = dict(job)
    for name in ("finetune_state", "resume_payload"):
        if job.get(name) is not None:
            job[name] = torch.load(job[name], weights_only=True)
    relays = {}
    if ranks.main:
        def on_epoch(state, payload: dict) -> None:
            path = Path(job["workdir"]) / "epoch.pt"
            torch.save(payload, path)
            events.put(("epoch", str(path)))
            replies.get()  # recorded (or this process is terminated)

        relays = {"on_message": lambda text, done, total: events.put(("message", text, done, total)),
                  "on_batch": lambda epoch, done, total: events.put(("batch", epoch, done, total)),
                  "on_config": lambda config: events.put(("config", config)), "on_epoch": on_epoch}
    return pipeline.run_training(job.pop("config"), job.pop("records"), **job, **relays, ranks=ranks)


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _exit_with_parent(parent: int) -> None:
    """A rank whose job process is gone (its worker killed) exits instead of waiting in a collective."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
