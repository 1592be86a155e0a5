"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date.strftime("%Y-%m-%d")}
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel  # noqa: F401 - autogenerate references sqlmodel.sql.sqltypes.AutoString
from alembic import op
% if imports:
${imports}
% endif

revision = "${up_revision}"
down_revision = ${'"%s"' % down_revision if down_revision else "None"}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
