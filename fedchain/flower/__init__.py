"""fedchain for Flower apps: a client mod, a strategy wrapper, and an in-process simulation engine.

Two lines make a Flower app audited::

    app = ClientApp(mods=[fedchain_mod])                          # client_app.py
    strategy = audited(FedAvg(fraction_train=0.5), context)       # server_app.py, in main()

The mod records each node's train reply on the ledger from the node's own key; the wrapped
strategy opens, closes and finalizes the rounds and aggregates exactly what was recorded, so
``fedchain audit`` verifies the run. Where each process finds the chain, the store and its key:
:mod:`fedchain.flower._config`.
"""

from fedchain.flower._backends import EMBEDDED, in_process
from fedchain.flower._config import FlowerSettings, settings_from_context
from fedchain.flower._mod import fedchain_mod
from fedchain.flower._records import ENROLL_KEY, RECORD_KEY, reply_update, to_arrays, to_record
from fedchain.flower._simulation import InProcessBackend, run_simulation_in_process
from fedchain.flower._strategy import AuditedStrategy, DroppedReply, aggregation_for, audited

__all__ = [
    "EMBEDDED",
    "ENROLL_KEY",
    "RECORD_KEY",
    "AuditedStrategy",
    "DroppedReply",
    "FlowerSettings",
    "InProcessBackend",
    "aggregation_for",
    "audited",
    "fedchain_mod",
    "in_process",
    "reply_update",
    "run_simulation_in_process",
    "settings_from_context",
    "to_arrays",
    "to_record",
]
