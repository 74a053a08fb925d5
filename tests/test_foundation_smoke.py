"""Quick check that the plumbing fixtures work on both set-ups."""

from sqlalchemy import func, select

from core.models import ClsClass
from tests.factories import make_class


def test_stack_roundtrip(stack):
    with stack.session() as session:
        make_class(session, "cats")
    with stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsClass)) == 1
    stack.storage.put("probe/x.txt", b"hello")
    assert stack.storage.get("probe/x.txt") == b"hello"
