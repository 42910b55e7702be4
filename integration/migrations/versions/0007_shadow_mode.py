"""Shadow mode: a return records a decision it did not send to Loop, and what a person then did.

`shadow_decided_at` (NULL for every return decided live, so existing rows need nothing),
`person_action` and `person_acted_at`; an index on (merchant, shadow_decided_at) for the
agreement report (integration/ops/shadow.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('returns') as batch:
        batch.add_column(sa.Column('shadow_decided_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('person_action', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('person_acted_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_returns_merchant_shadow_decided_at', 'returns', ['merchant', 'shadow_decided_at'])


def downgrade() -> None:
    op.drop_index('ix_returns_merchant_shadow_decided_at', table_name='returns')
    with op.batch_alter_table('returns') as batch:
        batch.drop_column('person_acted_at')
        batch.drop_column('person_action')
        batch.drop_column('shadow_decided_at')
