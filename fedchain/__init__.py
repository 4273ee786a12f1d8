"""fedchain: blockchain-audited federated training.

The package is layered so that every piece can be read and replaced alone::

    cli  ->  orchestrator, audit  ->  fl, storage, chain  ->  records, hashing, errors, types

Only :mod:`fedchain.fl` imports torch; chain and storage code deal in bytes and digests.
"""

from fedchain.errors import FedchainError

__version__ = "0.1.0"

__all__ = ["FedchainError", "__version__"]
