"""Demo data job (queue "imports"): what `python -m core demo` does, as the admin who asked, with a
progress bar."""

from __future__ import annotations

from core.imports.demo import load_demo
from core.jobs.rows import JobContext
from core.users import User


def load_demo_data(ctx: JobContext, *, actor: User, products: int = 24) -> dict:
    return load_demo(actor=actor, products=products,
                     progress=lambda done, total, message: ctx.progress(done, total, message, force=True))
