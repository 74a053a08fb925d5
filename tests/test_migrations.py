"""Alembic: `upgrade head` builds everything on empty SQLite and Postgres; no drift from the models."""

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from core.config import reset_settings_cache
from core.db import dispose_engines
from core.migrate import check_drift, upgrade_head
from core.models import Base


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url = request.getfixturevalue("postgres_server_url")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    yield url
    dispose_engines()
    # Later tests in this session expect the ORM schema: rebuild it the way the stack fixture does.
    from tests.plugins import stack

    stack._pg_schema_ready.discard(url)


def test_upgrade_head_creates_every_table_and_has_no_drift(empty_database, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", empty_database)
    reset_settings_cache()
    assert upgrade_head(empty_database) == "0001"
    engine = create_engine(empty_database)
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    engine.dispose()
    check_drift(empty_database)  # raises when models and migrations disagree
    engine = create_engine(empty_database)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":  # the Images page's text search: trigram GIN indexes
            definitions = dict(connection.execute(text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'idx_cls_images_%_trgm'")).all())
            assert set(definitions) == {"idx_cls_images_name_trgm", "idx_cls_images_tags_trgm"}
            assert all("USING gin" in d and "gin_trgm_ops" in d for d in definitions.values()), definitions
        else:
            assert not [i for i in inspect(connection).get_indexes("cls_images") if "trgm" in i["name"]]
    engine.dispose()
    assert upgrade_head(empty_database) == "0001"  # idempotent
    dispose_engines()


def test_one_default_model_per_user_and_type(db_stack):
    import uuid

    from core.models import ClsTrainedModel

    user = uuid.uuid4()

    def model(default: bool, model_type: str = "convnext") -> ClsTrainedModel:
        return ClsTrainedModel(user_id=user, name="m", model_type=model_type, model_size="atto",
                               task_type="single_label", num_classes=2, class_names=["a", "b"],
                               class_mapping={}, is_default=default)

    with db_stack.session() as session:
        session.add_all([model(True), model(False), model(False), model(True, "vit")])
    with pytest.raises(IntegrityError):
        with db_stack.session() as session:
            session.add(model(True))


def test_check_constraints_hold(db_stack):
    from core.models import ClsImage

    with pytest.raises(IntegrityError):
        with db_stack.session() as session:
            session.add(ClsImage(filename="x.png", storage_path="images/x.png", source="ftp"))
