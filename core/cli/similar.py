"""`python -m core similar`: embedding indexes of the library (`embed`, `indexes`) and the images
most similar to one (`find`)."""

from __future__ import annotations

from core.db import session_scope
from core.errors import InvalidInput
from core.ids import as_uuid
from core.models import ClsEmbeddingIndex
from core.similarity.embeddings import describe, parse_source, run_embedding, start_embedding
from core.similarity.search import similar_images
from core.users import operator_user


def register(subparsers) -> None:
    parser = subparsers.add_parser("similar", help="embedding indexes and similar-image search")
    commands = parser.add_subparsers(dest="similar_command", required=True, parser_class=type(parser))
    embed = commands.add_parser("embed", help="embed the library images an index lacks (incremental)")
    embed.add_argument("--model", required=True,
                       help="a registered model id, or family/size from the model table (e.g. convnext/atto)")
    embed.add_argument("--weights", help="for family/size: hub (default), none, file:PATH or storage:KEY")
    embed.add_argument("--queue", action="store_true", help="queue the job (workers run it) instead of running it here")
    embed.set_defaults(handler=cmd_embed)
    find = commands.add_parser("find", help="the library images most similar to one")
    find.add_argument("image_id")
    find.add_argument("--k", default="20", help="how many (1..1000, default 20)")
    find.add_argument("--min", default="0", help="least cosine similarity, -1..1 (default 0)")
    find.add_argument("--model", help="which index (as given to embed); default: the newest with vectors")
    find.add_argument("--weights")
    find.set_defaults(handler=cmd_find)
    indexes = commands.add_parser("indexes", help="the embedding indexes and their state")
    indexes.set_defaults(handler=cmd_indexes)


def cmd_embed(args) -> dict:
    if args.queue:
        job_id = start_embedding(actor=operator_user(), model=args.model, weights=args.weights)
        return {"queued": True, "job_id": str(job_id)}
    return run_embedding(actor=operator_user(), source=parse_source(args.model, args.weights))


def cmd_find(args) -> dict:
    image_id = as_uuid(args.image_id, "image id")
    source = parse_source(args.model, args.weights) if args.model else None
    try:
        k, least = int(args.k), float(args.min)
    except ValueError:
        raise InvalidInput(f"--k must be a whole number and --min a number, got {args.k!r} and {args.min!r}") from None
    with session_scope() as session:
        found = similar_images(session, image_id=image_id, k=k, min_similarity=least, source=source)
    return {"image_id": str(image_id), "similar": [{"id": str(m["id"]), "file": m["filename"],
                                                   "similarity": m["similarity"]} for m in found]}


def cmd_indexes(args) -> dict:
    from sqlalchemy import select

    with session_scope() as session:
        rows = session.scalars(select(ClsEmbeddingIndex).order_by(ClsEmbeddingIndex.created_at)).all()
        return {"indexes": [describe(session=session, row=row) for row in rows]}
