"""give notes a priority"""

revision = "0002"
down_revision = "0001"

from alembic import op


def upgrade() -> None:
    op.execute("ALTER TABLE notes ADD COLUMN priority integer NOT NULL DEFAULT 0")


def downgrade() -> None:
    op.execute("ALTER TABLE notes DROP COLUMN priority")
