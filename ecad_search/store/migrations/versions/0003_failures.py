"""Candidates that could not be scored (they killed their worker on every try) are recorded as failures.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ecad_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("eval_key", sa.String(128), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["ecad_candidates.id"], name="fk_ecad_failures_candidate_id_ecad_candidates"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ecad_failures"),
        sa.UniqueConstraint("candidate_id", "eval_key", name="uq_ecad_failures_candidate_id_eval_key"),
    )
    op.create_index("ix_ecad_failures_eval_key", "ecad_failures", ["eval_key"])


def downgrade() -> None:
    op.drop_index("ix_ecad_failures_eval_key", table_name="ecad_failures")
    op.drop_table("ecad_failures")
