"""The round protocol, in one place: the manifest's rules, blob binding, screening and verification.

Used identically by the coordinator, every participant and the audit, so their verdicts cannot
drift. Sits above :mod:`fedchain.fl`, :mod:`fedchain.storage` and :mod:`fedchain.chain`, below
the orchestrator and the audit; imports no torch.
"""

from fedchain.protocol.custody import Checkpoint, advance, genesis
from fedchain.protocol.manifest import (
    DEFAULT_MAX_BLOB_SIZE,
    DEFAULT_MAX_UPDATE_NORM,
    DEFAULT_ROUND_SECONDS,
    Manifest,
    check_against,
)
from fedchain.protocol.rules import Rules, load_manifest, load_rules, strategy_for
from fedchain.protocol.verify import (
    Exclusion,
    Observer,
    RoundVerdict,
    UpdateOutcome,
    UpdateStatus,
    VerifiedModel,
    load_model,
    prepare_aggregate,
    verify_round,
)

__all__ = [
    "DEFAULT_MAX_BLOB_SIZE",
    "DEFAULT_MAX_UPDATE_NORM",
    "DEFAULT_ROUND_SECONDS",
    "Checkpoint",
    "Exclusion",
    "Manifest",
    "Observer",
    "RoundVerdict",
    "Rules",
    "UpdateOutcome",
    "UpdateStatus",
    "VerifiedModel",
    "advance",
    "check_against",
    "genesis",
    "load_manifest",
    "load_model",
    "load_rules",
    "prepare_aggregate",
    "strategy_for",
    "verify_round",
]
