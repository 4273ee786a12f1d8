"""Robust aggregation rules as pure functions with fixed arithmetic, recomputed bit for bit by every verifier.

Each rule takes the round's base ``theta`` and its valid updates ``(participant, n_k, delta)``
(float32, screened finite) and returns a :class:`RobustResult`. ``fl64``/``fl32`` round to
nearest even in binary64/binary32; ``eta`` is the server learning rate (a Python float).
Updates are taken in ascending ``participant.lower()`` order (the order of the input list
never matters), and every step below is an elementwise numpy call or an exact integer
computation: no BLAS reduction that could round, no ``np.sum``/``np.mean`` (whose pairwise
summation order depends on the array's layout and the SIMD width), no fused multiply-add.
Threads share disjoint element ranges, so the thread count cannot change a bit.

Coordinate rules, per element ``e`` with ``v_(0) <= ... <= v_(K-1)`` the K deltas' values
sorted (sorting is exact, so ties and the input order cannot matter)::

    median:        agg = fl64(v_(K//2))                                  K odd
                   agg = fl64(fl64(fl64(v_(K/2-1)) + fl64(v_(K/2))) * 0.5)  K even
    trimmed mean:  t = floor(trim * K) (Python float product), kept ranks t .. K-t-1
                   acc = fl64(v_(t)); acc = fl64(acc + fl64(v_(r))) for r = t+1 .. K-t-1
                   agg = fl64(acc / (K - 2t))
    theta'[e] = fl32(fl64(theta[e]) + fl64(eta * agg))

The sample counts ``n_k`` do not weigh in (as in Flower's FedMedian and FedTrimmedAvg).
Memory: the output, and per thread a ``(chunk, K)`` float32 block and two float64 chunks;
the updates are only read a chunk at a time, so memory-mapped updates are never loaded whole.

Krum and Multi-Krum (``f`` assumed Byzantine, ``m`` selected)::

    D[i][j]  = ||d_i - d_j||**2, the exact real number (from the exact Gram matrix,
               :func:`fedchain.fl._robust_exec.exact_gram`), compared exactly
    c        = max(1, min(K - 1, K - f - 2))        (Flower's clamp when K is small)
    score_i  = exact sum of the c smallest D[i][j], j != i
    selected = the m lowest (score_i, participant.lower())   (m = 1 for Krum)
    theta'   = FedAvg of the selected with n = sum of their n_k:
               acc = fl64(theta); acc = fl64(acc + fl64(fl64(delta_k) * c_k)),
               c_k = fl64(fl64(eta * n_k) / n), selected in participant order; theta' = fl32(acc)

the same arithmetic as :func:`fedchain.fl._aggregate.fedavg_stream` (reimplemented here
for numpy arrays). Memory: all K updates at once (the Gram matrix needs every pair), plus
``K * K`` Python ints and a ``(S*K, 4096)`` float64 chunk per thread (``S`` slices, 2 or 3
for model deltas, at most 14); an update discarded by Krum was valid and is reported as
``discarded``, never as an exclusion.

Server-side clipping, in front of any rule::

    norm = sqrt(fl64(sum_e delta[e]**2))   (exactly rounded sum of squares, then IEEE sqrt)
    if norm > max_norm:  delta'[e] = fl32(fl64(delta[e]) * fl64(max_norm / norm))

FedAvg itself (``fedavg``) is here only so the registry can name it: with clipping it is
the FedAvg arithmetic above over every update, ``n`` the sum of all ``n_k``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from typing import Any

import numpy as np

from fedchain.errors import AggregationError, ConfigError
from fedchain.fl._exact import sum_of_squares
from fedchain.fl._robust_exec import Spans, default_threads, exact_gram, make_plan, run_plan

logger = logging.getLogger(__name__)

#: One update as a rule consumes it: (participant, n_k, delta arrays).
RobustUpdate = tuple[str, int, Mapping[str, np.ndarray]]

#: The rules the manifest may name.
RULES = frozenset({"fedavg", "median", "trimmed-mean", "krum", "multi-krum"})

#: Elements of a ``(chunk, K)`` float32 block in the coordinate rules: 1 MiB.
_BLOCK = 1 << 18
#: Elements per chunk of the elementwise passes (a float64 chunk is 1 MiB).
_CHUNK = 1 << 17


@dataclass(frozen=True)
class RobustResult:
    """What a rule made of a round.

    Attributes
    ----------
    params:
        The new float32 parameters, sorted by name.
    selected:
        The participants whose updates went into ``params``, in participant order.
    discarded:
        Valid updates the rule left out (Krum's unselected), in participant order: not
        exclusions of the protocol.
    clipped:
        The participants whose update server-side clipping scaled down.
    scores:
        Krum's score of every participant (float64, rounded once from the exact value), in
        participant order; empty for the other rules.
    """

    params: dict[str, np.ndarray]
    selected: tuple[str, ...]
    discarded: tuple[str, ...] = ()
    clipped: tuple[str, ...] = ()
    scores: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class _Round:
    """The validated inputs: names, shapes, flat base and flat updates in participant order."""

    names: list[str]
    shapes: list[tuple[int, ...]]
    thetas: list[np.ndarray]
    participants: list[str]
    counts: list[int]
    flats: list[list[np.ndarray]]


def _float32(who: str, name: str, value: object) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise AggregationError(f"{who}: tensor {name!r} is a {type(value).__name__}, not a numpy array")
    if value.dtype != np.float32:
        raise AggregationError(f"{who}: tensor {name!r} has dtype {value.dtype}, expected float32")
    return value


def _prepare(base: Mapping[str, np.ndarray], updates: Sequence[RobustUpdate]) -> _Round:
    names = sorted(base)
    bases = [_float32("base model", name, base[name]) for name in names]
    shapes = [b.shape for b in bases]
    ordered = sorted(updates, key=lambda u: u[0].lower() if isinstance(u[0], str) else "")
    participants: list[str] = []
    counts: list[int] = []
    flats: list[list[np.ndarray]] = []
    for participant, n_k, delta in ordered:
        if not isinstance(participant, str) or not participant:
            raise AggregationError(f"participant must be a non-empty string, got {participant!r}")
        if participants and participants[-1].lower() == participant.lower():
            raise AggregationError(f"update from {participant} appears twice")
        if not isinstance(n_k, int) or isinstance(n_k, bool) or n_k < 1:
            raise AggregationError(f"update from {participant}: sample count must be a positive int, got {n_k!r}")
        if set(delta) != set(names):
            raise AggregationError(f"update from {participant} has tensors {sorted(delta)}, the model has {names}")
        who = f"update from {participant}"
        arrays = [_float32(who, name, delta[name]) for name in names]
        for name, arr, shape in zip(names, arrays, shapes, strict=True):
            if arr.shape != shape:
                raise AggregationError(f"{who}: tensor {name!r} has shape {arr.shape}, expected {shape}")
        participants.append(participant)
        counts.append(n_k)
        flats.append([a.reshape(-1) for a in arrays])  # views, unless an array is not contiguous
    return _Round(names, shapes, [b.reshape(-1) for b in bases], participants, counts, flats)


def _threads(threads: int | None) -> int:
    if threads is None:
        return default_threads()
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise AggregationError(f"threads must be a positive int, got {threads!r}")
    return threads


def _eta(server_lr: float) -> np.float64:
    if not (isinstance(server_lr, (int, float)) and not isinstance(server_lr, bool) and math.isfinite(server_lr)):
        raise AggregationError(f"server learning rate must be a finite number, got {server_lr!r}")
    # np.float64, not a Python float: with a float32 operand NEP 50 would compute in float32
    eta: np.float64 = np.float64(float(server_lr))
    return eta


def _finish(rnd: _Round, outs: list[np.ndarray]) -> dict[str, np.ndarray]:
    params = {}
    for name, shape, out in zip(rnd.names, rnd.shapes, outs, strict=True):
        if not np.isfinite(out).all():
            raise AggregationError(f"the aggregate's tensor {name!r} is not finite")
        params[name] = out.reshape(shape)
    return params


# --------------------------------------------------------------------------- coordinate rules

#: Turns a ``(n, K)`` block of sorted values into the float64 ``agg`` chunk (the second chunk is scratch).
_Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


def _median_kernel(block: np.ndarray, agg: np.ndarray, tmp: np.ndarray) -> None:
    k = block.shape[1]
    if k % 2:
        np.copyto(agg, block[:, k // 2])  # exact
    else:
        np.copyto(agg, block[:, k // 2 - 1])  # exact
        np.copyto(tmp, block[:, k // 2])  # exact
        np.add(agg, tmp, out=agg)
        np.multiply(agg, 0.5, out=agg)  # exact: never subnormal (float32 inputs)


def _trimmed_kernel(cut: int, block: np.ndarray, agg: np.ndarray, tmp: np.ndarray) -> None:
    k = block.shape[1]
    np.copyto(agg, block[:, cut])  # exact
    for rank in range(cut + 1, k - cut):  # ascending ranks, one correctly rounded add each
        np.copyto(tmp, block[:, rank])  # exact
        np.add(agg, tmp, out=agg)
    np.divide(agg, np.float64(k - 2 * cut), out=agg)


def _coordinate_part(rnd: _Round, kernel: _Kernel, eta: np.float64, outs: list[np.ndarray], spans: Spans) -> None:
    k = len(rnd.flats)
    chunk = max(64, _BLOCK // k)
    block = np.empty((chunk, k), dtype=np.float32)
    agg = np.empty(chunk, dtype=np.float64)
    tmp = np.empty(chunk, dtype=np.float64)
    for index, start, stop in spans:
        theta, out = rnd.thetas[index], outs[index]
        columns = [flats[index] for flats in rnd.flats]
        for lo in range(start, stop, chunk):
            hi = min(lo + chunk, stop)
            n = hi - lo
            b, a, t = block[:n], agg[:n], tmp[:n]
            for col, values in enumerate(columns):
                b[:, col] = values[lo:hi]
            b.sort(axis=1)  # exact; any algorithm gives the same values in the same ranks
            kernel(b, a, t)
            if eta != 1.0:  # multiplying by 1.0 is exact: skipping it changes no bit
                np.multiply(a, eta, out=a)
            np.copyto(t, theta[lo:hi])  # exact
            np.add(a, t, out=a)
            np.copyto(out[lo:hi], a)  # float64 -> float32, rounding to nearest even


def _coordinate(
    base: Mapping[str, np.ndarray],
    updates: Sequence[RobustUpdate],
    kernel: _Kernel,
    server_lr: float,
    threads: int | None,
    rule: str,
) -> RobustResult:
    eta = _eta(server_lr)
    n_threads = _threads(threads)
    rnd = _prepare(base, updates)
    if not rnd.flats:
        raise AggregationError(f"{rule} needs at least one update")
    outs = [np.empty(theta.size, dtype=np.float32) for theta in rnd.thetas]
    plan = make_plan([theta.size for theta in rnd.thetas], n_threads)
    run_plan(plan, partial(_coordinate_part, rnd, kernel, eta, outs))
    logger.debug("%s of %d updates", rule, len(rnd.flats))
    return RobustResult(_finish(rnd, outs), selected=tuple(rnd.participants))


def coordinate_median(
    base: Mapping[str, np.ndarray],
    updates: Sequence[RobustUpdate],
    *,
    server_lr: float = 1.0,
    threads: int | None = None,
) -> RobustResult:
    """``theta + eta * median_k(delta_k)``, per element, exactly as the module docstring states.

    Parameters
    ----------
    base:
        The round's base parameters ``theta`` (float32 arrays by name).
    updates:
        ``(participant, n_k, delta)`` triples, in any order; the deltas screened finite.
    server_lr:
        The server learning rate ``eta``.
    threads:
        Threads sharing the elements (default: the CPUs, at most 4); it changes no bit.

    Raises
    ------
    AggregationError
        If there is no update, an update's arrays differ from the base in names, shapes or
        dtype, a participant repeats, a sample count is not a positive int, or the result is
        not finite.
    """
    return _coordinate(base, updates, _median_kernel, server_lr, threads, "median")


def _trim_count(trim: float, k: int) -> int:
    if not (isinstance(trim, (int, float)) and not isinstance(trim, bool) and 0.0 <= trim < 0.5):
        raise AggregationError(f"trim fraction must be a number in [0, 0.5), got {trim!r}")
    return math.floor(float(trim) * k)  # as Flower's int(proportiontocut * nobs)


def trimmed_mean(
    base: Mapping[str, np.ndarray],
    updates: Sequence[RobustUpdate],
    *,
    trim: float,
    server_lr: float = 1.0,
    threads: int | None = None,
) -> RobustResult:
    """``theta + eta * trimmed mean``: per element, ``floor(trim * K)`` values cut at each end.

    The kept values are summed in ascending order, one correctly rounded float64 addition
    at a time: ``np.sum``/``np.mean`` would sum pairwise in an order that depends on the
    array's layout and the SIMD width, and a verifier must reproduce every bit.

    Parameters
    ----------
    trim:
        The fraction cut at each end, in ``[0, 0.5)``.

    Other parameters, and the errors, are those of :func:`coordinate_median`.
    """
    cut = _trim_count(trim, len(updates))
    return _coordinate(base, updates, partial(_trimmed_kernel, cut), server_lr, threads, "trimmed mean")


# --------------------------------------------------------------------------- FedAvg arithmetic


def _fedavg_part(
    rnd: _Round, chosen: list[tuple[np.float64, list[np.ndarray]]], outs: list[np.ndarray], spans: Spans
) -> None:
    acc = np.empty(_CHUNK, dtype=np.float64)
    tmp = np.empty(_CHUNK, dtype=np.float64)
    for index, start, stop in spans:
        theta, out = rnd.thetas[index], outs[index]
        for lo in range(start, stop, _CHUNK):
            hi = min(lo + _CHUNK, stop)
            a, t = acc[: hi - lo], tmp[: hi - lo]
            np.copyto(a, theta[lo:hi])  # exact
            for c_k, flats in chosen:
                np.copyto(t, flats[index][lo:hi])  # exact
                np.multiply(t, c_k, out=t)
                np.add(a, t, out=a)
            np.copyto(out[lo:hi], a)  # float64 -> float32, rounding to nearest even


def _fedavg(rnd: _Round, chosen: Sequence[int], eta: float, n_threads: int) -> dict[str, np.ndarray]:
    """FedAvg (``fedavg_stream``'s arithmetic) over the updates at indices ``chosen`` (ascending)."""
    total = sum(rnd.counts[i] for i in chosen)
    weighted = [(np.float64((eta * float(rnd.counts[i])) / float(total)), rnd.flats[i]) for i in chosen]
    outs = [np.empty(theta.size, dtype=np.float32) for theta in rnd.thetas]
    plan = make_plan([theta.size for theta in rnd.thetas], n_threads)
    run_plan(plan, partial(_fedavg_part, rnd, weighted, outs))
    return _finish(rnd, outs)


def fedavg(
    base: Mapping[str, np.ndarray],
    updates: Sequence[RobustUpdate],
    *,
    server_lr: float = 1.0,
    threads: int | None = None,
) -> RobustResult:
    """FedAvg over every update, with :func:`fedchain.fl._aggregate.fedavg_stream`'s arithmetic.

    Here so that clipping can sit in front of FedAvg too; with no update the result is ``theta``.
    """
    eta = float(_eta(server_lr))
    n_threads = _threads(threads)
    rnd = _prepare(base, updates)
    params = _fedavg(rnd, range(len(rnd.flats)), eta, n_threads)
    return RobustResult(params, selected=tuple(rnd.participants))


# --------------------------------------------------------------------------- Krum


def _exact_float(value: int, exponent: int) -> float:
    """``value * 2**exponent`` rounded once to float64."""
    scaled = Fraction(value) * (Fraction(2) ** exponent)
    return float(scaled)  # Fraction -> float divides ints: correctly rounded


def krum_scores(updates: Sequence[RobustUpdate], *, f: int, threads: int | None = None) -> list[tuple[str, int, float]]:
    """Krum's scores, ``(participant, exact score numerator, score as float64)``, in participant order.

    The exact score is ``numerator * 2**e`` for one ``e`` shared by the round, so numerators
    compare exactly. See the module docstring for the definition.
    """
    if not isinstance(f, int) or isinstance(f, bool) or f < 0:
        raise AggregationError(f"Krum's f must be a non-negative int, got {f!r}")
    if not updates:
        raise AggregationError("Krum needs at least one update")
    rnd = _prepare(dict(updates[0][2]), updates)  # the first update stands in for the base's names and shapes
    return _scores(rnd, f, _threads(threads))


def _scores(rnd: _Round, f: int, n_threads: int) -> list[tuple[str, int, float]]:
    k = len(rnd.flats)
    plan = make_plan([theta.size for theta in rnd.thetas], n_threads)
    gram, exponent = exact_gram(rnd.flats, plan)
    diagonal = gram.diagonal()
    distances = diagonal[:, None] + diagonal[None, :] - 2 * gram  # exact: Python ints
    closest = max(1, min(k - 1, k - f - 2))
    scores = []
    for i in range(k):
        row = sorted(int(distances[i, j]) for j in range(k) if j != i)
        score = sum(row[:closest])
        scores.append((rnd.participants[i], score, _exact_float(score, exponent)))
    return scores


def multi_krum(
    base: Mapping[str, np.ndarray],
    updates: Sequence[RobustUpdate],
    *,
    f: int,
    m: int,
    server_lr: float = 1.0,
    threads: int | None = None,
) -> RobustResult:
    """Multi-Krum: FedAvg over the ``m`` updates of lowest Krum score (ties: lower participant first).

    Parameters
    ----------
    f:
        The number of Byzantine participants assumed; each score sums the distances to the
        ``max(1, min(K - 1, K - f - 2))`` closest other updates.
    m:
        How many updates to select (at most K are).

    Other parameters, and the errors, are those of :func:`coordinate_median`; a non-finite
    value in an update is an :class:`AggregationError` too.
    """
    if not isinstance(f, int) or isinstance(f, bool) or f < 0:
        raise AggregationError(f"Krum's f must be a non-negative int, got {f!r}")
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise AggregationError(f"Multi-Krum's m must be a positive int, got {m!r}")
    eta = float(_eta(server_lr))
    n_threads = _threads(threads)
    rnd = _prepare(base, updates)
    if not rnd.flats:
        raise AggregationError("Krum needs at least one update")
    scores = _scores(rnd, f, n_threads)
    ranking = sorted(range(len(scores)), key=lambda i: (scores[i][1], rnd.participants[i].lower()))
    chosen = sorted(ranking[:m])
    params = _fedavg(rnd, chosen, eta, n_threads)
    keep = set(chosen)
    logger.debug("Krum selected %s of %d updates", [rnd.participants[i] for i in chosen], len(scores))
    return RobustResult(
        params,
        selected=tuple(rnd.participants[i] for i in chosen),
        discarded=tuple(p for i, p in enumerate(rnd.participants) if i not in keep),
        scores=tuple((p, value) for p, _, value in scores),
    )


def krum(
    base: Mapping[str, np.ndarray],
    updates: Sequence[RobustUpdate],
    *,
    f: int,
    server_lr: float = 1.0,
    threads: int | None = None,
) -> RobustResult:
    """Krum: ``theta + eta * delta`` of the one update of lowest score (Multi-Krum with ``m = 1``)."""
    return multi_krum(base, updates, f=f, m=1, server_lr=server_lr, threads=threads)


# --------------------------------------------------------------------------- clipping


def _scale_part(source: list[np.ndarray], scale: np.float64, outs: list[np.ndarray], spans: Spans) -> None:
    tmp = np.empty(_CHUNK, dtype=np.float64)
    for index, start, stop in spans:
        for lo in range(start, stop, _CHUNK):
            hi = min(lo + _CHUNK, stop)
            t = tmp[: hi - lo]
            np.copyto(t, source[index][lo:hi])  # exact
            np.multiply(t, scale, out=t)
            np.copyto(outs[index][lo:hi], t)  # rounding to nearest even


def clip_updates(
    updates: Sequence[RobustUpdate], max_norm: float, *, threads: int | None = None
) -> tuple[list[RobustUpdate], tuple[str, ...]]:
    """Scale every update whose l2 norm exceeds ``max_norm`` down to it (see the module docstring).

    Returns
    -------
    tuple[list[RobustUpdate], tuple[str, ...]]
        The updates (unclipped ones as given, clipped ones as new arrays) in the input's
        order, and the clipped participants in participant order.

    Raises
    ------
    AggregationError
        If ``max_norm`` is not a positive finite number or an update holds a non-float32 array.
    """
    if not (isinstance(max_norm, (int, float)) and not isinstance(max_norm, bool) and 0 < max_norm < math.inf):
        raise AggregationError(f"clipping norm must be a positive finite number, got {max_norm!r}")
    n_threads = _threads(threads)
    result: list[RobustUpdate] = []
    clipped: list[str] = []
    for participant, n_k, delta in updates:
        names = sorted(delta)
        arrays = [_float32(f"update from {participant}", name, delta[name]) for name in names]
        norm = math.sqrt(sum_of_squares(arrays))
        if not norm > max_norm:
            result.append((participant, n_k, delta))
            continue
        scale = np.float64(float(max_norm) / norm)
        flats = [a.reshape(-1) for a in arrays]
        outs = [np.empty(a.size, dtype=np.float32) for a in arrays]
        run_plan(make_plan([a.size for a in arrays], n_threads), partial(_scale_part, flats, scale, outs))
        result.append((participant, n_k, {n: o.reshape(a.shape) for n, o, a in zip(names, outs, arrays, strict=True)}))
        clipped.append(participant)
        logger.debug("clipped the update from %s (norm %r > %r)", participant, norm, max_norm)
    return result, tuple(sorted(clipped, key=str.lower))


# --------------------------------------------------------------------------- registry

_PARAMS: dict[str, tuple[str, ...]] = {
    "fedavg": ("clip", "server_lr"),
    "median": ("clip", "server_lr"),
    "trimmed-mean": ("clip", "server_lr", "trim"),
    "krum": ("clip", "f", "server_lr"),
    "multi-krum": ("clip", "f", "m", "server_lr"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {"trimmed-mean": ("trim",), "krum": ("f",), "multi-krum": ("f", "m")}


@dataclass(frozen=True)
class RobustRule:
    """A rule with its parameters, as the manifest names it.

    Attributes
    ----------
    rule:
        One of :data:`RULES`.
    server_lr:
        The server learning rate ``eta``.
    clip:
        The server-side clipping norm in front of the rule, or None for none.
    trim:
        The trimmed mean's cut fraction.
    f, m:
        Krum's assumed Byzantine count; Multi-Krum's selection size.
    threads:
        Threads per call (default: the CPUs, at most 4); it changes no bit and is no part of the name.
    """

    rule: str
    server_lr: float = 1.0
    clip: float | None = None
    trim: float | None = None
    f: int | None = None
    m: int | None = None
    threads: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ConfigError("aggregation.rule", f"unknown rule {self.rule!r}; known: {', '.join(sorted(RULES))}")
        allowed = _PARAMS[self.rule]
        for key in ("trim", "f", "m"):
            given = getattr(self, key) is not None
            if given and key not in allowed:
                raise ConfigError(f"aggregation.{key}", f"not a parameter of {self.rule}")
            if not given and key in _REQUIRED.get(self.rule, ()):
                raise ConfigError(f"aggregation.{key}", f"{self.rule} needs it")

        def number(value: object) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if not (number(self.server_lr) and self.server_lr > 0):
            raise ConfigError("aggregation.server_lr", f"must be a positive finite number, got {self.server_lr!r}")
        if self.clip is not None and not (number(self.clip) and self.clip > 0):
            raise ConfigError("aggregation.clip", f"must be a positive finite number, got {self.clip!r}")
        if self.trim is not None and not (number(self.trim) and 0 <= self.trim < 0.5):
            raise ConfigError("aggregation.trim", f"must be a number in [0, 0.5), got {self.trim!r}")
        for key, low in (("f", 0), ("m", 1)):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
                raise ConfigError(f"aggregation.{key}", f"must be an int >= {low}, got {value!r}")

    def params(self) -> dict[str, float | int]:
        """The rule's parameters that are set, by name (``clip`` only when clipping)."""
        values: dict[str, float | int | None] = {
            "clip": None if self.clip is None else float(self.clip),
            "server_lr": float(self.server_lr),
            "trim": None if self.trim is None else float(self.trim),
            "f": self.f,
            "m": self.m,
        }
        return {key: value for key, value in sorted(values.items()) if value is not None}

    @property
    def name(self) -> str:
        """``<rule>:<key>=<value>,...`` with the keys sorted, e.g. ``median:clip=10.0,server_lr=1.0``.

        Floats are Python's shortest round-tripping ``repr``; at most 200 characters of
        ``[A-Za-z0-9_.:=,+-]``, fit for a blob header. For ``fedavg`` without clipping it is
        :class:`fedchain.fl.strategy.FedAvg`'s name.
        """
        return f"{self.rule}:" + ",".join(f"{key}={value!r}" for key, value in self.params().items())

    def to_json(self) -> dict[str, Any]:
        """The manifest's entry: ``{"rule": ..., "params": {...}}`` (JSON numbers)."""
        return {"rule": self.rule, "params": self.params()}

    def aggregate(self, base: Mapping[str, np.ndarray], updates: Sequence[RobustUpdate]) -> RobustResult:
        """Clip (if configured), then apply the rule, exactly as the module docstring states."""
        clipped: tuple[str, ...] = ()
        if self.clip is not None:
            updates, clipped = clip_updates(updates, self.clip, threads=self.threads)
        eta, threads = self.server_lr, self.threads
        if self.rule == "fedavg":
            result = fedavg(base, updates, server_lr=eta, threads=threads)
        elif self.rule == "median":
            result = coordinate_median(base, updates, server_lr=eta, threads=threads)
        elif self.rule == "trimmed-mean":
            assert self.trim is not None
            result = trimmed_mean(base, updates, trim=self.trim, server_lr=eta, threads=threads)
        else:
            assert self.f is not None
            m = 1 if self.rule == "krum" else self.m
            assert m is not None
            result = multi_krum(base, updates, f=self.f, m=m, server_lr=eta, threads=threads)
        return RobustResult(result.params, result.selected, result.discarded, clipped, result.scores)


def rule_from_config(name: str, params: Mapping[str, Any]) -> RobustRule:
    """The rule ``name`` with the manifest's ``params`` (unknown keys are an error).

    Raises
    ------
    ConfigError
        If the rule is unknown, a parameter is unknown, missing or out of range.
    """
    if name not in RULES:
        raise ConfigError("aggregation.rule", f"unknown rule {name!r}; known: {', '.join(sorted(RULES))}")
    for key in params:
        if key not in _PARAMS[name]:
            raise ConfigError(f"aggregation.{key}", f"not a parameter of {name}")
    return RobustRule(rule=name, **dict(params))


def rule_from_name(canonical: str) -> RobustRule:
    """The inverse of :attr:`RobustRule.name` (as read from a blob header).

    Raises
    ------
    ConfigError
        If ``canonical`` is not a rule's canonical name.
    """
    rule, sep, rest = canonical.partition(":")
    if not sep:
        raise ConfigError("aggregation.rule", f"not a canonical rule name: {canonical!r}")
    params: dict[str, float | int] = {}
    for item in rest.split(",") if rest else []:
        key, eq, text = item.partition("=")
        if not eq:
            raise ConfigError("aggregation.rule", f"not a canonical rule name: {canonical!r}")
        try:
            params[key] = int(text) if key in ("f", "m") else float(text)
        except ValueError as err:
            raise ConfigError(f"aggregation.{key}", f"not a number: {text!r}") from err
    result = rule_from_config(rule, params)
    if result.name != canonical:
        raise ConfigError("aggregation.rule", f"not canonical: {canonical!r} (canonical: {result.name!r})")
    return result


__all__ = [
    "RULES",
    "RobustResult",
    "RobustRule",
    "RobustUpdate",
    "clip_updates",
    "coordinate_median",
    "fedavg",
    "krum",
    "krum_scores",
    "multi_krum",
    "rule_from_config",
    "rule_from_name",
    "trimmed_mean",
]
