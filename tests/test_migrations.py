"""Alembic: `upgrade head` builds everything on empty SQLite and Postgres; no drift from the models."""

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from core.config import reset_settings_cache
from core.db import dispose_engines
from core.migrate import check_drift, head_revision, upgrade_head
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
    assert upgrade_head(empty_database) == head_revision()
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
    assert upgrade_head(empty_database) == head_revision()  # idempotent
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


def test_0002_gives_existing_datasets_the_classes_their_labels_use(empty_database, monkeypatch):
    """A database at 0001 with labels: after the upgrade each dataset's label space holds exactly the
    classes its labels use, in name order, and every dataset starts at revision 0."""
    import uuid

    from alembic import command

    from core.migrate import alembic_config

    monkeypatch.setenv("DATABASE_URL", empty_database)
    reset_settings_cache()
    command.upgrade(alembic_config(empty_database), "0001")
    engine = create_engine(empty_database)
    ids = {name: uuid.uuid4() for name in ("ds1", "ds2", "zebra", "apple", "mole", "img1", "img2")}
    sqlite = engine.dialect.name == "sqlite"

    def key(name):  # how SQLAlchemy's Uuid stores it: hex text on SQLite, uuid on Postgres
        return ids[name].hex if sqlite else ids[name]

    with engine.begin() as connection:
        for name in ("ds1", "ds2"):
            connection.execute(text("INSERT INTO cls_datasets (id, name) VALUES (:id, :name)"),
                               {"id": key(name), "name": name})
        for name in ("zebra", "apple", "mole"):
            connection.execute(text("INSERT INTO cls_classes (id, name) VALUES (:id, :name)"),
                               {"id": key(name), "name": name})
        for image in ("img1", "img2"):
            connection.execute(text("INSERT INTO cls_images (id, filename, storage_path, source) "
                                    "VALUES (:id, :f, :f, 'upload')"), {"id": key(image), "f": f"images/{image}.png"})
        for dataset, image, cls in (("ds1", "img1", "zebra"), ("ds1", "img2", "apple"), ("ds1", "img2", "zebra"),
                                    ("ds2", "img1", "mole")):
            connection.execute(text("INSERT INTO cls_labels (id, dataset_id, image_id, class_id) "
                                    "VALUES (:id, :d, :i, :c)"),
                               {"id": uuid.uuid4().hex if sqlite else uuid.uuid4(), "d": key(dataset), "i": key(image),
                                "c": key(cls)})
    engine.dispose()
    assert upgrade_head(empty_database) == head_revision()
    from sqlalchemy.orm import Session

    from core.datasets.label_space import space_class_ids
    from core.models import ClsDataset

    engine = create_engine(empty_database)
    with Session(engine) as session:
        assert space_class_ids(session, ids["ds1"]) == [ids["apple"], ids["zebra"]]
        assert space_class_ids(session, ids["ds2"]) == [ids["mole"]]
        assert {d.revision for d in session.query(ClsDataset)} == {0}
    engine.dispose()
    dispose_engines()
