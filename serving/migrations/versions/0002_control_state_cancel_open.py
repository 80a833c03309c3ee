"""The kill switch's cancel request as a column: `control_state.cancel_open` instead of a marker in the reason.

Until this revision the request to cancel open orders was stored as the prefix "[cancel-open] " of the reason.
Upgrading moves it: a reason starting with the marker becomes `cancel_open = true` and the reason without the
marker; every other row gets `cancel_open = false`. Downgrading puts the marker back.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CANCEL_OPEN_MARKER = "[cancel-open] "  # how revision 0001 stored the request (frozen here: history, not code)

control_state = sa.table(
    "control_state",
    sa.column("key", sa.String(32)),
    sa.column("reason", sa.Text()),
    sa.column("cancel_open", sa.Boolean()),
)


def upgrade() -> None:
    op.add_column("control_state", sa.Column("cancel_open", sa.Boolean(), nullable=False, server_default=sa.false()))
    connection = op.get_bind()
    rows = connection.execute(sa.select(control_state.c.key, control_state.c.reason)).all()
    for key, reason in rows:
        if reason.startswith(CANCEL_OPEN_MARKER):
            connection.execute(
                control_state.update()
                .where(control_state.c.key == key)
                .values(reason=reason[len(CANCEL_OPEN_MARKER) :], cancel_open=True)
            )


def downgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(control_state.c.key, control_state.c.reason).where(control_state.c.cancel_open == sa.true())
    ).all()
    for key, reason in rows:
        connection.execute(
            control_state.update().where(control_state.c.key == key).values(reason=CANCEL_OPEN_MARKER + reason)
        )
    with op.batch_alter_table("control_state") as batch:
        batch.drop_column("cancel_open")
