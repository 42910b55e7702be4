"""Store-first receiver: the inbox row holds the raw signed body until a worker reads it.

`raw_body` (the delivery's bytes; cleared once read, so NULL for every row stored before) and
`event_key` (the event's semantic key, unique per merchant, set by the worker). `dedupe_key` is
now the receiver's key of the bytes. Rows stored before were read by the receiver: their
`dedupe_key` is their event key, copied so that the same event sent again in other bytes is
still recognised (invalid rows keep theirs, a body hash, in `dedupe_key` only).

Deploying: a worker of the release before this one cannot read a raw row (it would mark it
`ignored`, finding no topic), so workers should run this release before, or together with, the
receiver; a delivery lost that way is found again by the Loop returns pull.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('webhook_events') as batch:
        batch.add_column(sa.Column('event_key', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('raw_body', sa.LargeBinary(), nullable=True))
    op.execute("UPDATE webhook_events SET event_key = dedupe_key WHERE status <> 'invalid'")
    with op.batch_alter_table('webhook_events') as batch:
        batch.create_unique_constraint('uq_webhook_events_event_key', ['merchant', 'event_key'])


def downgrade() -> None:
    # A row still unread has only its raw body: the older receiver's worker could not read it,
    # so it is marked invalid (with why) rather than left for a worker to fail on.
    op.execute("UPDATE webhook_events SET status = 'invalid', next_attempt_at = NULL, "
               "last_error = 'unread raw body dropped by a schema downgrade' "
               "WHERE raw_body IS NOT NULL")
    op.execute("UPDATE webhook_events SET status = 'ignored' WHERE status = 'duplicate'")
    with op.batch_alter_table('webhook_events') as batch:
        batch.drop_constraint('uq_webhook_events_event_key', type_='unique')
        batch.drop_column('raw_body')
        batch.drop_column('event_key')
