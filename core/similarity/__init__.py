"""Similarity over the image library: one embedding vector per image and what is built on them.

Owns: embedding indexes (cls_embedding_indexes: which model, dimension, count, the float16 shards in
object storage) and the job that fills them incrementally (`embeddings`), the model side that turns
images into L2-normalised pre-logit vectors (`embedder`, no database code), the shards' storage
layout (`shards`), the approximate nearest-neighbour index over them, kept per process like the pHash
index (`ann`, usearch), "most similar images" (`search`), and near duplicates that survive crops
(`crop_hashes`: pHashes of sub-crops, with the embedding cosine as a second stage where an index
exists)."""
