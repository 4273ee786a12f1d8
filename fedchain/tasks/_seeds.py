"""Seed derivation shared by every task and by the participant service (no torch)."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *parts: str | int) -> int:
    """A 63-bit seed derived from ``seed`` and a purpose, e.g. ``derive_seed(7, "train", 3, "st-mary")``.

    Derivation is sha256 of the parts joined by ``\\x1f``, so seeds for different purposes are
    unrelated and the same on every machine.
    """
    text = "\x1f".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def participant_seed(seed: int, round_id: int, participant: str) -> int:
    """The seed of ``participant``'s local training in ``round_id``: ``derive_seed(seed, "train", round_id, participant)``.

    The participant service passes it to :meth:`~fedchain.tasks.api.Task.train`, and so does
    :func:`fedchain.tasks.plain_fedavg`, so a federation without a ledger trains identically.
    """
    return derive_seed(seed, "train", round_id, participant)


__all__ = ["derive_seed", "participant_seed"]
