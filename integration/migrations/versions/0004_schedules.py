"""Explicit schedules on every open return and inbox row.

- `returns.next_check_at` becomes `next_attempt_at`: every open return now has one (what it waits
  for is `waiting_for`), and the sweeper selects due rows by this index alone.
- `webhook_events.next_attempt_at` (indexed): when an open inbox row is handed to a worker again.
- `returns.receipts_seen_at` goes: a stored receipt now sets its return's schedule instead.

Existing open rows are made due at once: the next sweep sends each its step, and the step sets
the schedule that fits (every step is safe to run again).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 13:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None



def upgrade() -> None:
    with op.batch_alter_table('returns') as batch:
        batch.drop_index('ix_returns_next_check_at')
        batch.alter_column('next_check_at', new_column_name='next_attempt_at')
        batch.drop_column('receipts_seen_at')
    op.create_index('ix_returns_next_attempt_at', 'returns', ['next_attempt_at'])
    with op.batch_alter_table('webhook_events') as batch:
        batch.add_column(sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True))
        batch.create_index('ix_webhook_events_next_attempt_at', ['next_attempt_at'])
    now = sa.func.now()
    returns = sa.table('returns', sa.column('state', sa.String), sa.column('waiting_for', sa.String),
                       sa.column('next_attempt_at', sa.DateTime(timezone=True)))
    op.execute(returns.update().where(returns.c.state == 'needs_attention')
               .values(waiting_for='person', next_attempt_at=None))
    op.execute(returns.update().where(returns.c.state.not_in(('complete', 'cancelled', 'needs_attention')),
                                      returns.c.waiting_for.is_(None))
               .values(waiting_for='step', next_attempt_at=now))
    events = sa.table('webhook_events', sa.column('status', sa.String),
                      sa.column('next_attempt_at', sa.DateTime(timezone=True)))
    op.execute(events.update().where(events.c.status.in_(('received', 'processing')))
               .values(next_attempt_at=now))


def downgrade() -> None:
    with op.batch_alter_table('webhook_events') as batch:
        batch.drop_index('ix_webhook_events_next_attempt_at')
        batch.drop_column('next_attempt_at')
    op.drop_index('ix_returns_next_attempt_at', 'returns')
    with op.batch_alter_table('returns') as batch:
        batch.alter_column('next_attempt_at', new_column_name='next_check_at')
        batch.add_column(sa.Column('receipts_seen_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_returns_next_check_at', 'returns', ['next_check_at'])
