"""A candidate can be an online policy with its knobs (a JSON document) instead of a mask, so policy settings
share the evaluation memo and the database with schedules.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ecad_candidates", sa.Column("policy", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ecad_candidates") as batch:
        batch.drop_column("policy")
