"""Hypothesis fuzzing of the archive reader, the layout detector and the CSV parsers (bounded so it
stays fast in the suite; bench/bench_fuzz.py runs the same targets for longer)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.fuzz import CSV_TEXT, ENTRY_NAMES, check_archive, check_csv, check_layout, zip_bytes
from tests.hostile.tally import TALLY, Tally

BOUNDED = settings(max_examples=150, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_clean(local: Tally) -> None:
    TALLY.tried += local.tried
    TALLY.crashes += local.crashes
    TALLY.lost += local.lost
    print(local.line())
    assert not local.crashes, sorted({c.strip().splitlines()[-1] for c in local.crashes})
    assert not local.lost, local.lost[:3]


def test_fuzz_archive_reader_and_layout_from_zips():
    local = Tally()

    @BOUNDED
    @given(st.one_of(zip_bytes(), st.binary(max_size=400)))
    def run(data):
        check_archive(data, local)

    run()
    assert_clean(local)


def test_fuzz_layout_detector_names_and_csvs():
    local = Tally()

    @BOUNDED
    @given(st.lists(ENTRY_NAMES, max_size=12), CSV_TEXT)
    def run(names, csv_text):
        check_layout(names, csv_text, local)

    run()
    assert_clean(local)


def test_fuzz_csv_parsers():
    local = Tally()

    @BOUNDED
    @given(st.one_of(st.binary(max_size=300), CSV_TEXT.map(str.encode)))
    def run(data):
        check_csv(data, local)

    run()
    assert_clean(local)


def test_seeded_byte_mutations_of_zips():
    """Random byte flips of small ZIPs (found: 'zip file version' NotImplementedError, zlib.error)."""
    import io
    import random
    import zipfile

    from tests.hostile.fuzz import check_archive

    rng, local = random.Random(7), Tally()
    for index in range(600):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED if index % 2 else zipfile.ZIP_STORED) as archive:
            for j in range(rng.randint(1, 3)):
                archive.writestr(f"c/{j}.png", bytes(rng.randrange(256) for _ in range(rng.randint(0, 30))) * 3)
        data = bytearray(buffer.getvalue())
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        check_archive(bytes(data), local)
    assert_clean(local)
