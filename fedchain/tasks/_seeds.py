"""Seed derivation shared by every task and by the participant service (no torch): one definition, in
:mod:`fedchain.hashing`, re-exported here for tasks."""

from __future__ import annotations

from fedchain.hashing import derive_seed, participant_seed

__all__ = ["derive_seed", "participant_seed"]
