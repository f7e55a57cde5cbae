"""Runs say how many generations they run to (for `status`); failures (candidates that killed their
worker on every try) and claims (a driver scoring a candidate now,
so that other drivers on the database wait for it instead of computing it too).

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
    op.add_column("ecad_runs", sa.Column("generations_planned", sa.Integer(), nullable=True))
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
    op.create_table(
        "ecad_claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("eval_key", sa.String(128), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ecad_claims"),
        sa.UniqueConstraint("digest", "eval_key", name="uq_ecad_claims_digest_eval_key"),
    )
    op.create_index("ix_ecad_claims_holder", "ecad_claims", ["holder"])


def downgrade() -> None:
    op.drop_index("ix_ecad_claims_holder", table_name="ecad_claims")
    op.drop_table("ecad_claims")
    op.drop_index("ix_ecad_failures_eval_key", table_name="ecad_failures")
    op.drop_table("ecad_failures")
    with op.batch_alter_table("ecad_runs") as batch:
        batch.drop_column("generations_planned")
