"""The store as ecad-search 0.1 first wrote it: runs, candidates, evaluations (the memo), generations.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ecad_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("eval_key", sa.String(128), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("metric", sa.String(255), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("generations_done", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("tool_version", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ecad_runs"),
        sa.UniqueConstraint("name", name="uq_ecad_runs_name"),
    )
    op.create_index("ix_ecad_runs_eval_key", "ecad_runs", ["eval_key"])
    op.create_table(
        "ecad_candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("genome", sa.Text(), nullable=False),
        sa.Column("genome_length", sa.Integer(), nullable=False),
        sa.Column("compute_fraction", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ecad_candidates"),
        sa.UniqueConstraint("digest", name="uq_ecad_candidates_digest"),
    )
    op.create_table(
        "ecad_evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("eval_key", sa.String(128), nullable=False),
        sa.Column("quality_loss", sa.Double(), nullable=False),
        sa.Column("cost", sa.Double(), nullable=False),
        sa.Column("macs", sa.Double(), nullable=False),
        sa.Column("latency_s", sa.Double(), nullable=True),
        sa.Column("scores", sa.Text(), nullable=False),
        sa.Column("wall_time_s", sa.Double(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["ecad_candidates.id"], name="fk_ecad_evaluations_candidate_id_ecad_candidates"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ecad_evaluations"),
        sa.UniqueConstraint("candidate_id", "eval_key", name="uq_ecad_evaluations_candidate_id_eval_key"),
    )
    op.create_index("ix_ecad_evaluations_eval_key", "ecad_evaluations", ["eval_key"])
    op.create_table(
        "ecad_generations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("population", sa.Text(), nullable=False),
        sa.Column("archive", sa.Text(), nullable=False),
        sa.Column("hypervolume", sa.Double(), nullable=False),
        sa.Column("evaluated", sa.Integer(), nullable=False),
        sa.Column("memo_hits", sa.Integer(), nullable=False),
        sa.Column("wall_time_s", sa.Double(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["ecad_runs.id"], name="fk_ecad_generations_run_id_ecad_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_ecad_generations"),
        sa.UniqueConstraint("run_id", "index", name="uq_ecad_generations_run_id_index"),
    )


def downgrade() -> None:
    for table in ("ecad_generations", "ecad_evaluations", "ecad_candidates", "ecad_runs"):
        op.drop_table(table)
