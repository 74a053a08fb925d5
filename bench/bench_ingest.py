"""Ingest throughput on real photos: end to end (ingest_many into SQLite or Postgres + local storage)
against the machine's limit (bare decode+hash+thumbnail in a tight loop on every core), and memory
over a long batch.

    python bench/bench_ingest.py [--count 2000] [--rounds 2] [--postgres] [--memory 10000]

The photos are the two real photographs shipped with scikit-learn, cut into `count` different JPEGs
(random crop, scale, flip, quality), cached under bench/out/. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.users import operator_user  # noqa: E402  (after the path: run as a script)

ADMIN = operator_user()  # benches act as the operator, like the CLI


def make_photos(count: int) -> list[Path]:
    from PIL import Image, ImageEnhance
    from sklearn.datasets import load_sample_images

    folder = ROOT / "bench" / "out" / f"photos_{count}"
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) >= count:
        return existing[:count]
    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.fromarray(array) for array in load_sample_images().images]
    rng = random.Random(1)
    for n in range(count):
        photo = rng.choice(sources)
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x, y = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
        image = photo.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
        image.save(folder / f"photo_{n:05d}.jpg", "JPEG", quality=rng.randrange(70, 96))
    return sorted(folder.glob("*.jpg"))[:count]


def _decode_chunk(blobs: list[bytes]) -> int:
    from core.library.decode import decode_image

    for blob in blobs:
        decode_image(blob, max_pixels=100_000_000)
    return len(blobs)


def machine_limit(paths: list[Path], workers: int) -> tuple[float, float]:
    """Images/s for decode + SHA-256 + pHash + thumbnail with every core busy and no I/O or database,
    and the CPU milliseconds that costs per image."""
    blobs = [path.read_bytes() for path in paths]
    chunks = [blobs[i:i + 25] for i in range(0, len(blobs), 25)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_decode_chunk, chunks[:workers]))  # start the workers before timing
        with CpuMeter() as cpu:
            started = time.perf_counter()
            done = sum(pool.map(_decode_chunk, chunks))
            elapsed = time.perf_counter() - started
    return done / elapsed, cpu.seconds * 1000 / done


def _tree_pids() -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, grew = {os.getpid()}, True
    while grew:
        new = {pid for pid, ppid in parents.items() if ppid in tree and pid not in tree}
        tree |= new
        grew = bool(new)
    return tree


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime of this process
    except (OSError, IndexError, ValueError):
        return -1


class CpuMeter:
    """CPU seconds spent by this process and all its descendants (pool workers, the forkserver) during a
    block. Unlike wall time on a shared machine, this does not depend on what the neighbours do."""

    def __init__(self):
        self.ticks: dict[int, int] = {}
        self.start: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for pid in _tree_pids():
            ticks = _cpu_ticks(pid)
            if ticks >= 0:
                self.ticks[pid] = max(ticks, self.ticks.get(pid, 0))

    def _run(self):
        while not self._stop.wait(0.1):
            self._sample()

    def __enter__(self):
        self.start = {pid: _cpu_ticks(pid) for pid in _tree_pids()}
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._sample()
        self._stop.set()
        self._thread.join()
        self.seconds = sum(t - max(self.start.get(pid, 0), 0) for pid, t in self.ticks.items()) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Resident memory of this process and its children, sampled every second."""

    def __init__(self):
        self.samples: list[tuple[float, int]] = []  # (time, MB) once a second
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree_rss_mb() -> int:
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                parents[int(stat.parent.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
        tree, grew = {os.getpid()}, True
        while grew:
            new = {pid for pid, ppid in parents.items() if ppid in tree and pid not in tree}
            tree |= new
            grew = bool(new)
        total_kb = 0
        for pid in tree:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                total_kb += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            except (OSError, StopIteration, ValueError):
                continue
        return total_kb // 1024

    def _run(self):
        while not self._stop.wait(1.0):
            self.samples.append((time.perf_counter(), self._tree_rss_mb()))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def end_to_end(paths: list[Path], database_url: str, repeat: int = 1, watch_memory: bool = False) -> dict:
    from sqlalchemy import create_engine

    from core.config import reset_settings_cache
    from core.db import dispose_engines
    from core.library.ingest import ingest_many
    from core.models import Base
    from core.storage import reset_storage_cache

    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    if database_url == "sqlite":
        database_url = f"sqlite:///{workdir / 'bench.db'}"
    engine = create_engine(database_url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    engine.dispose()
    os.environ.update(DATABASE_URL=database_url, STORAGE_URL=f"file://{workdir / 'storage'}")
    reset_settings_cache()
    dispose_engines()
    reset_storage_cache()
    items = [(path.name, path) for _ in range(repeat) for path in paths]
    rss = RssSampler()
    if watch_memory:  # the sampler walks /proc: kept out of the throughput run
        rss.__enter__()
    with CpuMeter() as cpu:
        started = time.perf_counter()
        results = ingest_many(actor=ADMIN, items=items, skip_duplicates=repeat == 1)
        elapsed = time.perf_counter() - started
    if watch_memory:
        rss.__exit__()
    statuses = {s: sum(1 for r in results if r.status == s) for s in ("imported", "duplicate", "rejected")}
    memory = [mb for _t, mb in rss.samples]
    report = {"images": len(items), "seconds": round(elapsed, 1), "images_per_s": round(len(items) / elapsed, 1),
              "cpu_ms_per_image": round(cpu.seconds * 1000 / len(items), 1), "statuses": statuses}
    if memory:
        report.update(rss_tree_mb_first_10pct=max(memory[: max(1, len(memory) // 10)]), rss_tree_mb_peak=max(memory),
                      rss_tree_mb_last=memory[-1])
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--postgres", action="store_true", help="ingest into a scratch Postgres database")
    parser.add_argument("--memory", type=int, default=0, help="also ingest this many files and watch memory")
    parser.add_argument("--rounds", type=int, default=2, help="end-to-end runs, each between two limit runs")
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    paths = make_photos(args.count)
    database_url = "sqlite"
    if args.postgres:
        from sqlalchemy import create_engine, text

        admin_url = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text('DROP DATABASE IF EXISTS "cls_bench_ingest" WITH (FORCE)'))
            connection.execute(text('CREATE DATABASE "cls_bench_ingest"'))
        admin.dispose()
        database_url = admin_url.rsplit("/", 1)[0] + "/cls_bench_ingest"
    report = {"photos": len(paths), "mean_bytes": sum(p.stat().st_size for p in paths) // len(paths),
              "cores": workers, "load_before": os.getloadavg()}
    # The machine is shared: alternate limit and end-to-end runs and compare each with its neighbours
    # (wall time), and compare CPU per image (independent of the neighbours' load).
    limits_seen, runs = [machine_limit(paths, workers)], []
    for _ in range(args.rounds):
        runs.append(end_to_end(paths, database_url))
        limits_seen.append(machine_limit(paths, workers))
    ratios = [run["images_per_s"] / ((limits_seen[i][0] + limits_seen[i + 1][0]) / 2) for i, run in enumerate(runs)]
    limit_cpu = statistics.median(cpu for _rate, cpu in limits_seen)
    report.update(limit_images_per_s=[round(rate, 1) for rate, _cpu in limits_seen],
                  limit_cpu_ms_per_image=round(limit_cpu, 1), end_to_end=runs,
                  end_to_end_vs_limit_wall=[round(r, 2) for r in ratios],
                  end_to_end_vs_limit_cpu=[round(limit_cpu / run["cpu_ms_per_image"], 2) for run in runs],
                  idle_machine_estimate_images_per_s=round(workers * 1000 / limit_cpu, 1))
    if args.memory:
        report["memory_run"] = end_to_end(paths, database_url, repeat=max(1, args.memory // len(paths)),
                                          watch_memory=True)
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
