"""Keys forged from a real one, with valid checksums, for tests that need a
wrong secret or an unknown id to reach the store rather than the format check."""

from __future__ import annotations

from aqnt_auth import checksum


def wrong_secret(key: str) -> str:
    """The same prefix, mode and id, another secret, a valid checksum."""
    head = key[:20] + ("Z" * 32 if key[20:52] != "Z" * 32 else "Y" * 32)
    return head + checksum(head)


def unknown_id(key: str) -> str:
    """A well-formed key whose id no store holds (the same secret)."""
    head = key[:8] + ("z" * 12 if key[8:20] != "z" * 12 else "y" * 12) + key[20:52]
    return head + checksum(head)
