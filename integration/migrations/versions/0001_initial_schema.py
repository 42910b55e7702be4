"""Initial schema: the inbox, returns with their timeline, receipts and feed cursors.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 12:00:43.282214
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('feed_cursors',
    sa.Column('merchant', sa.String(length=64), nullable=False),
    sa.Column('feed', sa.String(length=32), nullable=False),
    sa.Column('cursor', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('merchant', 'feed')
    )
    op.create_table('receipts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('merchant', sa.String(length=64), nullable=False),
    sa.Column('receipt_number', sa.Integer(), nullable=False),
    sa.Column('ra_number', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.String(length=40), nullable=True),
    sa.Column('lines', sa.JSON(), nullable=False),
    sa.Column('stored_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('merchant', 'receipt_number', name='uq_receipts_number')
    )
    op.create_index('ix_receipts_ra_number', 'receipts', ['ra_number'])
    op.create_table('returns',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('merchant', sa.String(length=64), nullable=False),
    sa.Column('loop_return_id', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('loop_state', sa.String(length=16), nullable=True),
    sa.Column('loop_updated_at', sa.String(length=40), nullable=True),
    sa.Column('order_name', sa.String(length=64), nullable=True),
    sa.Column('currency', sa.String(length=8), nullable=True),
    sa.Column('total', sa.String(length=32), nullable=True),
    sa.Column('loop_created_at', sa.String(length=40), nullable=True),
    sa.Column('units', sa.JSON(), nullable=False),
    sa.Column('ship_from', sa.JSON(), nullable=True),
    sa.Column('rma_number', sa.Integer(), nullable=True),
    sa.Column('rma_status', sa.String(length=24), nullable=True),
    sa.Column('rma_lines', sa.JSON(), nullable=False),
    sa.Column('transmitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_receipt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decision', sa.String(length=24), nullable=True),
    sa.Column('decision_detail', sa.JSON(), nullable=True),
    sa.Column('loop_note', sa.String(length=255), nullable=True),
    sa.Column('loop_action_claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('loop_actioned_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attention_reason', sa.Text(), nullable=True),
    sa.Column('attention_step', sa.String(length=32), nullable=True),
    sa.Column('step_attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('merchant', 'loop_return_id', name='uq_returns_loop_id')
    )
    op.create_index('ix_returns_rma_number', 'returns', ['rma_number'])
    op.create_index('ix_returns_state', 'returns', ['state'])
    op.create_index('ix_returns_updated_at', 'returns', ['updated_at'])
    op.create_table('webhook_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('merchant', sa.String(length=64), nullable=False),
    sa.Column('dedupe_key', sa.String(length=64), nullable=False),
    sa.Column('body_sha256', sa.String(length=64), nullable=False),
    sa.Column('topic', sa.String(length=64), nullable=True),
    sa.Column('trigger', sa.String(length=64), nullable=True),
    sa.Column('loop_return_id', sa.String(length=32), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('merchant', 'dedupe_key', name='uq_webhook_events_dedupe')
    )
    op.create_index('ix_webhook_events_loop_return_id', 'webhook_events', ['loop_return_id'])
    op.create_index('ix_webhook_events_status', 'webhook_events', ['status'])
    op.create_table('timeline',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('return_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('from_state', sa.String(length=32), nullable=True),
    sa.Column('to_state', sa.String(length=32), nullable=False),
    sa.Column('cause', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['return_id'], ['returns.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_timeline_return_id', 'timeline', ['return_id'])


def downgrade() -> None:
    op.drop_index('ix_timeline_return_id', table_name='timeline')
    op.drop_table('timeline')
    op.drop_index('ix_webhook_events_status', table_name='webhook_events')
    op.drop_index('ix_webhook_events_loop_return_id', table_name='webhook_events')
    op.drop_table('webhook_events')
    op.drop_index('ix_returns_updated_at', table_name='returns')
    op.drop_index('ix_returns_state', table_name='returns')
    op.drop_index('ix_returns_rma_number', table_name='returns')
    op.drop_table('returns')
    op.drop_index('ix_receipts_ra_number', table_name='receipts')
    op.drop_table('receipts')
    op.drop_table('feed_cursors')
