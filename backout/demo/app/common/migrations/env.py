import os

from alembic import context
from sqlalchemy import create_engine


def database_url() -> str:
    url = os.environ["DATABASE_URL"]
    # Heroku's URLs say postgres://; SQLAlchemy wants the dialect and driver spelled out.
    return "postgresql+psycopg://" + url.split("://", 1)[1]


with create_engine(database_url()).connect() as connection:
    context.configure(connection=connection, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()
