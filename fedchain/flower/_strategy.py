"""The server side: a Flower strategy wrapped so that every round is opened, closed and finalized on the ledger.

``strategy = audited(FedAvg(fraction_train=0.5), context, task=DigitsTask())`` keeps the wrapped
strategy's sampling, train config and metric aggregation; the model is fedchain's: per round the
wrapper opens the round on the ledger's last aggregate, hands the wrapped strategy's messages a
``fedchain`` record (ledger, round), checks every reply against what its node recorded on chain
(dropping, with a log line naming the node, a reply whose arrays or record differ from the
chain's), closes the round, and aggregates exactly the recorded updates with the manifest's rule
(the wrapped strategy's averaging mapped by :func:`aggregation_for`) through
:class:`~fedchain.orchestrator.coordinator.Coordinator`, the very code ``fedchain coordinator``
runs, so ``fedchain audit`` recomputes the same bytes.

What the aggregate contains is decided by the chain, not by the replies: a dropped reply's node
contributes what it recorded (screened like any update, as every verifier screens it), never
what it sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Result,
    Strategy,
)

from fedchain.chain import Chain, Ledger, Signer
from fedchain.config import Workdir
from fedchain.errors import CodecError, ConfigError, VerificationError
from fedchain.fl.schema import Schema
from fedchain.flower._backends import backends
from fedchain.flower._config import settings_from_context
from fedchain.flower._records import (
    ENROLL_KEY,
    RECORD_KEY,
    config_int,
    config_str,
    reply_update,
    same_arrays,
    to_arrays,
    to_record,
)
from fedchain.hashing import parse_digest, sha256, short, to_hex
from fedchain.orchestrator.coordinator import Coordinator, RoundReport
from fedchain.orchestrator.federation import deploy, make_manifest
from fedchain.protocol import DEFAULT_MAX_BLOB_SIZE, DEFAULT_MAX_UPDATE_NORM, Manifest, load_model, load_rules
from fedchain.storage import BlobStore
from fedchain.tasks.api import Task
from fedchain.types import Address, Digest

logger = logging.getLogger(__name__)


def aggregation_for(strategy: Strategy) -> dict[str, Any]:
    """The manifest's aggregation rule for what ``strategy`` would have averaged with.

    FedAvg and FedProx -> ``fedavg``; FedMedian -> ``median``; FedTrimmedAvg(beta) -> ``trimmed-mean``
    with ``trim = beta``; Krum(num_malicious_nodes) -> ``krum`` with ``f``; MultiKrum -> ``multi-krum``
    with ``f`` and ``m = num_nodes_to_select``; FedAvgM without momentum -> ``fedavg`` with its
    server learning rate.

    Raises
    ------
    ConfigError
        For a strategy whose server step fedchain cannot reproduce (adaptive optimizers, momentum, ...).
    """
    if isinstance(strategy, FedMedian):
        return {"rule": "median", "server_lr": 1.0}
    if isinstance(strategy, FedTrimmedAvg):
        return {"rule": "trimmed-mean", "trim": float(strategy.beta), "server_lr": 1.0}
    if isinstance(strategy, Krum):
        return {"rule": "krum", "f": int(strategy.num_malicious_nodes), "server_lr": 1.0}
    if isinstance(strategy, MultiKrum):
        return {
            "rule": "multi-krum",
            "f": int(strategy.num_malicious_nodes),
            "m": int(strategy.num_nodes_to_select),
            "server_lr": 1.0,
        }
    if isinstance(strategy, FedAvgM):
        if strategy.server_momentum != 0.0:
            raise ConfigError("strategy", "FedAvgM with momentum has no fedchain rule; use server_momentum=0.0")
        return {"rule": "fedavg", "server_lr": float(strategy.server_learning_rate)}
    if type(strategy) in (FedAvg, FedProx):
        return {"rule": "fedavg", "server_lr": 1.0}
    raise ConfigError("strategy", f"{type(strategy).__name__} has no fedchain aggregation rule")


def _json_config(config: ConfigRecord | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (config or ConfigRecord()).items():
        if isinstance(value, bytes):
            raise ConfigError(f"train_config.{key}", "bytes cannot be recorded in the manifest")
        out[key] = list(value) if isinstance(value, list) else value
    return out


@dataclass(frozen=True)
class DroppedReply:
    """A train reply the server did not use, and why."""

    round_id: int
    node_id: int
    participant: str | None
    reason: str


@dataclass
class _Node:
    address: Address
    name: str


@dataclass
class AuditedStrategy(Strategy):
    """``strategy``, with every round recorded on a fedchain ledger (see the module docstring).

    Parameters
    ----------
    strategy:
        The Flower strategy to wrap (its sampling, config and metric aggregation are kept).
    chain, store, coordinator:
        Where the ledger lives, the blob store, and the coordinator's key.
    task:
        The task whose schema, model description and name go into the manifest (optional: without
        one the manifest is made from the initial arrays' names and shapes).
    max_samples:
        The sample cap each enrolling node is registered with.
    fund_nodes:
        Fund the coordinator and every enrolling node (development chains only: embedded, anvil).
    allowed:
        If given, only these addresses are registered (the federation's known members).
    workdir, rpc, store_location:
        If ``workdir`` is given, ``federation.json`` is written there once the ledger is deployed,
        recording ``rpc`` and ``store_location``, so ``fedchain audit --workdir`` finds everything.
    """

    strategy: Strategy
    chain: Chain
    store: BlobStore
    coordinator_key: Signer
    task: Task | None = None
    max_samples: int = 100_000
    fund_nodes: bool = False
    allowed: frozenset[str] | None = None
    min_updates: int = 1
    round_seconds: int = 600
    seed: int = 0
    max_update_norm: float = DEFAULT_MAX_UPDATE_NORM
    workdir: Path | None = None
    rpc: str | None = None
    store_location: str | None = None
    enroll_timeout: float = 600.0
    dropped: list[DroppedReply] = field(default_factory=list)
    reports: list[RoundReport] = field(default_factory=list)
    _coordinator: Coordinator | None = None
    _nodes: dict[int, _Node] = field(default_factory=dict)
    _order: list[str] = field(default_factory=list)
    _base_digest: Digest | None = None
    _base: dict[str, np.ndarray] = field(default_factory=dict)
    _round: int | None = None

    # -- the ledger

    @property
    def ledger(self) -> Ledger:
        """The ledger (after :meth:`start` deployed it)."""
        return self._require().ledger

    def _require(self) -> Coordinator:
        if self._coordinator is None:
            raise ConfigError("strategy", "the ledger is deployed by start(); call it first")
        return self._coordinator

    @property
    def names(self) -> dict[str, str]:
        """Names by address: the coordinator and every enrolled node."""
        return {self.coordinator_key.address: "coordinator", **{n.address: n.name for n in self._nodes.values()}}

    def _manifest(self, arrays: Mapping[str, np.ndarray], train: dict[str, Any]) -> Manifest:
        aggregation = aggregation_for(self.strategy)
        schema = Schema.from_shapes({k: v.shape for k, v in sorted(arrays.items())})
        if self.task is not None:
            if self.task.schema() != schema:
                raise ConfigError("initial_arrays", f"the arrays {schema.to_json()} are not the task's schema")
            return make_manifest(
                self.task,
                seed=self.seed,
                min_updates=self.min_updates,
                round_seconds=self.round_seconds,
                aggregation=aggregation,
                max_update_norm=self.max_update_norm,
                train=train,
            )
        return Manifest(
            task_name="flower-app",
            task_version="1",
            schema=schema,
            model="flower-app:1",
            aggregation=aggregation,
            max_update_norm=self.max_update_norm,
            max_blob_size=DEFAULT_MAX_BLOB_SIZE,
            min_updates=self.min_updates,
            round_seconds=self.round_seconds,
            train=train,
            seed=self.seed,
            privacy={"mode": "none"},
            frozen={},
        )

    def deploy(self, initial_arrays: ArrayRecord, train_config: ConfigRecord | None = None) -> Ledger:
        """Publish the manifest and the initial arrays as the genesis model, and deploy the ledger."""
        genesis = to_arrays(initial_arrays)
        self._order = list(initial_arrays.keys())
        if self.fund_nodes:
            self.chain.fund(self.coordinator_key.address)
        deployment = deploy(
            self.chain, self.coordinator_key, self.store, self._manifest(genesis, _json_config(train_config)), genesis
        )
        rules = load_rules(deployment.ledger, self.store)
        self._coordinator = Coordinator(deployment.ledger, self.coordinator_key, self.store, rules)
        self._base_digest, self._base = deployment.genesis_hash, genesis
        logger.info("ledger %s deployed (genesis %s)", deployment.ledger.address, short(deployment.genesis_hash))
        self._save_workdir()
        return deployment.ledger

    def _save_workdir(self) -> None:
        if self.workdir is None or self._coordinator is None:
            return
        if self.rpc is None or self.store_location is None:
            raise ConfigError("fedchain-workdir", "writing federation.json needs the chain and store locations")
        self.workdir.mkdir(parents=True, exist_ok=True)
        task = {"app": self.task.name, "settings": {}} if self.task is not None else {}
        store = self.store_location
        if not store.startswith(("http://", "https://", "/ip4/", "/dns")):
            try:  # a store inside the working directory is recorded relative to it, so the directory can move
                store = str(Path(store).resolve().relative_to(self.workdir.resolve()))
            except ValueError:
                pass
        Workdir(self.rpc, self.ledger.address, store, self.names, task).save(self.workdir)

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Any = None,
    ) -> Result:
        """Deploy the ledger with ``initial_arrays`` as its genesis, then run Flower's loop (see ``Strategy.start``)."""
        if self._coordinator is None:
            self.deploy(initial_arrays, train_config)
        return super().start(grid, initial_arrays, num_rounds, timeout, train_config, evaluate_config, evaluate_fn)

    # -- enrollment

    def _enroll(self, grid: Grid, node_ids: Iterable[int]) -> None:
        new = sorted({n for n in node_ids if n not in self._nodes})
        if not new:
            return
        c = self._require()
        ask = RecordDict({ENROLL_KEY: ConfigRecord({"ledger": c.ledger.address})})
        messages = [Message(content=ask, message_type=MessageType.TRAIN, dst_node_id=n) for n in new]
        for reply in grid.send_and_receive(messages, timeout=self.enroll_timeout):
            node = reply.metadata.src_node_id
            if reply.has_error() or ENROLL_KEY not in reply.content.config_records:
                why = reply.error.reason if reply.has_error() else "no enrollment record"
                logger.warning("node %d did not enroll (%s): is fedchain_mod in its ClientApp's mods?", node, why)
                continue
            answer = reply.content.config_records[ENROLL_KEY]
            address = Address(c.ledger.chain.w3.to_checksum_address(config_str(answer, "participant")))
            name = str(answer.get("name", f"node-{node}"))
            if self.allowed is not None and address.lower() not in self.allowed:
                logger.warning("node %d enrolled as %s, not a member of the federation: not registered", node, address)
                continue
            if self.fund_nodes:
                self.chain.fund(address)
            c.register(address, self.max_samples)
            self._nodes[node] = _Node(address, name)
            logger.info("node %d enrolled as %s (%s)", node, address, name)
        self._save_workdir()

    # -- rounds

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Open the ledger's next round on its last aggregate and tag the wrapped strategy's messages with it."""
        c = self._require()
        if not same_arrays(to_arrays(arrays), self._base):
            raise VerificationError(
                c.ledger.next_round(), "base model", expected=to_hex(self._base_digest or b""), actual="other arrays"
            )
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        self._enroll(grid, (m.metadata.dst_node_id for m in messages))
        r = c.open_round()
        self._round = r
        tag = ConfigRecord(
            {
                "ledger": c.ledger.address,
                "round": r,
                "arrays-key": str(getattr(self.strategy, "arrayrecord_key", "arrays")),
                "weight-key": str(getattr(self.strategy, "weighted_by_key", "num-examples")),
            }
        )
        for m in messages:
            m.content[RECORD_KEY] = tag
        return messages

    def _check(self, reply: Message, round_id: int) -> tuple[str | None, str | None]:
        """Why ``reply`` does not match the chain (``None`` if it does), and the participant it claims."""
        node = self._nodes.get(reply.metadata.src_node_id)
        if node is None:
            return "the node is not enrolled", None
        record = reply.content.config_records.get(RECORD_KEY)
        if record is None:
            return "the reply carries no fedchain record (is fedchain_mod in the ClientApp's mods?)", node.address
        try:
            if config_int(record, "round") != round_id:
                return f"the record is for round {config_int(record, 'round')}", node.address
            if config_str(record, "participant").lower() != node.address.lower():
                return f"the record names {config_str(record, 'participant')}, not the node's account", node.address
            claimed = parse_digest(config_str(record, "digest"))
            recorded = self.ledger.update_hash(round_id, node.address)
            if recorded is None:
                return "the ledger holds no update of this node for the round", node.address
            if recorded != claimed:
                return f"the record says {to_hex(claimed)}, the ledger {to_hex(recorded)}", node.address
            assert self._base_digest is not None
            update = reply_update(
                reply.content,
                self._base,
                self._require().rules.schema,
                round_id=round_id,
                base_hash=self._base_digest,
                sender=node.address,
                arrays_key=str(getattr(self.strategy, "arrayrecord_key", "arrays")),
                weight_key=str(getattr(self.strategy, "weighted_by_key", "num-examples")),
            )
        except (CodecError, ValueError) as err:
            return f"unreadable reply: {err}", node.address
        digest = sha256(update.blob)
        if digest != recorded:
            return f"its arrays encode to {to_hex(digest)}, not the recorded {to_hex(recorded)}", node.address
        return None, node.address

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check the replies against the chain, close the round, aggregate the recorded updates, finalize."""
        c = self._require()
        if self._round is None:
            raise VerificationError(c.ledger.next_round(), "state", expected="an open round", actual="none")
        r, self._round = self._round, None
        kept: list[Message] = []
        for reply in replies:
            if reply.has_error():
                kept.append(reply)  # the wrapped strategy logs it as a failure
                continue
            why, participant = self._check(reply, r)
            if why is not None:
                node = reply.metadata.src_node_id
                logger.warning("round %d: dropping the reply of node %d (%s): %s", r, node, participant, why)
                self.dropped.append(DroppedReply(r, node, participant, why))
                continue
            kept.append(reply)
        c.close(r)
        report = c.finish(r)
        self.reports.append(report)
        metrics = self._metrics(server_round, kept)
        if report.abandoned or report.aggregate_cid is None or report.aggregate_hash is None:
            return None, metrics
        params = load_model(
            self.store, c.rules, report.aggregate_cid, report.aggregate_hash, round_id=r, what="aggregate"
        )
        self._base_digest, self._base = report.aggregate_hash, params
        return to_record(params, self._order), metrics

    def _metrics(self, server_round: int, replies: list[Message]) -> MetricRecord | None:
        good = [m.content for m in replies if not m.has_error()]
        aggregate_fn = getattr(self.strategy, "train_metrics_aggr_fn", None)
        if aggregate_fn is None:
            return self.strategy.aggregate_train(server_round, replies)[1]
        if not good:
            return None
        metrics: MetricRecord = aggregate_fn(good, str(getattr(self.strategy, "weighted_by_key", "num-examples")))
        return metrics

    # -- evaluation: the wrapped strategy's own

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()
        logger.info("audited by fedchain: rule %s", aggregation_for(self.strategy))


def audited(strategy: Strategy, context: Context, *, task: Task | None = None, **options: Any) -> AuditedStrategy:
    """``strategy`` audited on the federation the ServerApp's context and environment name.

    The chain, store and working directory come from :func:`~fedchain.flower.settings_from_context`
    (the run config or ``FEDCHAIN_*``), the coordinator's key from ``FEDCHAIN_PRIVATE_KEY`` (or a
    demo seed). ``options`` are :class:`AuditedStrategy`'s other parameters.
    """
    settings = settings_from_context(context.node_config, context.run_config)
    chain, store = backends(settings)
    return AuditedStrategy(
        strategy,
        chain,
        store,
        settings.signer("coordinator"),
        task,
        workdir=Path(settings.workdir) if settings.workdir else None,
        rpc=settings.rpc,
        store_location=settings.store,
        **options,
    )


__all__ = ["AuditedStrategy", "DroppedReply", "aggregation_for", "audited"]
