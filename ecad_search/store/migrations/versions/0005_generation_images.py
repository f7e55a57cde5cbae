"""A generation records the images it generated: with racing on prompts, a candidate costs either its race
prompts' images or all of them, so the count of evaluated candidates no longer says what a generation cost.
Generations stored before this revision have none (NULL).

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ecad_generations", sa.Column("images", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ecad_generations") as batch:
        batch.drop_column("images")
