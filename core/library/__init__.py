"""The image library: every image once, whatever dataset holds it.

Decoding under the pixel limit, hashing (SHA-256, pHash), the ingest every import ends in, library
queries and edits (folders, tags, delete), duplicates (exact groups, near duplicates through the
Hamming index), bulk actions over many images, and the storage/database reconciliation."""
