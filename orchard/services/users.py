"""Users and personal access tokens. Tokens are random, shown once, and stored as SHA-256.

A PAT its owner deletes is revoked for good: its hash is kept (``RevokedPatRow``) and no token
with that hash is made again. That holds for the bootstrap PAT too: ``ensure_bootstrap`` makes
the operator's token (``ORCHARD_BOOTSTRAP_PAT``) a PAT of the bootstrap user only when it was
never revoked, so that a revocation survives restarts of a server whose environment still
names the token; the operator sets a new token to get a new PAT.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchard import errors
from orchard.configs import ensure_description, ensure_id
from orchard.services.common import Page
from orchard.store.models import PatRow, RevokedPatRow, UserRow


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_hex(16)


def create_user(session: Session, user_id: str, *, is_admin: bool = False) -> UserRow:
    ensure_id(user_id, "user id", errors.InvalidRequest)
    if session.get(UserRow, user_id) is not None:
        raise errors.InvalidRequest(f"user {user_id!r} already exists; pick another id")
    row = UserRow(id=user_id, is_admin=is_admin)
    session.add(row)
    session.flush()
    return row


def create_pat(
    session: Session, user_id: str, *, description: str = "", token: str | None = None
) -> tuple[PatRow, str]:
    """A new PAT for ``user_id``: the row and the token (the only time it is known)."""
    ensure_description(description, "PAT", errors.InvalidRequest)
    token = token or new_token()
    digest = hash_token(token)
    if session.scalar(select(PatRow).where(PatRow.token_hash == digest)) is not None:
        raise errors.InvalidRequest("that token is already in use; choose another")
    if session.get(RevokedPatRow, digest) is not None:
        raise errors.InvalidRequest("that token was revoked and stays revoked; choose another")
    row = PatRow(
        id=secrets.token_hex(8),
        user_id=user_id,
        token_hash=digest,
        description=description,
        last4=token[-4:],
    )
    session.add(row)
    session.flush()
    return row, token


def authenticate(session: Session, token: str) -> str:
    """The user id a PAT belongs to."""
    row = session.scalar(select(PatRow).where(PatRow.token_hash == hash_token(token)))
    if row is None:
        raise errors.AuthenticationError(
            "the PAT is not valid on this server; create one with `orchard pat create` "
            "or use the one `orchard serve` printed"
        )
    return row.user_id


def list_pats(session: Session, user_id: str, page: Page) -> list[PatRow]:
    query = select(PatRow).where(PatRow.user_id == user_id).order_by(PatRow.created_at, PatRow.id)
    return list(session.scalars(page.apply(query)))


def delete_pat(session: Session, user_id: str, pat_id: str) -> None:
    """Revoke a PAT for good (see the module's docstring)."""
    row = session.get(PatRow, pat_id)
    if row is None or row.user_id != user_id:
        raise errors.KeyNotFound(
            f"PAT {pat_id!r} not found for user {user_id!r}; list them with `orchard pat list`"
        )
    session.add(RevokedPatRow(token_hash=row.token_hash, user_id=row.user_id))
    session.delete(row)


def get_user(session: Session, user_id: str) -> UserRow:
    row = session.get(UserRow, user_id)
    if row is None:
        raise errors.UserNotFound(f"user {user_id!r} not found")
    return row


@dataclass(frozen=True)
class Bootstrap:
    """What ``ensure_bootstrap`` did."""

    token: str | None = None  # a PAT it generated (the only time it is known)
    revoked: RevokedPatRow | None = None  # the given token's revocation: it made no PAT of it


def ensure_bootstrap(session: Session, user_id: str, token: str | None) -> Bootstrap:
    """Make sure the bootstrap admin exists and, when ``token`` is given and was never revoked,
    that it is a PAT of theirs. On an empty store without a given token a PAT is generated."""
    if session.get(UserRow, user_id) is None:
        if token is None and session.scalar(select(UserRow.id).limit(1)) is not None:
            return Bootstrap()  # an initialised store whose admin has another name
        create_user(session, user_id, is_admin=True)
        if token is None:
            return Bootstrap(token=create_pat(session, user_id, description="bootstrap")[1])
    if not token:
        return Bootstrap()
    digest = hash_token(token)
    revoked = session.get(RevokedPatRow, digest)
    if revoked is not None:
        return Bootstrap(revoked=revoked)
    if session.scalar(select(PatRow).where(PatRow.token_hash == digest)) is None:
        create_pat(session, user_id, description="bootstrap", token=token)
    return Bootstrap()
