"""Generations record how many front entrants the selection-bias guard re-scored on fresh seeds.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ecad_generations", sa.Column("confirmed", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("ecad_generations") as batch:
        batch.drop_column("confirmed")
