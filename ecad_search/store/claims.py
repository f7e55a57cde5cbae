"""Claims: which driver is scoring which candidate right now, so that drivers sharing a database never score
the same mask at the same time.

A driver claims the masks it is about to score; a mask another live driver holds is left to it, and its
result arrives through the database. A claim lapses when its holder stops renewing it (`expires_at`), and at
once when its holder ran on this host and its process is gone, so a crashed driver never blocks a resumed one.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import Claim, utc_now

HOST = socket.gethostname()


def new_holder() -> str:
    """This process's name in claims: host, pid and a nonce (two stores in one process hold apart)."""
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_gone(holder: str) -> bool:
    """Whether the holder ran on this host and its process no longer exists (another host's is never judged)."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim(session: Session, eval_key: str, digests: Sequence[str], holder: str, ttl_s: float) -> set[str]:
    """Claim the digests nobody else holds (taking over lapsed claims and those of dead holders); returns all
    of these digests that `holder` holds now."""
    now = utc_now()
    expires = now + timedelta(seconds=ttl_s)
    current = session.execute(
        select(Claim.digest, Claim.holder, Claim.expires_at).where(
            Claim.eval_key == eval_key, Claim.digest.in_(digests)
        )
    ).all()
    lapsed: dict[str, list[str]] = {}
    for digest, owner, until in current:
        if _lapsed(owner, until, holder, now):
            lapsed.setdefault(owner, []).append(digest)
    for owner, taken in lapsed.items():
        # Only while the lapsed owner still holds them: a driver taking them over meanwhile keeps them.
        session.execute(
            update(Claim)
            .where(Claim.eval_key == eval_key, Claim.digest.in_(taken), Claim.holder == owner)
            .values(holder=holder, expires_at=expires)
        )
    held = {digest for digest, _, _ in current}
    rows = [
        {"digest": d, "eval_key": eval_key, "holder": holder, "expires_at": expires} for d in digests if d not in held
    ]
    if rows:
        _insert_missing(session, rows)
    mine = select(Claim.digest).where(Claim.eval_key == eval_key, Claim.digest.in_(digests), Claim.holder == holder)
    return set(session.scalars(mine))


def _lapsed(owner: str, until: datetime, holder: str, now: datetime) -> bool:
    return owner == holder or until < now or holder_is_gone(owner)


def _insert_missing(session: Session, rows: list[dict[str, object]]) -> None:
    """Insert claims, leaving any row another driver inserted meanwhile as it is."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(postgresql.insert(Claim).values(rows).on_conflict_do_nothing())
    elif dialect == "sqlite":
        session.execute(sqlite.insert(Claim).values(rows).on_conflict_do_nothing())
    else:
        for row in rows:
            try:
                with session.begin_nested():
                    session.add(Claim(**row))
            except IntegrityError:
                continue


def release(session: Session, eval_key: str, digests: Sequence[str], holder: str) -> None:
    session.execute(delete(Claim).where(Claim.eval_key == eval_key, Claim.digest.in_(digests), Claim.holder == holder))


def renew(session: Session, holder: str, ttl_s: float) -> None:
    session.execute(update(Claim).where(Claim.holder == holder).values(expires_at=utc_now() + timedelta(seconds=ttl_s)))
