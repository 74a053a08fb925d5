"""Roles from configuration, checked in core; audit rows for destructive actions."""

import pytest

from core.config import reset_settings_cache
from core.errors import PermissionDenied
from core.permissions import audit, can_act, recent_audit_events, register_user, require
from core.users import local_user, oidc_user, operator_user


@pytest.fixture
def roles(monkeypatch):
    monkeypatch.setenv("ROLES", "boss@acme.com=admin,acme.com=labeler,guest@acme.com=viewer")
    monkeypatch.setenv("DEFAULT_ROLE", "viewer")
    reset_settings_cache()
    yield
    reset_settings_cache()


def test_roles_by_email_then_domain_then_default(roles):
    boss, labeler, guest, stranger = (oidc_user(e) for e in
                                      ("boss@acme.com", "ann@acme.com", "guest@acme.com", "x@other.org"))
    assert (boss.role, labeler.role, guest.role, stranger.role) == ("admin", "labeler", "viewer", "viewer")
    require(boss, "admin", "deleting images")
    require(labeler, "labeler", "saving a label")
    with pytest.raises(PermissionDenied, match="deleting images needs the admin role; you are a labeler"):
        require(labeler, "admin", "deleting images")
    with pytest.raises(PermissionDenied, match="needs the labeler role; you are a viewer"):
        require(guest, "labeler", "saving a label")
    assert can_act(labeler, "labeler") and not can_act(stranger, "labeler") and not can_act(None, "viewer")


def test_the_local_user_has_the_default_role_unless_roles_name_it(monkeypatch):
    monkeypatch.delenv("ROLES", raising=False)
    monkeypatch.setenv("DEFAULT_ROLE", "labeler")
    reset_settings_cache()
    require(local_user(), "labeler", "labeling")
    with pytest.raises(PermissionDenied, match="needs the admin role; you are a labeler"):
        require(local_user(), "admin", "deleting images")
    monkeypatch.setenv("ROLES", f"{local_user().email}=admin")
    reset_settings_cache()
    require(local_user(), "admin", "deleting images")
    reset_settings_cache()


def test_the_operator_is_admin_whatever_the_configuration(roles, monkeypatch):
    monkeypatch.setenv("ROLES", "operator@cli=viewer")  # no setting makes the CLI a viewer
    reset_settings_cache()
    require(operator_user(), "admin", "training a model")


def test_audit_rows(db_stack):
    user = oidc_user("boss@acme.com")
    with db_stack.session() as session:
        register_user(session=session, user=user)
        audit(session=session, actor=user, action="delete_images", target_type="image", row_count=12)
    with db_stack.session() as session:
        (event,) = recent_audit_events(session=session)
        assert (event.user_email, event.action, event.row_count) == ("boss@acme.com", "delete_images", 12)


# The fail-closed primitive every write service uses: @requires + a required keyword `actor`.

def test_requires_checks_the_actor_before_the_body_and_refuses_none(roles):
    from core.permissions import WRITE_SERVICES, requires
    from core.users import operator_user

    ran = []

    @requires("admin", "renaming a thing")
    def rename_thing(*, actor, name):
        ran.append(name)
        return name

    assert WRITE_SERVICES[f"{__name__}.{rename_thing.__qualname__}"].role == "admin"
    assert rename_thing(actor=oidc_user("boss@acme.com"), name="a") == "a"
    assert rename_thing(actor=operator_user(), name="b") == "b"
    with pytest.raises(PermissionDenied, match="renaming a thing needs the admin role; you are a labeler"):
        rename_thing(actor=oidc_user("ann@acme.com"), name="c")
    with pytest.raises(PermissionDenied, match="no signed-in user"):
        rename_thing(actor=None, name="d")
    with pytest.raises(PermissionDenied):
        rename_thing(name="e")  # a forgotten actor is refused, not allowed
    with pytest.raises(TypeError, match="must be a core.users.User"):
        rename_thing(actor="boss@acme.com", name="f")
    assert ran == ["a", "b"]


def test_requires_rejects_a_service_without_a_required_keyword_actor():
    from core.permissions import requires

    with pytest.raises(TypeError, match="required keyword-only `actor`"):
        @requires("admin", "x")
        def optional_actor(*, actor=None):
            pass
    with pytest.raises(TypeError, match="required keyword-only `actor`"):
        @requires("admin", "x")
        def positional_actor(actor):
            pass


def test_roles_are_resolved_again_at_each_check(roles, monkeypatch):
    from core.permissions import can_act, require

    ann = oidc_user("ann@acme.com")
    require(ann, "labeler", "labeling")
    monkeypatch.setenv("ROLES", "boss@acme.com=admin")  # ann's labeler role removed meanwhile
    reset_settings_cache()
    assert not can_act(ann, "labeler")
    with pytest.raises(PermissionDenied, match="you are a viewer"):
        require(ann, "labeler", "labeling")


def test_actor_record_round_trip_keeps_who_but_not_the_role(roles):
    from core.users import actor_from_record, actor_record, operator_user

    for actor in (oidc_user("ann@acme.com", "Ann"), local_user(), operator_user()):
        again = actor_from_record(actor_record(actor))
        assert (again.id, again.email, again.is_operator, again.is_local) == (
            actor.id, actor.email, actor.is_operator, actor.is_local)
