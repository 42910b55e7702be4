"""Look returns and receipts up by (merchant, RA number), not by RA number alone.

With only single-column indexes SQLite resolved `merchant = ? AND rma_number IN (...)` through
the unique (merchant, loop_return_id) index, reading every return of the merchant: 83 ms per
receipt poll at 100,000 returns (docs/benchmarks.md).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 14:45:00
"""
from __future__ import annotations

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_returns_merchant_rma_number', 'returns', ['merchant', 'rma_number'])
    op.drop_index('ix_returns_rma_number', table_name='returns')
    op.create_index('ix_receipts_merchant_ra_number', 'receipts', ['merchant', 'ra_number'])
    op.drop_index('ix_receipts_ra_number', table_name='receipts')


def downgrade() -> None:
    op.create_index('ix_receipts_ra_number', 'receipts', ['ra_number'])
    op.drop_index('ix_receipts_merchant_ra_number', table_name='receipts')
    op.create_index('ix_returns_rma_number', 'returns', ['rma_number'])
    op.drop_index('ix_returns_merchant_rma_number', table_name='returns')
