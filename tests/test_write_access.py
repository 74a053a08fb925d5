"""The test that cannot be forgotten: every writer is declared, and every declared service refuses.

(a) Importing every module of core/ and jobs/ fills core.permissions.WRITE_SERVICES (the `@requires`
declarations). (b) Independently, tests/write_scan.py reads the source of core/, jobs/ and pages/ and
finds every public function that reaches a write (directly or through other undeclared functions);
each must be declared or on BOOKKEEPING below, and the two views must agree. (c) Every declared
service is called as a viewer (and, for admin actions, as a labeler) with made-up arguments: it
must refuse with PermissionDenied naming the role, before its body runs, and change nothing (row
counts of every table, the storage listing) on SQLite and on Postgres.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys

import pytest
from sqlalchemy import func, select

from core.config import reset_settings_cache
from core.errors import PermissionDenied
from tests.write_scan import scan, writers

# Writers that are not actions a role governs. Each stops the scan's propagation, so keep this short
# and say why; anything else that writes must be declared with @requires.
BOOKKEEPING = {
    "core.jobs.rows.JobContext": "a running job's own progress, message and cancel check (its cls_jobs row)",
    "core.jobs.rows.run_job": "the job lifecycle: running → succeeded/failed/cancelled on its own row",
    "core.jobs.rows.reap_stale_jobs": "marks failed the jobs whose worker died (no heartbeat)",
    "core.jobs.rows.create_job": "the job-row primitive; a call to it marks its caller as a writer",
    "core.jobs.queue.enqueue": "the queue primitive; a call to it marks its caller as a writer",
    "core.jobs.queue.submit_created": "hands a job row its caller created to the backend (marks it failed if that fails)",
    "core.jobs.fanout.fan_out": "the job-row primitive of a fanned-out job: its chunk rows (like create_job)",
    "core.jobs.fanout.ChunkContext": "a running chunk's progress, summed onto its parent's row",
    "core.jobs.fanout.run_chunk": "the chunk lifecycle: queued → running → succeeded/failed/cancelled on its own row",
    "core.jobs.fanout.on_chunk_failed": "RQ's failure callback: a chunk whose worker died ends failed (retried by RQ)",
    "core.jobs.fanout.requeue_stale_chunks": "puts back on their queue the chunks whose worker died (no heartbeat)",
    "core.jobs.fanout.finish_parent": "the fanned-out job's lifecycle: its row ends once every chunk has",
    "core.training.runs.mark_run_failed": "a run whose job failed or was refused ends failed (failure hook)",
    "jobs.training.on_job_failed": "the training job's failure hook (mark_run_failed)",
    "jobs.dataset_imports.on_job_failed": "deletes a failed import job's own uploaded archive",
    "core.permissions.audit": "the audit row a declared destructive service writes",
    "core.permissions.register_user": "records the signed-in user (id → e-mail) on sign-in",
    "core.datasets.locks.lock_dataset": "a row lock; an UPDATE bumping the dataset's revision (the pages' freshness key)",
    "core.labeling.reservations": "labeling leases (reserved_by/until), reached only through core.labeling.queue's declared services",
    "core.library.object_hooks": "storage objects that follow the caller's transaction (gone on rollback, or once a "
                                 "deletion commits); the callers write rows and are declared",
    "core.library.duplicates._store_fine_hashes": "caches a hash derived from an image's bytes (reads stay reads)",
    "core.library.duplicates._store_bands": "caches the pHash index bands derived from the stored pHash",
}
SCANNED = ("core", "jobs", "pages")
ROLES = "boss@acme.com=admin,ann@acme.com=labeler"


def import_everything() -> dict:
    """Import every module of core/ and jobs/ (declarations register on import); the declarations."""
    from core.permissions import WRITE_SERVICES

    for package in ("core", "jobs"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if not info.name.endswith(".__main__"):  # the CLI's entry point runs the CLI
                importlib.import_module(info.name)
    return {name: rule for name, rule in WRITE_SERVICES.items() if name.split(".")[0] in ("core", "jobs")}


def _allowed(name: str) -> bool:
    return any(name == entry or name.startswith(entry + ".") for entry in BOOKKEEPING)


def undeclared_writers(functions=None) -> dict[str, list[str]]:
    """Public functions that reach a write, neither declared nor bookkeeping (with their path)."""
    functions = functions or scan(SCANNED)
    for name in functions:  # bookkeeping stops propagation like a declaration does
        if _allowed(name):
            functions[name].declared = True
    found = writers(functions)
    return {name: path for name, path in found.items() if functions[name].public and not functions[name].declared}


# ---------------------------------------------------------------- (a) and (b): discovery


def test_every_public_writer_is_declared_or_bookkeeping():
    problems = undeclared_writers()
    assert not problems, "writers without @requires (declare them, or add to BOOKKEEPING with a reason):\n" + \
        "\n".join(f"  {name}: {' -> '.join(path)}" for name, path in sorted(problems.items()))


def test_declarations_found_by_import_and_by_reading_the_source_agree():
    declared = import_everything()
    functions = scan(SCANNED)
    in_source = {name for name, fn in functions.items() if fn.declared}
    assert set(declared) == in_source
    assert len(declared) > 60  # every area's writers; a collapse to a handful means a broken import
    assert not [name for name in declared if not functions[name].public], "a declared service is public"


def test_bookkeeping_entries_exist_and_write():
    functions = scan(SCANNED)
    found = writers({**functions})
    for entry in BOOKKEEPING:
        members = [name for name in functions if name == entry or name.startswith(entry + ".")]
        assert members, f"{entry} no longer exists: remove it from BOOKKEEPING"
        assert any(name in found for name in members), f"{entry} writes nothing: remove it from BOOKKEEPING"


PROBE = """
from core.permissions import requires
from core.jobs.queue import enqueue


def reader(*, session):
    return session.get(object, 1)


def rename(*, session, row_id, name):
    row = session.get(object, row_id)
    row.name = name


def rename_twice(*, session, row_id):
    rename(session=session, row_id=row_id, name="x")


def queue_it(*, kind):
    return enqueue(kind=kind)


def _private_writer(*, storage):
    storage.delete("k")


@requires("admin", "renaming")
def guarded(*, session, actor, row_id):
    session.add(row_id)


def through_guarded(*, session, actor):
    guarded(session=session, actor=actor, row_id=1)
"""


def test_the_scan_finds_an_unguarded_writer(tmp_path):
    """The scan is not blind: undeclared writers (direct, through another, a job) are reported; a
    reader, a private helper, a declared service and a caller of one are not."""
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "probe.py").write_text(PROBE)
    found = undeclared_writers(scan(("core",), root=tmp_path))
    assert set(found) == {"core.probe.rename", "core.probe.rename_twice", "core.probe.queue_it"}
    assert found["core.probe.rename_twice"][0] == "core.probe.rename_twice"


# ---------------------------------------------------------------- (c): every declared service refuses


class _Argument:
    """A made-up argument: the role check runs before the body, so a service never touches it."""

    def __repr__(self) -> str:
        return "<made-up argument>"


def _call(fn, actor):
    """Call a declared service with made-up arguments for every required parameter."""
    args, kwargs = [], {"actor": actor}
    for name, parameter in inspect.signature(fn).parameters.items():
        if name == "actor" or parameter.default is not inspect.Parameter.empty:
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            args.append(_Argument())
        else:
            kwargs[name] = _Argument()
    return fn(*args, **kwargs)


def _snapshot(stack) -> dict:
    from core.models import Base

    with stack.session() as session:
        counts = {table.name: session.scalar(select(func.count()).select_from(table))
                  for table in Base.metadata.sorted_tables}
    return {"rows": counts, "objects": sorted(stack.storage.list_keys(""))}


@pytest.fixture
def seeded(db_stack, monkeypatch):
    """Some rows and objects to stay untouched, and the people: ROLES gives boss admin, ann labeler;
    anyone else is a viewer."""
    from tests.factories import make_class, make_dataset, make_dataset_image, make_image_row

    monkeypatch.setenv("ROLES", ROLES)
    monkeypatch.setenv("DEFAULT_ROLE", "viewer")
    reset_settings_cache()
    with db_stack.session() as session:
        dataset = make_dataset(session, "pets")
        cat = make_class(session, "cat")
        make_dataset_image(session, db_stack.storage, dataset, seed=1, classes=[cat])
        make_image_row(session, db_stack.storage, seed=2)
    yield db_stack
    reset_settings_cache()


def test_every_declared_service_refuses_a_viewer_and_a_labeler_before_its_body(seeded):
    from core.users import oidc_user

    declared = import_everything()
    people = {"viewer": oidc_user("guest@acme.com"), "labeler": oidc_user("ann@acme.com")}
    before = _snapshot(seeded)
    entered: list[str] = []
    refused = 0
    for name, rule in sorted(declared.items()):
        module, _, qualname = name.rpartition(".")
        service = getattr(sys.modules[module], qualname)
        body = inspect.unwrap(service).__code__

        def watch(frame, event, arg, body=body, name=name):
            if event == "call" and frame.f_code is body:
                entered.append(name)

        roles = ["viewer"] if rule.role == "labeler" else ["viewer", "labeler"]
        for role in roles:
            sys.setprofile(watch)
            try:
                with pytest.raises(PermissionDenied) as refusal:
                    _call(service, people[role])
            finally:
                sys.setprofile(None)
            assert str(refusal.value) == f"{rule.action} needs the {rule.role} role; you are a {role}", name
            refused += 1
        for missing in (None,):  # no actor at all: refused, never taken as allowed
            with pytest.raises(PermissionDenied, match="no signed-in user"):
                _call(service, missing)
    assert entered == [], f"these services ran their body for a refused actor: {entered}"
    assert _snapshot(seeded) == before
    assert refused >= len(declared)


# ---------------------------------------------------------------- the README says what the code does


def test_the_readme_role_table_is_the_declarations():
    from tests.role_table import README, readme_table, role_table

    assert readme_table(README.read_text()) == role_table(import_everything()), \
        "README's role table differs from the @requires declarations: run `python -m tests.role_table`"
