"""create the notes table"""

revision = "0001"
down_revision = None

from alembic import op


def upgrade() -> None:
    op.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")


def downgrade() -> None:
    op.execute("DROP TABLE notes")
