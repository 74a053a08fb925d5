"""Demo data job (queue "imports"): what `python -m core demo` does, with a progress bar."""

from __future__ import annotations

from core.demo import load_demo
from core.jobs import JobContext


def load_demo_data(ctx: JobContext, *, products: int = 24) -> dict:
    return load_demo(products=products, progress=lambda done, total, message: ctx.progress(done, total, message,
                                                                                          force=True))
