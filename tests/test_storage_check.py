"""Reconciliation finds orphan objects and rows without objects; --fix removes only old orphans."""

from datetime import timedelta

from core.library.storage_check import check_storage, fix_storage
from tests.factories import ADMIN, make_image_row


def test_reports_and_fixes_orphans(stack):
    with stack.session() as session:
        kept = make_image_row(session, stack.storage, seed=1)
        broken = make_image_row(session, stack.storage, seed=2)
    stack.storage.delete(broken.storage_path)  # a row whose object is gone
    stack.storage.put("images/orphan.png", b"left behind by a crash")
    stack.storage.put("platform/products/x.png", b"not ours to judge")

    with stack.session() as session:
        report = check_storage(session=session, storage=stack.storage)
    assert report["orphan_objects"] == ["images/orphan.png"]
    assert report["missing_objects"] == [{"key": broken.storage_path, "needed_by": f"image {broken.id}"}]
    assert not report["ok"]

    with stack.session() as session:
        young = fix_storage(session=session, actor=ADMIN, storage=stack.storage)
    assert young["deleted"] == [] and young["kept_too_new"] == ["images/orphan.png"]

    with stack.session() as session:
        fixed = fix_storage(session=session, actor=ADMIN, storage=stack.storage, grace=timedelta(0))
    assert fixed["deleted"] == ["images/orphan.png"]
    assert not stack.storage.exists("images/orphan.png")
    assert stack.storage.exists(kept.storage_path)
    assert stack.storage.exists("platform/products/x.png")
