"""Masked updates for private rounds: fixed point, pairwise and self masks, canonical blobs, unmasking.

The pure, chain-free core of a private round (docs/PRIVATE_ROUNDS.md states the scheme and
the round flow around it). Everything here is exact integer arithmetic modulo 2**64, or
float arithmetic whose every step is stated, so an auditor recomputes the aggregate bit for
bit. The cryptography is the ``cryptography`` package's: X25519, HKDF-SHA256, ChaCha20.

Per participant ``i`` with roster ``R`` (addresses in numeric order)::

    q_i   = quantize(delta_i, n_i)                        # int64 words, mod 2**64
    s_ij  = pair_seed(sk_i, pk_j, ...)  = s_ji             # HKDF of the X25519 secret
    y_i   = q_i + PRG(b_i) + sum_{j > i} PRG(s_ij) - sum_{j < i} PRG(s_ij)   (mod 2**64)

and for the survivors ``S`` and the dropped ``D = R - S``::

    sum_{i in S} y_i - sum_{i in S} PRG(b_i)
        - sum_{i in S, j in D, j > i} PRG(s_ij) + sum_{i in S, j in D, j < i} PRG(s_ij)
      = sum_{i in S} q_i                                   (mod 2**64)

``b_i`` is never revealed by ``i``: at submission ``i`` splits it into ``t``-of-``|R|`` Shamir
shares (pycryptodome, two sharings of its 16-byte halves), one per roster member (``i`` itself
included), each sealed to its holder with ChaCha20-Poly1305 under a key HKDF'd from the pair's
X25519 secret and committed to in ``i``'s header; the survivors reveal their shares of the
survivors' ``b`` and anyone reconstructs them (:func:`reconstruct_seed`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import re
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, NoReturn

import numpy as np
from Crypto.Protocol.SecretSharing import Shamir
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_utils.address import is_checksum_address

from fedchain.errors import CodecError, FedchainError
from fedchain.fl import _safetensors
from fedchain.fl._exact import sum_of_squares
from fedchain.fl.dp import DpSpend
from fedchain.types import Address, Digest, RoundId

logger = logging.getLogger(__name__)

#: The codec identifier of a masked update blob.
MASKED_CODEC = "fedchain/masked-u64-v1"
#: The HKDF info prefix of a pair seed.
MASK_INFO = b"fedchain/mask/v1"
#: The HKDF info prefix of the key a self-seed share is sealed with.
SHARE_INFO = b"fedchain/share/v1"
#: The domain prefix of a share's nonce.
SHARE_NONCE_DOMAIN = b"fedchain/share-nonce/v1"
#: The domain prefix of a seed commitment.
COMMIT_DOMAIN = b"fedchain/commit/v1"
#: Bytes in a seed (a ChaCha20 key) and in a commitment.
SEED_SIZE = 32
#: Bytes in a share of a self seed: the two 16-byte Shamir shares of its halves (one ``bytes32`` on chain).
SHARE_SIZE = 32
#: Bytes in a sealed share: ChaCha20-Poly1305 ciphertext of a share and its 16-byte tag.
SEALED_SIZE = SHARE_SIZE + 16
#: The only modulus built: words are uint64.
MODULUS_BITS = 64
#: The masked tensor's name in the blob.
MASKED_TENSOR = "masked"
#: The largest header a masked blob may have (a pair commitment and a sealed share per member: ~780 members fit).
MAX_MASKED_HEADER = 256 * 1024

_U64 = np.dtype("<u8")
_ZERO_NONCE = bytes(16)  # cryptography's ChaCha20 nonce: 4-byte little-endian counter (0) || 12-byte nonce (0)
_PRG_CHUNK = 1 << 15  # words per keystream chunk: 256 KiB, so the keystream stays in cache while it is added
# The plaintext of every keystream chunk, shared read-only: a fresh np.zeros per call would page-fault on each read.
_ZEROS = np.zeros(8 * _PRG_CHUNK, dtype=np.uint8)
_ZEROS.flags.writeable = False
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,30}")
_HEX32 = re.compile(r"0x[0-9a-f]{64}")
_HEX_SHARE = re.compile(r"0x[0-9a-f]{160}")  # a sealed share (48 bytes) and its commitment (32)
_PAIR_PREFIX = "pair:"
_SHARE_PREFIX = "share:"
# A relative margin for the three float64 roundings between |delta_e| <= clip and the rounded word.
_ROUNDING_MARGIN = Fraction(1) + Fraction(1, 1 << 50)


# --------------------------------------------------------------------------- errors


class MaskingError(FedchainError):
    """A private round's masking or unmasking could not be carried out."""


class RevealError(MaskingError, ValueError):
    """A participant revealed a seed that its commitment does not match, or did not reveal one it must.

    Parameters
    ----------
    participant:
        Who revealed (or should have revealed) the seed.
    what:
        Which seed, e.g. ``self seed`` or ``pair seed with 0x...``.
    problem:
        ``does not match its commitment`` or ``missing``.
    """

    def __init__(self, participant: str, what: str, problem: str = "does not match its commitment") -> None:
        self.participant = participant
        self.what = what
        self.problem = problem
        super().__init__(f"participant {participant}: {what} {problem}")


class PairCommitmentError(MaskingError, ValueError):
    """Two participants' headers commit to different seeds for their pair: one of them masked wrongly.

    Which one cannot be told from public data (the seed is a function of a private key), so
    both are named; the round cannot unmask a sum that contains both.
    """

    def __init__(self, first: str, second: str) -> None:
        self.first = first
        self.second = second
        super().__init__(f"participants {first} and {second} commit to different pair seeds")


# --------------------------------------------------------------------------- addresses


def _address_bytes(address: str) -> bytes:
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        raise ValueError(f"not an address (0x + 40 hex digits): {address!r}")
    return bytes.fromhex(address[2:])


def address_key(address: str) -> int:
    """The numeric value of an address: the order of masks, pairs and sums."""
    return int.from_bytes(_address_bytes(address), "big")


def ordered(addresses: Iterable[Address]) -> tuple[Address, ...]:
    """``addresses`` in numeric order; a repeated address (however cased) is refused."""
    out = tuple(sorted(addresses, key=address_key))
    keys = [address_key(a) for a in out]
    if len(set(keys)) != len(keys):
        raise ValueError("an address appears twice")
    return out


# --------------------------------------------------------------------------- fixed point


@dataclass(frozen=True)
class MaskingParams:
    """The fixed-point encoding, from the manifest.

    Parameters
    ----------
    frac_bits:
        ``f``: a word counts units of ``2**-f``.
    clip:
        The L2-norm bound every update is clipped to before it is quantized (a positive finite float).
    modulus_bits:
        The word size; only 64 is built.
    """

    frac_bits: int
    clip: float
    modulus_bits: int = MODULUS_BITS

    def __post_init__(self) -> None:
        if not isinstance(self.frac_bits, int) or isinstance(self.frac_bits, bool) or not 0 <= self.frac_bits <= 60:
            raise ValueError(f"frac_bits must be an int in [0, 60], got {self.frac_bits!r}")
        if not isinstance(self.clip, float) or not math.isfinite(self.clip) or self.clip <= 0.0:
            raise ValueError(f"clip must be a positive finite float, got {self.clip!r}")
        if self.modulus_bits != MODULUS_BITS:
            raise ValueError(f"modulus_bits must be {MODULUS_BITS}, got {self.modulus_bits!r}")

    def word_bound(self, max_total_samples: int, max_participants: int) -> Fraction:
        """An upper bound on ``|sum_i q_i[e]|`` for any element ``e``, as an exact rational."""
        scaled = Fraction(self.clip) * max_total_samples * (1 << self.frac_bits) * _ROUNDING_MARGIN
        return scaled + Fraction(max_participants, 2)

    def check_overflow(self, max_total_samples: int, max_participants: int) -> None:
        """Refuse parameters whose sum of words could leave the int64 range (a deployment check).

        Each ``|q_i[e]| <= n_i * clip * 2**f`` (times ``1 + 2**-50`` for the float roundings) ``+ 1/2``,
        so ``|sum_i q_i[e]| <= sum(max_samples) * clip * 2**f * (1 + 2**-50) + K/2``, which must be
        below ``2**63``.

        Raises
        ------
        ValueError
            Naming the numbers, when the bound reaches ``2**63``.
        """
        for name, value in (("max_total_samples", max_total_samples), ("max_participants", max_participants)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        bound = self.word_bound(max_total_samples, max_participants)
        if bound >= 1 << 63:
            raise ValueError(
                f"masked sums could overflow: sum(max_samples) = {max_total_samples} * clip = {self.clip!r}"
                f" * 2**{self.frac_bits} (+ {max_participants}/2 rounding) = {float(bound):.6g} >= 2**63"
            )


def quantize(delta: Mapping[str, np.ndarray], n_k: int, params: MaskingParams) -> np.ndarray:
    """An update as fixed-point words: ``q = rint(n_k * clip(delta) * 2**f)`` mod ``2**64``.

    Exactly, over the tensors in sorted name order flattened into one vector ``x``
    (``fl64``: IEEE binary64 rounding to nearest even)::

        norm = sqrt(sum_of_squares(x))           # the exactly rounded sum, then a correctly rounded sqrt
        s    = clip / norm  if norm > clip  else 1.0
        v    = fl64(fl64(fl64(x) * s) * fl64(n_k * 2**f))     # the last factor is exact
        q    = np.rint(v) as int64, read as uint64 (two's complement)

    Parameters
    ----------
    delta:
        float32 arrays by tensor name (finite).
    n_k:
        The participant's sample count (at least 1).
    params:
        The manifest's fixed-point parameters.

    Returns
    -------
    numpy.ndarray
        uint64 words, one per element, in sorted-name order.

    Raises
    ------
    ValueError
        A non-float32 or non-finite tensor, a bad ``n_k``, or a word outside the int64 range.
    """
    if not isinstance(n_k, int) or isinstance(n_k, bool) or not 1 <= n_k < 1 << 53:
        raise ValueError(f"n_k must be an int in [1, 2**53), got {n_k!r}")
    names = sorted(delta)
    arrays = [np.asarray(delta[name]) for name in names]
    for name, arr in zip(names, arrays, strict=True):
        if arr.dtype != np.float32:
            raise ValueError(f"tensor {name!r} has dtype {arr.dtype}, expected float32")
        if not np.isfinite(arr).all():
            raise ValueError(f"tensor {name!r} holds NaN or infinite values")
    norm = math.sqrt(sum_of_squares(arrays))
    scale = params.clip / norm if norm > params.clip else 1.0
    total = sum(a.size for a in arrays)
    v = np.empty(total, dtype=np.float64)
    position = 0
    for arr in arrays:
        np.copyto(v[position : position + arr.size], arr.reshape(-1))  # exact
        position += arr.size
    if scale != 1.0:
        np.multiply(v, np.float64(scale), out=v)
    np.multiply(v, np.float64(math.ldexp(float(n_k), params.frac_bits)), out=v)
    np.rint(v, out=v)  # round half to even
    if v.size and float(np.max(np.abs(v))) >= 2.0**63:
        raise ValueError(f"a word reaches 2**63: n_k = {n_k}, clip = {params.clip!r}, f = {params.frac_bits}")
    return v.astype(np.int64).view(np.uint64)


def dequantize(sum_q: np.ndarray, total_samples: int, params: MaskingParams) -> np.ndarray:
    """The mean clipped delta from a sum of words: ``fl64(fl64(int64(sum_q)) * 2**-f / n)``.

    The words are read as int64 (two's complement), converted to float64 (rounding to
    nearest even beyond 2**53), scaled by ``2**-f`` (exact) and divided by ``n`` once.
    """
    if not isinstance(total_samples, int) or isinstance(total_samples, bool) or not 1 <= total_samples < 1 << 53:
        raise ValueError(f"total_samples must be an int in [1, 2**53), got {total_samples!r}")
    words = np.asarray(sum_q)
    if words.dtype != np.uint64 or words.ndim != 1:
        raise ValueError(f"sum_q must be a flat uint64 vector, got {words.dtype} of shape {words.shape}")
    out = words.view(np.int64).astype(np.float64)
    np.multiply(out, np.float64(math.ldexp(1.0, -params.frac_bits)), out=out)  # exact
    np.divide(out, np.float64(total_samples), out=out)
    return out


def apply_masked_aggregate(
    base_flat: np.ndarray, sum_q: np.ndarray, total_samples: int, server_lr: float, params: MaskingParams
) -> np.ndarray:
    """The new model: ``theta' = fl32(fl64(theta) + fl64(eta * dequantize(sum_q, n)))``, element-wise.

    Parameters
    ----------
    base_flat:
        The base model's float32 parameters flattened in sorted-name order.
    sum_q:
        The unmasked sum of the survivors' words.
    total_samples:
        ``n``, the sum of the survivors' recorded sample counts.
    server_lr:
        ``eta`` from the manifest.

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``base_flat``.
    """
    theta = np.asarray(base_flat)
    if theta.dtype != np.float32 or theta.ndim != 1 or theta.shape != np.shape(sum_q):
        raise ValueError(f"base_flat must be a flat float32 vector the size of sum_q, got {theta.dtype} {theta.shape}")
    step = dequantize(sum_q, total_samples, params)
    np.multiply(step, np.float64(server_lr), out=step)
    acc = theta.astype(np.float64)
    np.add(acc, step, out=acc)
    return acc.astype(np.float32)


def aggregate_norm_bound(params: MaskingParams, num_elements: int, num_survivors: int, total_samples: int) -> float:
    """The largest L2 norm an honest masked mean can have: ``clip + sqrt(P) * K * 2**-(f+1) / n``, plus slack.

    Every honest ``q_i`` is ``n_i`` times an update of norm at most ``clip``, rounded per element by at
    most half a unit, so the mean of honest updates is within this norm. Masked updates cannot be
    screened one by one; this check of the decoded mean is the only screening a private round has:
    a mean beyond it was not produced by clipped updates (some participant added an unclipped or
    arbitrary value), and the round cannot be attributed to anyone, so it is abandoned.
    """
    rounding = math.sqrt(num_elements) * num_survivors * math.ldexp(1.0, -(params.frac_bits + 1)) / total_samples
    return (params.clip + rounding) * (1.0 + 1e-9)


def flatten(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """float32 arrays in sorted-name order as one flat float32 vector (the order of the words)."""
    return np.concatenate([np.asarray(arrays[name], dtype=np.float32).reshape(-1) for name in sorted(arrays)])


def unflatten(flat: np.ndarray, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Split a flat vector back into arrays of ``shapes`` (sorted-name order), copies."""
    out: dict[str, np.ndarray] = {}
    position = 0
    for name in sorted(shapes):
        size = math.prod(shapes[name])
        out[name] = np.array(flat[position : position + size]).reshape(shapes[name])
        position += size
    if position != flat.size:
        raise ValueError(f"vector has {flat.size} elements, the shapes hold {position}")
    return out


# --------------------------------------------------------------------------- keys, seeds, PRG


class MaskingKey:
    """A participant's X25519 masking key pair (not its Ethereum key)."""

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> MaskingKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> MaskingKey:
        if len(data) != 32:
            raise ValueError(f"an X25519 private key is 32 bytes, got {len(data)}")
        return cls(X25519PrivateKey.from_private_bytes(data))

    def private_bytes(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def public_bytes(self) -> bytes:
        """The 32-byte public key, as published on chain."""
        return self._private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def exchange(self, their_public: bytes) -> bytes:
        """The X25519 shared secret with ``their_public`` (refused for a low-order point)."""
        if len(their_public) != 32:
            raise ValueError(f"an X25519 public key is 32 bytes, got {len(their_public)}")
        return self._private.exchange(X25519PublicKey.from_public_bytes(their_public))


def pair_seed(
    my_private: MaskingKey,
    their_public: bytes,
    *,
    chain_id: int,
    ledger: bytes,
    round_id: int,
    low: Address,
    high: Address,
) -> bytes:
    """The seed of a pair's mask, the same at both ends.

    ``HKDF-SHA256(X25519(sk, pk), salt = chain_id (32 bytes BE) || ledger (20) || round (32 BE),
    info = b"fedchain/mask/v1" || low (20) || high (20), length 32)``, where ``low < high``
    are the pair's addresses in numeric order.
    """
    if len(ledger) != 20:
        raise ValueError(f"ledger must be a 20-byte address, got {len(ledger)} bytes")
    low_b, high_b = _address_bytes(low), _address_bytes(high)
    if not low_b < high_b:
        raise ValueError(f"low {low} must be below high {high}")
    salt = chain_id.to_bytes(32, "big") + ledger + round_id.to_bytes(32, "big")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=SEED_SIZE, salt=salt, info=MASK_INFO + low_b + high_b)
    return hkdf.derive(my_private.exchange(their_public))


def _encryptor(seed: bytes):  # type: ignore[no-untyped-def]  # cryptography's CipherContext
    if len(seed) != SEED_SIZE:
        raise ValueError(f"a seed is {SEED_SIZE} bytes, got {len(seed)}")
    return Cipher(algorithms.ChaCha20(seed, _ZERO_NONCE), mode=None).encryptor()


def _accumulate(out: np.ndarray, streams: Sequence[tuple[bytes, int]]) -> None:
    """``out += sum(sign * PRG(seed))`` (mod 2**64) over ``streams`` of ``(seed, sign)``, in place.

    A cache-sized chunk of ``out`` at a time receives every stream's keystream for that chunk
    (one ChaCha20 context per stream, kept across chunks), so ``out`` goes through memory once
    however many streams there are.
    """
    contexts = [(_encryptor(seed), np.add if sign > 0 else np.subtract) for seed, sign in streams]
    buf = np.empty(8 * min(out.size, _PRG_CHUNK), dtype=np.uint8)
    for lo in range(0, out.size, _PRG_CHUNK):
        hi = min(out.size, lo + _PRG_CHUNK)
        nbytes = 8 * (hi - lo)
        chunk, keystream = out[lo:hi], buf[:nbytes]
        for enc, op in contexts:
            enc.update_into(_ZEROS[:nbytes], keystream)
            op(chunk, keystream.view(_U64), out=chunk)


def prg(seed: bytes, n: int) -> np.ndarray:
    """``n`` words of mask: the ChaCha20 keystream of ``seed`` (nonce and counter zero) as little-endian uint64."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out = np.empty(8 * n, dtype=np.uint8)
    enc = _encryptor(seed)
    for lo in range(0, out.size, _ZEROS.size):
        hi = min(out.size, lo + _ZEROS.size)
        enc.update_into(_ZEROS[: hi - lo], out[lo:hi])
    return out.view(_U64)


def mask_update(q: np.ndarray, *, self_seed: bytes, pair_seeds: Mapping[Address, bytes], me: Address) -> np.ndarray:
    """``y = q + PRG(b) + sum_{j > me} PRG(s_j) - sum_{j < me} PRG(s_j)`` (mod 2**64), a new array.

    ``pair_seeds`` holds a seed for every other roster member (by address; numeric order decides the sign).
    """
    words = np.asarray(q)
    if words.dtype != np.uint64 or words.ndim != 1:
        raise ValueError(f"q must be a flat uint64 vector, got {words.dtype} of shape {words.shape}")
    mine = address_key(me)
    y: np.ndarray = words.copy()
    streams = [(self_seed, +1)]
    for other in ordered(pair_seeds):
        key = address_key(other)
        if key == mine:
            raise ValueError(f"a pair seed with oneself ({me})")
        streams.append((pair_seeds[other], +1 if key > mine else -1))
    _accumulate(y, streams)
    return y


def sum_words(vectors: Iterable[np.ndarray]) -> np.ndarray:
    """The sum of uint64 vectors modulo 2**64 (any order gives the same words)."""
    total: np.ndarray | None = None
    for vec in vectors:
        words = np.asarray(vec)
        if words.dtype != np.uint64:
            raise ValueError(f"expected uint64 words, got {words.dtype}")
        if total is None:
            total = words.copy()
        else:
            np.add(total, words, out=total)
    if total is None:
        raise ValueError("no vectors to sum")
    return total


# --------------------------------------------------------------------------- self-seed shares


class ShareError(MaskingError, ValueError):
    """A sealed share that does not open (a wrong key, another round's or another pair's share, or tampering)."""


def _shamir_halves(seed: bytes) -> tuple[bytes, bytes]:
    if len(seed) != SEED_SIZE:
        raise ValueError(f"a seed is {SEED_SIZE} bytes, got {len(seed)}")
    return seed[:16], seed[16:]


def split_seed(seed: bytes, *, threshold: int, holders: int) -> list[bytes]:
    """``threshold``-of-``holders`` Shamir shares of a 32-byte seed: one 32-byte share per holder, index 1 first.

    pycryptodome's ``Shamir.split`` shares 16 bytes over GF(2**128) with fresh random
    coefficients, so the seed is two independent sharings of its halves; holder ``k``
    (1-based) gets ``share_k(low half) || share_k(high half)``. Any ``threshold`` shares give
    the seed back (:func:`combine_seed`); fewer give no information about it.
    """
    if not isinstance(threshold, int) or not 2 <= threshold <= holders:
        raise ValueError(f"the threshold must be an int in [2, {holders}] (the holders), got {threshold!r}")
    low, high = _shamir_halves(seed)
    first, second = Shamir.split(threshold, holders, low, False), Shamir.split(threshold, holders, high, False)
    return [a + b for (_, a), (_, b) in zip(first, second, strict=True)]


def combine_seed(shares: Mapping[int, bytes]) -> bytes:
    """The seed from exactly ``threshold`` shares by holder index (1-based), :func:`split_seed`'s inverse."""
    if len(shares) < 2:
        raise ValueError(f"at least 2 shares combine, got {len(shares)}")
    for index, share in shares.items():
        if len(share) != SHARE_SIZE or not 1 <= index:
            raise ValueError(f"a share is {SHARE_SIZE} bytes with an index >= 1, got {len(share)} at {index}")
    return _combine(tuple((k, bytes(shares[k])) for k in sorted(shares)))


@functools.lru_cache(maxsize=4096)
def _combine(shares: tuple[tuple[int, bytes], ...]) -> bytes:
    # remembered: every party replays a round's reveals many times, and a combination of t shares
    # costs ~t modular inversions in GF(2**128) in pure Python (~40 ms at t = 5)
    low = Shamir.combine([(k, v[:16]) for k, v in shares], False)
    high = Shamir.combine([(k, v[16:]) for k, v in shares], False)
    return bytes(low) + bytes(high)


def share_index(roster: Collection[Address], holder: Address) -> int:
    """A holder's share index: its 1-based position in the roster's numeric order."""
    keys = [address_key(a) for a in ordered(roster)]
    try:
        return keys.index(address_key(holder)) + 1
    except ValueError:
        raise ValueError(f"{holder} is not in the roster") from None


def _share_context(chain_id: int, ledger: bytes, round_id: int) -> bytes:
    if len(ledger) != 20:
        raise ValueError(f"ledger must be a 20-byte address, got {len(ledger)} bytes")
    return chain_id.to_bytes(32, "big") + ledger + round_id.to_bytes(32, "big")


def _share_aead(
    my_private: MaskingKey, their_public: bytes, *, chain_id: int, ledger: bytes, round_id: int, a: Address, b: Address
) -> ChaCha20Poly1305:
    low, high = sorted((_address_bytes(a), _address_bytes(b)))
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=_share_context(chain_id, ledger, round_id),
        info=SHARE_INFO + low + high,
    )
    return ChaCha20Poly1305(hkdf.derive(my_private.exchange(their_public)))


def share_nonce(round_id: int, sender: Address, recipient: Address) -> bytes:
    """``sha256("fedchain/share-nonce/v1" || round (32 BE) || sender (20) || recipient (20))[:12]``."""
    digest = hashlib.sha256(
        SHARE_NONCE_DOMAIN + round_id.to_bytes(32, "big") + _address_bytes(sender) + _address_bytes(recipient)
    )
    return digest.digest()[:12]


def share_aad(chain_id: int, ledger: bytes, round_id: int, sender: Address, recipient: Address) -> bytes:
    """A sealed share's associated data: ``chain (32 BE) || ledger (20) || round (32 BE) || sender || recipient``."""
    return _share_context(chain_id, ledger, round_id) + _address_bytes(sender) + _address_bytes(recipient)


def seal_share(
    my_private: MaskingKey,
    recipient_public: bytes,
    share: bytes,
    *,
    chain_id: int,
    ledger: bytes,
    round_id: int,
    sender: Address,
    recipient: Address,
) -> bytes:
    """``share`` sealed from ``sender`` to ``recipient`` (ChaCha20-Poly1305: 32 bytes of ciphertext and a 16-byte tag).

    The key is ``HKDF-SHA256(X25519(sk, pk), salt = chain || ledger || round, info =
    "fedchain/share/v1" || low || high)``: the pair's own X25519 secret, as the pair seed is, but
    another info string, so the two keys are independent and revealing a pair seed reveals no
    share key (and the other way round). The nonce is :func:`share_nonce` of (round, sender,
    recipient): the key is the pair's for this round only, and under it exactly two messages are
    sealed, ``i -> j`` and ``j -> i``, with different nonces (sender and recipient swap); a
    member's own share is sealed under ``X25519(sk_i, pk_i)``. A member seals one share per
    recipient per round because the ledger records one submission per member and round and the
    blob is put in the store only after that submission is mined, so no (key, nonce) pair ever
    protects two published ciphertexts. The associated data (:func:`share_aad`) binds the chain,
    the ledger, the round and both ends.
    """
    if len(share) != SHARE_SIZE:
        raise ValueError(f"a share is {SHARE_SIZE} bytes, got {len(share)}")
    aead = _share_aead(
        my_private, recipient_public, chain_id=chain_id, ledger=ledger, round_id=round_id, a=sender, b=recipient
    )
    return aead.encrypt(
        share_nonce(round_id, sender, recipient), share, share_aad(chain_id, ledger, round_id, sender, recipient)
    )


def open_share(
    my_private: MaskingKey,
    sender_public: bytes,
    sealed: bytes,
    *,
    chain_id: int,
    ledger: bytes,
    round_id: int,
    sender: Address,
    recipient: Address,
) -> bytes:
    """The share ``sender`` sealed to ``recipient`` (who holds ``my_private``), :func:`seal_share`'s inverse.

    Raises
    ------
    ShareError
        The sealed share does not open.
    """
    if len(sealed) != SEALED_SIZE:
        raise ShareError(f"a sealed share is {SEALED_SIZE} bytes, got {len(sealed)}")
    aead = _share_aead(
        my_private, sender_public, chain_id=chain_id, ledger=ledger, round_id=round_id, a=sender, b=recipient
    )
    try:
        return aead.decrypt(
            share_nonce(round_id, sender, recipient), sealed, share_aad(chain_id, ledger, round_id, sender, recipient)
        )
    except InvalidTag:
        raise ShareError(f"the share {sender} sealed to {recipient} does not open") from None


# --------------------------------------------------------------------------- commitments


def commit(seed: bytes, salt: bytes) -> bytes:
    """``sha256(b"fedchain/commit/v1" || salt || seed)``."""
    return hashlib.sha256(COMMIT_DOMAIN + salt + seed).digest()


def self_salt(round_id: int, sender: Address) -> bytes:
    """The salt of a self-seed commitment: ``b"self" || round (32 BE) || sender (20)``."""
    return b"self" + round_id.to_bytes(32, "big") + _address_bytes(sender)


def pair_salt(round_id: int, a: Address, b: Address) -> bytes:
    """The salt of a pair-seed commitment: ``b"pair" || round (32 BE) || low (20) || high (20)``.

    The same for both ends, so the two headers of a pair must hold the same commitment.
    """
    low, high = sorted((_address_bytes(a), _address_bytes(b)))
    if low == high:
        raise ValueError(f"a pair of one address {a}")
    return b"pair" + round_id.to_bytes(32, "big") + low + high


def share_salt(round_id: int, owner: Address, holder: Address) -> bytes:
    """The salt of a share's commitment: ``b"share" || round (32 BE) || owner (20) || holder (20)``.

    A share is 32 bytes that, to anyone holding fewer than the threshold of the owner's shares,
    are uniformly distributed (each half is one free point of a random polynomial over
    GF(2**128)), so its salted hash reveals nothing practical about it (a 2**256 search).
    """
    return b"share" + round_id.to_bytes(32, "big") + _address_bytes(owner) + _address_bytes(holder)


# --------------------------------------------------------------------------- the masked blob


@dataclass(frozen=True)
class SealedShare:
    """One holder's share of the owner's self seed, as the owner's header holds it.

    Attributes
    ----------
    sealed:
        :func:`seal_share` of the share to the holder (48 bytes).
    commitment:
        ``commit(share, share_salt(round, owner, holder))``: a revealed share is checked against it,
        so a wrong one is attributed to its revealer.
    """

    sealed: bytes
    commitment: bytes

    def to_hex(self) -> str:
        if len(self.sealed) != SEALED_SIZE or len(self.commitment) != SEED_SIZE:
            raise CodecError("metadata", f"a sealed share is {SEALED_SIZE} + {SEED_SIZE} bytes")
        return "0x" + self.sealed.hex() + self.commitment.hex()


@dataclass(frozen=True)
class MaskedHeader:
    """What a masked update's blob header holds besides the words.

    Parameters
    ----------
    round_id, base, sender, samples:
        As in a plain update (``samples`` is ``n_k``, which the ledger also records).
    params:
        The fixed-point parameters the words were made with (the manifest's).
    self_commitment:
        ``commit(b_i, self_salt(round, sender))``.
    pair_commitments:
        ``commit(s_ij, pair_salt(round, i, j))`` for every other roster member ``j``, by address.
    dp:
        The differential-privacy spend of the training that produced the update, if any.
    shares:
        The sender's self seed shared among the roster: a :class:`SealedShare` for every member
        (the sender included), by address. Empty only outside the protocol (the codec's tests).
    """

    round_id: RoundId
    base: Digest
    sender: Address
    samples: int
    params: MaskingParams
    self_commitment: bytes
    pair_commitments: Mapping[Address, bytes]
    dp: DpSpend | None = None
    shares: Mapping[Address, SealedShare] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        """The header's ``__metadata__`` strings."""
        if not isinstance(self.sender, str) or not is_checksum_address(self.sender):
            raise CodecError("metadata", f"sender must be a checksummed address, got {self.sender!r}")
        if len(self.base) != 32 or len(self.self_commitment) != 32:
            raise CodecError("metadata", "base and self_commitment must be 32 bytes")
        if not isinstance(self.samples, int) or isinstance(self.samples, bool) or self.samples < 1:
            raise CodecError("metadata", f"samples must be an int >= 1, got {self.samples!r}")
        meta = {
            "base": "0x" + bytes(self.base).hex(),
            "clip": repr(self.params.clip),
            "codec": MASKED_CODEC,
            "frac_bits": str(self.params.frac_bits),
            "kind": "masked-update",
            "modulus_bits": str(self.params.modulus_bits),
            "round": str(int(self.round_id)),
            "samples": str(self.samples),
            "self_commitment": "0x" + self.self_commitment.hex(),
            "sender": self.sender,
        }
        mine = address_key(self.sender)
        for other in ordered(self.pair_commitments):
            if not is_checksum_address(other) or address_key(other) == mine:
                raise CodecError("metadata", f"pair commitment key {other!r} is not another checksummed address")
            commitment = self.pair_commitments[other]
            if len(commitment) != 32:
                raise CodecError("metadata", f"pair commitment with {other} is not 32 bytes")
            meta[_PAIR_PREFIX + other] = "0x" + commitment.hex()
        for holder in ordered(self.shares):
            if not is_checksum_address(holder):
                raise CodecError("metadata", f"share key {holder!r} is not a checksummed address")
            meta[_SHARE_PREFIX + holder] = self.shares[holder].to_hex()
        if self.dp is not None:
            meta.update(self.dp.to_metadata())
        return meta


@dataclass(frozen=True)
class MaskedExpect:
    """What the ledger and the manifest say a masked blob must hold (``None``: not checked)."""

    round_id: int | None = None
    base: bytes | None = None
    sender: str | None = None
    samples: int | None = None
    params: MaskingParams | None = None
    roster: Collection[Address] | None = None
    shared: bool = False
    """Whether the header must hold a sealed share for every roster member (the protocol's blobs do)."""


@dataclass(frozen=True)
class MaskedUpdate:
    """A decoded masked blob: its header and its words (read-only over ``bytes``)."""

    header: MaskedHeader
    words: np.ndarray = field(repr=False)


def _fail(reason: str, detail: str) -> NoReturn:
    raise CodecError(reason, detail)


def encode_masked(y: np.ndarray, header: MaskedHeader) -> bytes:
    """The canonical blob of a masked update: one ``U64`` tensor ``masked`` of shape ``(P,)``.

    The same rendering as every fedchain blob (``_safetensors.render_header``: sorted keys, no
    whitespace, padded to 8 bytes), with the U64 dtype code that the shared writer does not list.
    """
    words = np.asarray(y)
    if words.dtype != np.uint64 or words.ndim != 1:
        _fail("dtype", f"masked words must be a flat uint64 vector, got {words.dtype} of shape {words.shape}")
    data = np.ascontiguousarray(words, dtype=_U64).view(np.uint8)
    entries = {MASKED_TENSOR: ("U64", (int(words.size),), 0, int(data.size))}
    head = _safetensors.render_header(entries, header.to_metadata())
    return b"".join([struct.pack("<Q", len(head)), head, data.data])


def _parse_params(meta: Mapping[str, str]) -> MaskingParams:
    for key in ("frac_bits", "modulus_bits"):
        if not _DECIMAL.fullmatch(meta[key]):
            _fail("metadata", f"metadata field {key!r} is not a canonical decimal: {meta[key][:40]!r}")
    try:
        clip = float(meta["clip"])
        params = MaskingParams(int(meta["frac_bits"]), clip, int(meta["modulus_bits"]))
    except ValueError as err:
        raise CodecError("metadata", f"fixed-point parameters: {err}") from err
    if repr(clip) != meta["clip"]:
        _fail("metadata", f"metadata field 'clip' is not the canonical repr of a float: {meta['clip'][:40]!r}")
    return params


def _parse_hex32(meta: Mapping[str, str], key: str) -> bytes:
    value = meta[key]
    if not _HEX32.fullmatch(value):
        _fail("metadata", f"metadata field {key[:60]!r} is not 0x + 64 lower-case hex digits")
    return bytes.fromhex(value[2:])


def _parse_header(meta: Mapping[str, str]) -> MaskedHeader:
    codec = meta.get("codec")
    if codec != MASKED_CODEC:
        _fail("codec", f"codec {str(codec)[:80]!r}, expected {MASKED_CODEC!r}")
    if meta.get("kind") != "masked-update":
        _fail("kind", f"blob is a {str(meta.get('kind'))[:80]!r}, expected 'masked-update'")
    required = {"base", "clip", "codec", "frac_bits", "kind", "modulus_bits", "round", "samples", "self_commitment"}
    required.add("sender")
    for key in sorted(required):
        if key not in meta:
            _fail("metadata", f"metadata field {key!r} is missing")
    dp_keys = {k for k in meta if k.startswith("dp_")}
    for key in sorted(meta):
        if key not in required and key not in dp_keys and not key.startswith((_PAIR_PREFIX, _SHARE_PREFIX)):
            _fail("metadata", f"unknown metadata field {key[:80]!r}")
    for key in ("round", "samples"):
        if not _DECIMAL.fullmatch(meta[key]):
            _fail("metadata", f"metadata field {key!r} is not a canonical decimal: {meta[key][:40]!r}")
    sender = meta["sender"]
    if not _ADDRESS.fullmatch(sender) or not is_checksum_address(sender):
        _fail("metadata", f"metadata field 'sender' is not a checksummed address: {sender[:80]!r}")
    pairs: dict[Address, bytes] = {}
    for key in sorted(meta):
        if key.startswith(_PAIR_PREFIX):
            other = key[len(_PAIR_PREFIX) :]
            if not _ADDRESS.fullmatch(other) or not is_checksum_address(other) or other.lower() == sender.lower():
                _fail("metadata", f"pair commitment key {key[:80]!r} is not another checksummed address")
            pairs[Address(other)] = _parse_hex32(meta, key)
    shares: dict[Address, SealedShare] = {}
    for key in sorted(meta):
        if key.startswith(_SHARE_PREFIX):
            holder = key[len(_SHARE_PREFIX) :]
            if not _ADDRESS.fullmatch(holder) or not is_checksum_address(holder):
                _fail("metadata", f"share key {key[:80]!r} is not a checksummed address")
            if not _HEX_SHARE.fullmatch(meta[key]):
                _fail("metadata", f"metadata field {key[:60]!r} is not 0x + {2 * (SEALED_SIZE + SEED_SIZE)} hex digits")
            raw = bytes.fromhex(meta[key][2:])
            shares[Address(holder)] = SealedShare(raw[:SEALED_SIZE], raw[SEALED_SIZE:])
    dp: DpSpend | None = None
    if dp_keys:
        try:
            dp = DpSpend.from_metadata({k: meta[k] for k in dp_keys})
        except ValueError as err:
            raise CodecError("metadata", f"dp fields: {err}") from err
    samples = int(meta["samples"])
    if samples < 1:
        _fail("metadata", "samples must be at least 1")
    return MaskedHeader(
        round_id=RoundId(int(meta["round"])),
        base=Digest(_parse_hex32(meta, "base")),
        sender=Address(sender),
        samples=samples,
        params=_parse_params(meta),
        self_commitment=_parse_hex32(meta, "self_commitment"),
        pair_commitments=pairs,
        dp=dp,
        shares=shares,
    )


def _check_expect(header: MaskedHeader, expect: MaskedExpect) -> None:
    checks: Sequence[tuple[str, object, object]] = (
        ("round", expect.round_id, int(header.round_id)),
        ("base", None if expect.base is None else bytes(expect.base).hex(), bytes(header.base).hex()),
        ("sender", None if expect.sender is None else expect.sender.lower(), header.sender.lower()),
        ("samples", expect.samples, header.samples),
        ("params", expect.params, header.params),
    )
    for name, want, have in checks:
        if want is not None and want != have:
            _fail(name, f"header field {name!r} is {have!r}, expected {want!r}")
    if expect.roster is not None:
        want_keys = {address_key(a) for a in expect.roster} - {address_key(header.sender)}
        have_keys = {address_key(a) for a in header.pair_commitments}
        if address_key(header.sender) not in {address_key(a) for a in expect.roster}:
            _fail("sender", f"sender {header.sender} is not in the round's roster")
        if want_keys != have_keys:
            _fail("roster", f"pair commitments cover {len(have_keys)} members, the roster has {len(want_keys)} others")
        if expect.shared:
            roster_keys = {address_key(a) for a in expect.roster}
            share_keys = {address_key(a) for a in header.shares}
            if share_keys != roster_keys:
                _fail("roster", f"sealed shares cover {len(share_keys)} members, the roster has {len(roster_keys)}")


def decode_masked(
    blob: bytes | bytearray | memoryview, *, num_elements: int, expect: MaskedExpect | None = None
) -> MaskedUpdate:
    """Decode a masked blob strictly: it must be exactly what :func:`encode_masked` writes for its contents.

    Raises
    ------
    CodecError
        ``truncated``, ``not-safetensors``, ``header``, ``metadata``, ``codec``, ``kind``, ``dtype``,
        ``shape``, ``offsets``, ``non-canonical``, or ``round``/``base``/``sender``/``samples``/``params``/
        ``roster`` when the header differs from ``expect``.
    """
    parsed = _safetensors.parse(blob, max_header=MAX_MASKED_HEADER)
    header = _parse_header(parsed.metadata)
    if len(parsed.entries) != 1 or parsed.entries[0].name != MASKED_TENSOR:
        _fail("header", f"a masked blob holds exactly one tensor {MASKED_TENSOR!r}")
    entry = parsed.entries[0]
    if entry.dtype != "U64":
        _fail("dtype", f"tensor {MASKED_TENSOR!r} has dtype {entry.dtype[:20]!r}, expected 'U64'")
    if entry.shape != (num_elements,):
        _fail("shape", f"tensor {MASKED_TENSOR!r} has shape {entry.shape}, expected ({num_elements},)")
    if entry.start != 0 or entry.end != 8 * num_elements:
        _fail("offsets", f"tensor occupies [{entry.start}, {entry.end}), expected [0, {8 * num_elements})")
    available = len(blob) - parsed.data_start
    if available < entry.end:
        _fail("truncated", f"data section holds {available} bytes, the header describes {entry.end}")
    if available > entry.end:
        _fail("offsets", f"{available - entry.end} unexpected bytes after the last tensor")
    rendered = _safetensors.render_header(
        {MASKED_TENSOR: (entry.dtype, entry.shape, entry.start, entry.end)}, header.to_metadata()
    )
    if rendered != parsed.header:
        _fail("non-canonical", "header is not in canonical form (key order, whitespace, escaping, padding or values)")
    if expect is not None:
        _check_expect(header, expect)
    words = np.frombuffer(blob, dtype=_U64, count=num_elements, offset=parsed.data_start)
    return MaskedUpdate(header=header, words=words)


# --------------------------------------------------------------------------- unmasking


def check_pair_commitments(headers: Mapping[Address, MaskedHeader]) -> None:
    """Every two headers commit to the same seed for their pair (the pair salt is shared).

    Raises
    ------
    PairCommitmentError
        Naming both participants of the first disagreeing pair (numeric order).
    """
    by_key = {address_key(a): h for a, h in headers.items()}
    pair_maps = {k: {address_key(o): c for o, c in h.pair_commitments.items()} for k, h in by_key.items()}
    keys = sorted(by_key)
    for x, a in enumerate(keys):
        for b in keys[x + 1 :]:
            if pair_maps[a].get(b) != pair_maps[b].get(a):
                raise PairCommitmentError(by_key[a].sender, by_key[b].sender)


def unmask(
    sum_y: np.ndarray,
    *,
    roster: Collection[Address],
    survivors: Collection[Address],
    headers: Mapping[Address, MaskedHeader],
    self_seeds: Mapping[Address, bytes],
    pair_seeds: Mapping[tuple[Address, Address], bytes],
) -> np.ndarray:
    """The survivors' sum of words from the sum of their masked words and the reveals.

    Parameters
    ----------
    sum_y:
        ``sum_{i in S} y_i`` (:func:`sum_words` of the survivors' masked words).
    roster:
        The round's roster (who had a masking key when it opened).
    survivors:
        ``S``, the members whose words are in ``sum_y``.
    headers:
        The decoded headers of (at least) every survivor. The survivors' headers must agree on
        every pair among them (:func:`check_pair_commitments`); a revealed seed is checked
        against the revealer's own header. A dropped member's header, where one is public, is
        not consulted: what corrects the sum is exactly what the revealer added, which only
        the revealer's commitment binds, and a dropped member must not be able to block the
        round by publishing a different commitment.
    self_seeds:
        ``b_i`` revealed by each survivor ``i``.
    pair_seeds:
        ``s_ij`` revealed by survivor ``i`` for each dropped member ``j``, keyed ``(i, j)``.

    Raises
    ------
    RevealError
        A revealed seed that does not match the revealer's header commitment (or, for a pair
        seed, the dropped member's published one), or a missing reveal, naming the revealer.
    PairCommitmentError
        Two available headers commit to different seeds for their pair.
    ValueError
        Survivors outside the roster, a survivor without a header, reveals that should not exist.
    """
    roster_t = ordered(roster)
    by_key = {address_key(a): a for a in roster_t}
    survivor_keys = {address_key(a) for a in survivors}
    if len(survivor_keys) != len(survivors) or not survivor_keys <= set(by_key):
        raise ValueError("survivors must be distinct roster members")
    dropped_keys = set(by_key) - survivor_keys
    header_by_key = {address_key(a): h for a, h in headers.items()}
    for k in sorted(survivor_keys):
        if k not in header_by_key:
            raise ValueError(f"no header for survivor {by_key[k]}")
    check_pair_commitments({by_key[k]: header_by_key[k] for k in sorted(survivor_keys)})
    self_by_key = {address_key(a): s for a, s in self_seeds.items()}
    pair_by_key = {(address_key(i), address_key(j)): s for (i, j), s in pair_seeds.items()}
    if set(self_by_key) - survivor_keys:
        raise ValueError("self seeds revealed for members outside the survivors")
    extra = {p for p in pair_by_key if p[0] not in survivor_keys or p[1] not in dropped_keys}
    if extra:
        raise ValueError(f"{len(extra)} pair seeds revealed that are not (survivor, dropped) pairs")

    total = np.array(sum_y, dtype=np.uint64, copy=True)
    if total.ndim != 1:
        raise ValueError("sum_y must be a flat uint64 vector")
    streams: list[tuple[bytes, int]] = []
    for k in sorted(survivor_keys):
        who, header = by_key[k], header_by_key[k]
        seed = self_by_key.get(k)
        if seed is None:
            raise RevealError(who, "self seed", "missing")
        if len(seed) != SEED_SIZE or commit(seed, self_salt(header.round_id, header.sender)) != header.self_commitment:
            raise RevealError(who, "self seed")
        streams.append((seed, -1))
        commitments = {address_key(o): c for o, c in header.pair_commitments.items()}
        for j in sorted(dropped_keys):
            other = by_key[j]
            seed = pair_by_key.get((k, j))
            if seed is None:
                raise RevealError(who, f"pair seed with {other}", "missing")
            salt = pair_salt(header.round_id, who, other)
            if len(seed) != SEED_SIZE or commitments.get(j) != commit(seed, salt):
                raise RevealError(who, f"pair seed with {other}")
            # i's words hold +PRG(s_ij) when j > i and -PRG(s_ij) when j < i: take it out
            streams.append((seed, -1 if j > k else +1))
    _accumulate(total, streams)
    logger.debug("unmasked %d survivors with %d dropped", len(survivor_keys), len(dropped_keys))
    return total


# --------------------------------------------------------------------------- reconstructing self seeds


def check_share(header: MaskedHeader, holder: Address, share: bytes) -> bool:
    """Whether ``share`` is the one ``header``'s sender committed to for ``holder``."""
    sealed = {address_key(a): v for a, v in header.shares.items()}.get(address_key(holder))
    return (
        sealed is not None
        and len(share) == SHARE_SIZE
        and sealed.commitment == commit(share, share_salt(header.round_id, header.sender, holder))
    )


def reconstruct_seed(
    roster: Collection[Address], header: MaskedHeader, shares: Mapping[Address, bytes], *, threshold: int
) -> bytes:
    """The owner's self seed from its holders' checked shares: the ``threshold`` of lowest share index, combined.

    Parameters
    ----------
    roster:
        The round's roster (the share indices).
    header:
        The owner's decoded header (its self commitment).
    shares:
        Revealed shares by holder, each already checked with :func:`check_share`.

    Raises
    ------
    RevealError
        Fewer than ``threshold`` shares (``missing``), or shares that, though each matches its
        commitment, do not combine into the committed seed: the owner shared a seed it did not
        commit to (``not reconstructible from its shares``), naming the owner.
    """
    by_index = {share_index(roster, holder): share for holder, share in shares.items()}
    if len(by_index) < threshold:
        raise RevealError(header.sender, "self seed", f"missing: {len(by_index)} shares, {threshold} needed")
    chosen = {k: by_index[k] for k in sorted(by_index)[:threshold]}
    seed = combine_seed(chosen)
    if commit(seed, self_salt(header.round_id, header.sender)) != header.self_commitment:
        raise RevealError(header.sender, "self seed", "not reconstructible from its shares")
    return seed


# --------------------------------------------------------------------------- the reveal planner


Phase = Literal["pairs", "shares", "done", "abandon"]


@dataclass(frozen=True)
class RevealPlan:
    """What must be revealed next, given the survivors and what is already on chain.

    Attributes
    ----------
    phase:
        ``pairs`` (survivors reveal pair seeds with dropped members), ``shares`` (survivors reveal
        their shares of the survivors' self seeds), ``done`` (every survivor's self seed has
        ``threshold`` shares revealed) or ``abandon`` (fewer survivors than the minimum or the
        threshold: nothing more may be revealed).
    survivors:
        ``S``, numeric order.
    pair_requests:
        For each survivor that still owes pair seeds, the dropped members they are with.
    share_requests:
        For each survivor that still owes shares (``phase == "shares"``), the owners whose shares it owes.
    """

    phase: Phase
    survivors: tuple[Address, ...]
    pair_requests: Mapping[Address, tuple[Address, ...]]
    share_requests: Mapping[Address, tuple[Address, ...]] = field(default_factory=dict)

    @property
    def laggards(self) -> tuple[Address, ...]:
        """Who is moved out of ``S`` if the phase's deadline passes with these requests still open.

        Only the pair phase has laggards: once shares are asked for, ``S`` is final (moving a member
        out then would reveal pair seeds of a member whose self seed shares may be public).
        """
        if self.phase == "pairs":
            return ordered(self.pair_requests)
        return ()


def plan_reveals(
    roster: Collection[Address],
    survivors: Collection[Address],
    *,
    pairs_revealed: Collection[tuple[Address, Address]],
    shares_revealed: Collection[tuple[Address, Address]],
    threshold: int,
    minimum: int,
) -> RevealPlan:
    """The next reveal phase of a round (stateless: everything comes from the chain).

    ``pairs_revealed`` holds ``(survivor, dropped)`` pairs whose seed is counted,
    ``shares_revealed`` ``(owner, holder)`` pairs whose share is counted. The rules (each
    participant checks them on chain before it reveals anything), which keep every member's
    pair seeds and its self seed from being public together:

    - a survivor ``i`` reveals ``s_ij`` for every dropped ``j`` (phase 1, repeated while laggards leave);
    - only once no pair seed is owed, every survivor reveals its shares of every survivor's self
      seed (phase 2); ``S`` is then final: a pair seed with a member of ``S`` is never asked for,
      and a share of a dropped member's self seed never;
    - below ``max(minimum, threshold)`` survivors nothing more is revealed: the round is abandoned
      (and so it is if a share was counted while a pair seed is owed, which the replay never does).

    A survivor silent in phase 2 stays in ``S``: its self seed is reconstructed from the others'
    shares. If the phase's deadline passes with an owner short of ``threshold`` shares the round is
    abandoned (the protocol layer's replay decides that; this function has no clock).
    """
    if minimum < 2:
        raise ValueError(f"the minimum of survivors is at least 2, got {minimum}")
    if threshold < 2:
        raise ValueError(f"the share threshold is at least 2, got {threshold}")
    roster_t = ordered(roster)
    members = {address_key(a) for a in roster_t}
    survivors_t = ordered(survivors)
    survivor_keys = {address_key(a) for a in survivors_t}
    if not survivor_keys <= members:
        raise ValueError("survivors must be roster members")
    revealed_pairs = {(address_key(i), address_key(j)) for i, j in pairs_revealed}
    revealed_shares = {(address_key(o), address_key(h)) for o, h in shares_revealed}
    dropped = [a for a in roster_t if address_key(a) not in survivor_keys]
    shared_outside = any(o not in survivor_keys for o, _ in revealed_shares)
    if len(survivors_t) < max(minimum, threshold) or shared_outside:
        return RevealPlan("abandon", survivors_t, {})
    pair_requests: dict[Address, tuple[Address, ...]] = {}
    for i in survivors_t:
        owed = tuple(j for j in dropped if (address_key(i), address_key(j)) not in revealed_pairs)
        if owed:
            pair_requests[i] = owed
    if pair_requests:
        return RevealPlan(
            "abandon" if revealed_shares else "pairs", survivors_t, {} if revealed_shares else pair_requests
        )
    counts = {address_key(o): 0 for o in survivors_t}
    for owner_key, holder_key in revealed_shares:
        if holder_key in survivor_keys:
            counts[owner_key] += 1
    if all(c >= threshold for c in counts.values()):
        return RevealPlan("done", survivors_t, {})
    share_requests: dict[Address, tuple[Address, ...]] = {}
    for holder in survivors_t:
        owed = tuple(o for o in survivors_t if (address_key(o), address_key(holder)) not in revealed_shares)
        if owed:
            share_requests[holder] = owed
    return RevealPlan("shares", survivors_t, {}, share_requests)


def next_survivors(plan: RevealPlan) -> tuple[Address, ...]:
    """``S`` after the plan's deadline passed with its requests still open: minus the laggards."""
    lagging = {address_key(a) for a in plan.laggards}
    return tuple(a for a in plan.survivors if address_key(a) not in lagging)


__all__ = [
    "COMMIT_DOMAIN",
    "MASKED_CODEC",
    "MASK_INFO",
    "SEALED_SIZE",
    "SHARE_INFO",
    "SHARE_NONCE_DOMAIN",
    "SHARE_SIZE",
    "MaskedExpect",
    "MaskedHeader",
    "MaskedUpdate",
    "MaskingError",
    "MaskingKey",
    "MaskingParams",
    "PairCommitmentError",
    "RevealError",
    "RevealPlan",
    "SealedShare",
    "ShareError",
    "address_key",
    "aggregate_norm_bound",
    "apply_masked_aggregate",
    "check_pair_commitments",
    "check_share",
    "combine_seed",
    "commit",
    "decode_masked",
    "dequantize",
    "encode_masked",
    "flatten",
    "mask_update",
    "next_survivors",
    "open_share",
    "ordered",
    "pair_salt",
    "pair_seed",
    "plan_reveals",
    "prg",
    "quantize",
    "reconstruct_seed",
    "seal_share",
    "self_salt",
    "share_aad",
    "share_index",
    "share_nonce",
    "share_salt",
    "split_seed",
    "sum_words",
    "unflatten",
    "unmask",
]
