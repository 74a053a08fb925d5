"""Default limits on hostile or oversized input. Settings (core/config.py) read these as defaults;
each can be overridden with an environment variable of the same name."""

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
"""Largest single file accepted by upload or URL import (bytes)."""

MAX_IMAGE_PIXELS = 100_000_000
"""Largest image (width × height), read from its header: a larger one is refused before any pixel is
decoded, wherever images are decoded (core/image_decoding.py)."""

MAX_ARCHIVE_ENTRIES = 200_000
"""Most entries a ZIP archive may hold."""

MAX_ARCHIVE_BYTES = 20 * 1024 * 1024 * 1024
"""Largest total uncompressed size of a ZIP archive (bytes)."""

MAX_ARCHIVE_RATIO = 200
"""Largest compression ratio of one archive entry (uncompressed / compressed): zip-bomb guard."""

URL_IMPORT_TIMEOUT_S = 20.0
"""Seconds allowed for connecting to and downloading one URL."""

URL_IMPORT_MAX_BYTES = 50 * 1024 * 1024
"""Largest body a URL import downloads before giving up (bytes)."""

URL_MAX_REDIRECTS = 5
"""Most redirects followed for one URL (each hop is checked against the address rules)."""

THUMBNAIL_SIZE = 256
"""Longest side of the JPEG thumbnail made at ingest (pixels)."""

PAGE_SIZE = 48
# The Images page counts matches exactly up to this many past the page shown, then says "N+": an exact
# count of a broad text search reads every matching row (42 ms for 25,000 of 100,000 images).
COUNT_AHEAD = 10_000
# A text search ("cat" in a quarter of 1,000,000 names) finds its matches only by testing each row
# (ILIKE '%term%'): 10,001 of them read 40,000 rows, 128-230 ms; so a search counts 1,000 ahead.
COUNT_AHEAD_SEARCH = 1_000
"""Images per page in grids."""

JOB_HEARTBEAT_S = 10.0
"""How often a running job records that it is alive (seconds)."""

JOB_STALE_AFTER_S = 90.0
"""A running job silent for this long is marked failed: its worker died."""

CHUNK_STALE_AFTER_S = 60.0
"""A running chunk of a fanned-out job silent for this long goes back on its queue (its worker died);
its heartbeat beats four times as often. Setting CHUNK_STALE_AFTER_S."""

PREDICTION_CHUNK_IMAGES = 2000
"""Images per chunk of a batch prediction (core/prediction/batch_chunks.py). Setting PREDICTION_CHUNK_IMAGES."""

IMPORT_CHUNK_MEMBERS = 1000
"""Archive members per chunk of an archive import (core/imports/archive_chunks.py). Setting IMPORT_CHUNK_MEMBERS."""
