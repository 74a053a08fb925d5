"""Near-duplicate benchmark: precision/recall on real photos and their edited copies, the one-image
query and whole-library grouping at 1,000,000 hashes (Postgres), and the pure index.

    python bench/bench_duplicates.py                 # everything (needs scikit-image, Postgres)
    python bench/bench_duplicates.py --quality-only  # only precision/recall
    python bench/bench_duplicates.py --rows 200000   # smaller database part

Quality set: every photo in skimage.data and sklearn's two samples, cut into 3×3 overlapping tiles
(half the photo each: distinct but similar images), the same photos' tiles as "packshots" (an ellipse
crop on one plain background, the homogeneous case), 24 coins cut from one photo and 100 LFW faces.
Each base image gets four edited copies: resize to 50 %, JPEG quality 40, crop 1–3 % per side,
brightness ×0.75 or ×1.3. Duplicates = a base and its copies; every other pair is a non-duplicate.
Hashes go through the real ingest decode (core.library.decode.decode_image: pHash and thumbnail) and the
confirming hash is taken from that thumbnail, as in the library.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.library.duplicates import CONFIRM_MAX_DISTANCE  # noqa: E402
from core.library.fingerprints import confirm_distances, fine_hash_of_bytes  # noqa: E402
from core.library.hamming import band_values, connected_groups, pairs_within  # noqa: E402

PHOTOS = ["astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
          "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text", "cell",
          "stereo_motorcycle"]  # skimage's `cat` is the same photo as `chelsea`: left out


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# ---------------------------------------------------------------- the edited-real-photo set


def photos():
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = {}
    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        if isinstance(array, tuple):  # a stereo pair: two views of one scene
            out[f"{name}_left"], out[f"{name}_right"] = array[0], array[1]
        else:
            out[name] = array
    for k, array in enumerate(load_sample_images().images):
        out[f"sklearn{k}"] = array
    for name, array in out.items():
        image = Image.fromarray(array).convert("RGB")
        image.thumbnail((640, 640))
        out[name] = image
    return out


def tiles(image, grid=3, frac=0.5):
    w, h = image.size
    tw, th = int(w * frac), int(h * frac)
    for gy in range(grid):
        for gx in range(grid):
            x, y = int(gx * (w - tw) / (grid - 1)), int(gy * (h - th) / (grid - 1))
            yield image.crop((x, y, x + tw, y + th))


def packshot(tile):
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (320, 320), (245, 245, 245))
    item = tile.copy()
    item.thumbnail((170, 170))
    mask = Image.new("L", item.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, item.size[0] - 1, item.size[1] - 1), fill=255)
    canvas.paste(item, ((320 - item.size[0]) // 2, (320 - item.size[1]) // 2), mask)
    return canvas


def bases():
    import skimage.data
    from PIL import Image

    out = []
    for name, photo in photos().items():
        out += [("tile", f"{name}/t{k}", t) for k, t in enumerate(tiles(photo))]
        out += [("packshot", f"pack/{name}/t{k}", packshot(t)) for k, t in enumerate(tiles(photo, frac=0.4))]
    coins = Image.fromarray(skimage.data.coins()).convert("RGB")
    for r, y in enumerate((10, 85, 160, 230)):
        for c, x in enumerate((20, 80, 140, 200, 260, 320)):
            out.append(("coin", f"coin/{r}{c}", coins.crop((x, y, x + 62, y + 70)).resize((124, 140), Image.LANCZOS)))
    for k, face in enumerate(skimage.data.lfw_subset()[:100]):
        image = Image.fromarray((face * 255).astype(np.uint8)).convert("RGB").resize((100, 100), Image.BICUBIC)
        out.append(("face", f"face/{k}", image))
    return out


def encode(image, fmt="PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def edits(image, rng, crop):
    from PIL import Image, ImageEnhance

    w, h = image.size
    m = rng.uniform(*crop)
    yield "resize", encode(image.resize((max(8, w // 2), max(8, h // 2)), Image.LANCZOS))
    yield "jpeg", encode(image, "JPEG", quality=40)
    yield "crop", encode(image.crop((int(w * m), int(h * m), w - int(w * m), h - int(h * m))))
    yield "bright", encode(ImageEnhance.Brightness(image).enhance(float(rng.choice([0.75, 1.3]))))


def build_set(seed: int, crop=(0.01, 0.03)):
    from core.library.decode import decode_image

    rng = np.random.default_rng(seed)
    group, kind, edit, phash, fine = [], [], [], [], []
    for g, (category, _name, image) in enumerate(bases()):
        for edit_name, data in [("base", encode(image)), *edits(image, rng, crop)]:
            decoded = decode_image(data, max_pixels=100_000_000)
            group.append(g)
            kind.append(category)
            edit.append(edit_name)
            phash.append(int(decoded.phash, 16))
            fine.append(fine_hash_of_bytes(decoded.thumbnail))
    return (np.array(group), np.array(kind), np.array(edit), np.array(phash, dtype=np.uint64), fine)


def scores(predicted: set, truth: set) -> tuple[float, float]:
    hit = len(predicted & truth)
    return hit / max(1, len(predicted)), hit / max(1, len(truth))


def group_pairs(n, pair_i, pair_j) -> set:
    out = set()
    for members in connected_groups(n, pair_i, pair_j):
        members = sorted(members.tolist())
        out |= {(a, b) for k, a in enumerate(members) for b in members[k + 1:]}
    return out


def quality(seed: int) -> None:
    started = time.perf_counter()
    group, kind, edit, phash, fine = build_set(seed)
    n = len(group)
    upper_i, upper_j = np.triu_indices(n, 1)
    same = group[upper_i] == group[upper_j]
    truth = set(zip(upper_i[same].tolist(), upper_j[same].tolist(), strict=True))
    print(f"\n## Precision / recall: {n} images ({len(set(group.tolist()))} originals × 5), "
          f"{len(truth)} duplicate pairs; seed {seed}; built in {time.perf_counter() - started:.0f} s; load: {load()}")
    print("| threshold | measure | pair precision | pair recall | group precision | group recall |")
    print("| --- | --- | --- | --- | --- | --- |")
    for threshold in (4, 6, 8, 10, 12):
        pi, pj, _ = pairs_within(phash, threshold)
        distances = confirm_distances([fine[k] for k in pi], [fine[k] for k in pj])
        keep = distances <= CONFIRM_MAX_DISTANCE
        for label, a, b in (("pHash only", pi, pj), (f"+ confirm ≤ {CONFIRM_MAX_DISTANCE}", pi[keep], pj[keep])):
            pair_p, pair_r = scores(set(zip(a.tolist(), b.tolist(), strict=True)), truth)
            grp_p, grp_r = scores(group_pairs(n, a, b), truth)
            print(f"| {threshold} | {label} | {pair_p:.3f} | {pair_r:.3f} | {grp_p:.3f} | {grp_r:.3f} |")
    pi, pj, _ = pairs_within(phash, 8)
    keep = confirm_distances([fine[k] for k in pi], [fine[k] for k in pj]) <= CONFIRM_MAX_DISTANCE
    found = set(zip(pi[keep].tolist(), pj[keep].tolist(), strict=True))
    print("\nAt threshold 8 with confirmation, by edit (base ↔ edited copy) and by kind of image:")
    for name in ("resize", "jpeg", "crop", "bright"):
        wanted = {(a, b) for a, b in truth if {edit[a], edit[b]} == {"base", name}}
        print(f"- recall {name}: {len(found & wanted) / len(wanted):.3f} ({len(wanted)} pairs)")
    for category in ("tile", "packshot", "coin", "face"):
        inside = {(a, b) for a, b in zip(pi.tolist(), pj.tolist(), strict=True) if kind[a] == category == kind[b]}
        raw_p, _ = scores(inside, truth)
        conf_p, _ = scores(inside & found, truth)
        print(f"- precision among {category}s: pHash only {raw_p:.3f} ({len(inside)} candidate pairs), "
              f"confirmed {conf_p:.3f}")
    group2, _kind, _edit, phash2, fine2 = build_set(seed, crop=(0.04, 0.10))
    crop_pairs = [(a, a + 3) for a in range(0, len(group2), 5)]  # base, resize, jpeg, crop, bright
    close = [(phash2[a] ^ phash2[b]).bit_count() <= 8 for a, b in crop_pairs]
    confirmed = confirm_distances([fine2[a] for a, _ in crop_pairs], [fine2[b] for _, b in crop_pairs])
    both = np.array(close) & (confirmed <= CONFIRM_MAX_DISTANCE)
    print(f"- recall of heavier crops (4–10 % per side), pHash ≤ 8: {np.mean(close):.3f}; confirmed: {both.mean():.3f} "
          "(pHash itself moves past 8 bits: the limit of the candidate measure, not of the index)")


def tune(seed: int) -> None:
    """The sweep CONFIRM_MAX_DISTANCE was chosen on (seed 0; the figures above use another seed)."""
    group, _kind, _edit, phash, fine = build_set(seed)
    n = len(group)
    upper_i, upper_j = np.triu_indices(n, 1)
    same = group[upper_i] == group[upper_j]
    truth = set(zip(upper_i[same].tolist(), upper_j[same].tolist(), strict=True))
    pi, pj, _ = pairs_within(phash, 8)
    distances = confirm_distances([fine[k] for k in pi], [fine[k] for k in pj])
    print(f"\n## Confirmation threshold sweep at pHash ≤ 8, seed {seed}; load: {load()}")
    print("| confirm ≤ | pair precision | pair recall | group precision | group recall |")
    print("| --- | --- | --- | --- | --- |")
    for limit in range(22, 44, 2):
        keep = distances <= limit
        pair_p, pair_r = scores(set(zip(pi[keep].tolist(), pj[keep].tolist(), strict=True)), truth)
        grp_p, grp_r = scores(group_pairs(n, pi[keep], pj[keep]), truth)
        print(f"| {limit} | {pair_p:.3f} | {pair_r:.3f} | {grp_p:.3f} | {grp_r:.3f} |")


# ---------------------------------------------------------------- 1,000,000 hashes


def synthetic(rows: int, seed: int = 0):
    """Uniform random pHashes with 1 % planted near copies (≤ 6 bits apart, same 256-bit hash but
    ≤ 12 mid bits flipped), ids, and 256-bit hashes (random for the rest)."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64 - 1, rows, dtype=np.uint64, endpoint=True)
    fine = rng.integers(0, 256, (rows, 32), dtype=np.uint8)
    planted = rows // 100
    source = rng.choice(rows - planted, planted, replace=False)
    flips = np.zeros(planted, dtype=np.uint64)
    for _ in range(6):
        flips |= np.uint64(1) << rng.integers(0, 64, planted).astype(np.uint64)
    hashes[rows - planted:] = hashes[source] ^ flips
    fine[rows - planted:] = fine[source]
    fine[rows - planted:, 16:] ^= (rng.random((planted, 16)) < 0.05).astype(np.uint8) << 3
    return hashes, [bytes(row).hex() for row in fine], source, rows - planted


def pure_grouping(hashes) -> None:
    print(f"\n## Grouping {len(hashes):,} hashes in memory (core.library.hamming.pairs_within + components), threshold 8")
    for _ in range(2):
        started, cpu = time.perf_counter(), time.process_time()
        pi, pj, _ = pairs_within(hashes, 8)
        found = time.perf_counter() - started
        groups = connected_groups(len(hashes), pi, pj)
        print(f"- {len(pi):,} pairs in {found:.1f} s, {len(groups):,} groups in {time.perf_counter() - started:.1f} s "
              f"total wall, {time.process_time() - cpu:.1f} s CPU; load: {load()}")


def database(rows: int, url: str, keep: bool = False) -> None:
    from sqlalchemy import create_engine, text


    name = "cls_bench_duplicates"
    base_url = url.rsplit("/", 1)[0]
    bench_url = f"{base_url}/{name}"
    admin = create_engine(f"{base_url}/postgres", isolation_level="AUTOCOMMIT")
    hashes, fine, source, first_planted = synthetic(rows)
    id_bytes = np.random.default_rng(7).bytes(16 * rows)  # the same ids every run: a kept database is reused
    ids = [uuid.UUID(bytes=id_bytes[16 * k:16 * k + 16], version=4) for k in range(rows)]
    with admin.connect() as connection:
        exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
    reuse = False
    if exists:
        probe = create_engine(bench_url)
        with probe.connect() as connection:
            reuse = connection.execute(text("SELECT count(*) FROM cls_images")).scalar() == rows and \
                connection.execute(text("SELECT 1 FROM cls_images WHERE id = :i"), {"i": ids[0]}).first() is not None
        probe.dispose()
    started = time.perf_counter()
    if not reuse:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            connection.execute(text(f"CREATE DATABASE {name}"))
        load_rows(bench_url, ids, hashes, fine)
    engine = create_engine(bench_url)
    print(f"\n## Postgres with {rows:,} images ({'reused' if reuse else 'loaded'} in "
          f"{time.perf_counter() - started:.0f} s)")
    query_timings(engine, ids, source, first_planted)
    grouping_timing(engine)
    engine.dispose()
    if keep:
        print(f"- kept the database {bench_url}")
    else:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
    admin.dispose()


def load_rows(bench_url: str, ids, hashes, fine) -> None:
    from sqlalchemy import create_engine, text

    from core.models import Base

    engine = create_engine(bench_url)
    Base.metadata.create_all(engine)
    raw = engine.raw_connection()
    with raw.cursor() as cursor, cursor.copy(
            "COPY cls_images (id, filename, storage_path, phash, phash_band0, phash_band1, phash_band2, phash256, "
            "file_hash, created_at) FROM STDIN") as copy:
        start = datetime(2025, 1, 1, tzinfo=UTC)  # a library built up over time, not one import a moment ago
        for k, image_id in enumerate(ids):
            value = int(hashes[k])
            copy.write_row((image_id, f"{image_id}.jpg", f"images/{image_id}.jpg", f"{value:016x}",
                            *band_values(value), fine[k], image_id.hex * 2, start + timedelta(seconds=30 * k)))
    raw.commit()
    raw.close()
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as connection:  # VACUUM sets the visibility map index-only scans rely on
        connection.execute(text("VACUUM ANALYZE cls_images"))
    engine.dispose()


def query_timings(engine, ids, source, first_planted) -> None:
    """duplicates_of on images with a planted copy, through the in-memory index (the default) and the
    band-index SQL (use_index=False): wall time, this process's CPU time, whether both give identical
    results, and Postgres's own execution time of the SQL candidate query (EXPLAIN ANALYZE); on a
    shared machine the CPU figures say what the query costs, the wall figures what contention adds."""
    from sqlalchemy.orm import Session

    from core.library.duplicates import duplicates_of
    from core.library.library_index import library_index
    from core.models import ClsImage

    rng = np.random.default_rng(1)
    picks = rng.choice(len(source), 300, replace=False)
    with Session(engine) as session:
        started, cpu_started = time.perf_counter(), time.process_time()
        library_index(session).refresh(session)
        print(f"- in-memory index built from {len(library_index(session).index):,} rows in "
              f"{time.perf_counter() - started:.1f} s wall, {time.process_time() - cpu_started:.1f} s CPU "
              f"(once per process; each query then catches up with rows created since); load: {load()}")
        results = {}
        for use_index in (True, False):
            found, wall, cpu, answers = 0, [], [], []
            for k in picks:
                image_id = ids[int(source[k])]
                session.expunge_all()
                started, cpu_started = time.perf_counter(), time.process_time()
                matches = duplicates_of(session=session, image_id=image_id, threshold=8, storage=object(),
                                        use_index=use_index)
                wall.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - cpu_started) * 1000)
                found += ids[first_planted + int(k)] in {m["id"] for m in matches}
                answers.append(matches)
            results[use_index] = answers
            label = "in-memory index" if use_index else "band-index SQL"
            queries = "two queries" if use_index else "two queries, one of them the band probes"
            print(f"- duplicates_of via the {label} ({queries}; confirmation), threshold 8, "
                  f"300 images with a planted copy: found {found}/300; wall median {statistics.median(wall):.2f} ms, "
                  f"p95 {np.percentile(wall, 95):.2f} ms; client CPU median {statistics.median(cpu):.2f} ms; "
                  f"load: {load()}")
        print(f"- identical results from both paths: {results[True] == results[False]}")
        server = []
        for k in picks[:50]:
            phash = session.get(ClsImage, ids[int(source[k])]).phash
            query = select_candidates(session, phash)
            compiled = query.compile(session.bind, compile_kwargs={"literal_binds": True})
            plan = [row[0] for row in session.connection().exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}")]
            server.append(float(next(line for line in plan if line.startswith("Execution Time")).split()[2]))
    print(f"- band-index SQL candidate query, Postgres execution median {statistics.median(server):.2f} ms, "
          f"p95 {np.percentile(server, 95):.2f} ms")
    print("- plan: " + " / ".join(line.strip() for line in plan if "Scan" in line or "BitmapOr" in line))


def select_candidates(session, phash: str):
    from sqlalchemy import select

    from core.library.duplicates import _band_condition
    from core.models import ClsImage

    return select(ClsImage.id, ClsImage.phash, ClsImage.phash256).where(_band_condition(session, int(phash, 16), 8))


def grouping_timing(engine) -> None:
    from sqlalchemy.orm import Session

    from core.library.duplicates import near_duplicate_groups

    started, cpu = time.perf_counter(), time.process_time()
    with Session(engine) as session:
        groups = near_duplicate_groups(session=session, storage=object(), threshold=8, confirm=True)
    print(f"- near_duplicate_groups (load all hashes, index self-join, confirm, components), threshold 8: "
          f"{time.perf_counter() - started:.1f} s wall, {time.process_time() - cpu:.1f} s CPU in this process, "
          f"{len(groups):,} groups; load: {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quality-only", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--db-only", action="store_true", help="only the Postgres part")
    parser.add_argument("--keep-db", action="store_true", help="leave the benchmark database for inspection")
    parser.add_argument("--tune", action="store_true", help="only the confirmation-threshold sweep (use --seed 0)")
    parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES_URL",
                                                             "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    if args.tune:
        tune(args.seed)
        return
    if not (args.skip_quality or args.db_only):
        quality(args.seed)
    if args.quality_only:
        return
    if not args.db_only:
        hashes, _fine, _source, _first = synthetic(args.rows)
        pure_grouping(hashes)
    database(args.rows, args.postgres, keep=args.keep_db)


if __name__ == "__main__":
    main()
