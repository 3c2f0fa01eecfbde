"""Live models: rows that publish themselves to ``private-live.*`` channels on commit.

``@rt.live(Model, fields=[...], filters=[...])`` declares one (see docs/live.md);
:mod:`tidings.live.model` holds the ORM-neutral part, :mod:`tidings.live.django` and
:mod:`tidings.live.sqlalchemy` the ORM shells.
"""

from tidings.live.model import (
    Change,
    ChangeBuffer,
    LiveSpec,
    Publication,
    Publisher,
    current_socket_id,
)

__all__ = ["Change", "ChangeBuffer", "LiveSpec", "Publication", "Publisher", "current_socket_id"]
