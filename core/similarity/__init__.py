"""Similarity over the image library: one embedding vector per image and what is built on them.

Owns: embedding indexes (cls_embedding_indexes: which model, dimension, count, the float16 shards in
object storage) and the job that fills them incrementally (`embeddings`), the model side that turns
images into L2-normalised pre-logit vectors (`embedder`, no database code), the shards' storage
layout (`shards`), the approximate nearest-neighbour index over them, kept per process like the pHash
index (`ann`, faiss IVF), and "most similar images" (`search`). Near duplicates that survive crops
(pHashes of sub-crops, with the embedding cosine as an optional second stage) live with the other
duplicate code: core/library/crop_hashes.py, crop_duplicates.py."""
