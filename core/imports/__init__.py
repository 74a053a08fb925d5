"""Ways images come in, each ending in the library's ingest.

Safe ZIP reading, labeled-archive layouts and the archive import, URL fetching without SSRF, the
platform's own tables (products, cutouts, OD images), the batch loop labeled imports share, and the
demo data."""
