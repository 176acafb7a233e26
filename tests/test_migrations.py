"""Upgrading an empty database to head matches the ORM models; downgrade to base and back works."""

import pytest
from alembic import command
from alembic.util.exc import CommandError as AlembicCommandError

from bot import db


def test_upgrade_matches_models_and_round_trips(database_url):
    db.upgrade(database_url)
    cfg = db.alembic_config(database_url)
    command.check(cfg)  # raises if autogenerate finds any difference between models and schema
    db.downgrade(database_url, "base")
    assert db.current(database_url) is None
    db.upgrade(database_url)
    command.check(cfg)


def test_check_detects_drift(database_url):
    """The check above can fail: a schema missing a table is reported."""
    db.upgrade(database_url)
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE feedback"))
    engine.dispose()
    with pytest.raises(AlembicCommandError):
        command.check(db.alembic_config(database_url))
