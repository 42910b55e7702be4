"""Explicit waits, the Loop call's send time, receipts seen by the last decision, and RA refs
scoped by merchant.

- `waiting_for`, `next_check_at` (indexed: the sweeper selects due rows), `wait_deadline`: what
  a return waits for in its state and until when, instead of inferring stalls from updated_at.
- `loop_call_sent_at`: set just before a Loop action's request leaves; a process call that may
  have reached Loop is never sent again on our own.
- `receipts_seen_at`: the newest receipt the last decision saw; newer ones mean a lost decide.
- `rma_external_ref`: the RA's idempotency key in RLM. Existing returns keep the bare Loop id
  they were created with, so a create retried after the upgrade still finds its RA.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('returns') as batch:
        batch.add_column(sa.Column('rma_external_ref', sa.String(length=100), nullable=True))
        batch.add_column(sa.Column('loop_call_sent_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('receipts_seen_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('waiting_for', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('next_check_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('wait_deadline', sa.DateTime(timezone=True), nullable=True))
        batch.create_index('ix_returns_next_check_at', ['next_check_at'])
    op.execute("UPDATE returns SET rma_external_ref = loop_return_id")


def downgrade() -> None:
    with op.batch_alter_table('returns') as batch:
        batch.drop_index('ix_returns_next_check_at')
        for column in ('wait_deadline', 'next_check_at', 'waiting_for', 'receipts_seen_at',
                       'loop_call_sent_at', 'rma_external_ref'):
            batch.drop_column(column)
