"""The chain layer: connections, locally signed transactions, the typed ledger wrapper.

Deals in bytes, digests and addresses; never imports torch.
"""

from fedchain.chain._resilient import Backoff, Pacing, ResilientRpcChain
from fedchain.chain.accounts import Signer
from fedchain.chain.connection import DEV_FUNDING_WEI, Chain, EmbeddedChain, RpcChain, connect
from fedchain.chain.ledger import Ledger

__all__ = [
    "DEV_FUNDING_WEI",
    "Backoff",
    "Chain",
    "EmbeddedChain",
    "Ledger",
    "Pacing",
    "ResilientRpcChain",
    "RpcChain",
    "Signer",
    "connect",
]
