"""How a page runs a core call and shows why it could not: the one way the pages show a UserError
(PermissionDenied is one) — its message as one red line, nothing else on the screen lost.

`act` is for a call from a button or a form: it opens the session, whose transaction commits when
the call returns, and hands it the signed-in user as the actor (a caller already inside a session
passes it, and the call joins that transaction). `shown` is the same display for a call that needs
neither (a read, or a service that opens its own session); `user_errors` around a block;
`read_or_explain` is a detail view's read, its title shown above the message. Callbacks cannot draw:
they keep the message in session state for the page to show on its rerun.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import streamlit as st

from core.db import session_scope
from core.errors import UserError
from core.users import User
from ui.shared import current_user

Result = TypeVar("Result")


def act(action: Callable[[Any, User], Result], success: str | None = None, *, session=None) -> Result | None:
    """`action(session, actor)`: its result, or None after showing its UserError. A success toast
    when given. A call that opens its own session (a job start) ignores `session`."""
    try:
        if session is not None:
            result = action(session, current_user())
        else:
            with session_scope() as opened:
                result = action(opened, current_user())
    except UserError as exc:
        st.error(str(exc))
        return None
    if success:
        st.toast(success)
    return result


def shown(call: Callable[[], Result]) -> Result | None:
    """`call()`'s result, or None after showing its UserError as `act` shows it."""
    try:
        return call()
    except UserError as exc:
        st.error(str(exc))
        return None


@contextmanager
def user_errors() -> Iterator[None]:
    """Around a block that reads: a UserError stops the block and shows as `act` shows it; other
    errors still surface."""
    try:
        yield
    except UserError as exc:
        st.error(str(exc))


def read_or_explain(read: Callable[[Any], Result], *, title: str) -> Result | None:
    """What a detail view shows (`read(session)`), or None after showing `title` and why it cannot
    (an unknown or deleted id)."""
    try:
        with session_scope() as session:
            return read(session)
    except UserError as exc:
        st.title(title)
        st.error(str(exc))
        return None
