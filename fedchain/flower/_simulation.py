"""Flower's simulation engine with the ClientApps run in this process, one message at a time (no Ray).

flwr 1.42's ``run_simulation`` only offers its Ray backend, and Ray runs every ClientApp in
another process (and is not installed here). :func:`run_simulation_in_process` drives the same
engine (``InMemoryGrid``, the in-memory LinkState, the Simulation Runtime's ``run_api`` workers,
the ServerApp in its thread) with a backend that calls the ClientApp in the calling process, so
an embedded chain and store are shared by the ServerApp and every ClientApp. It uses flwr's
internal modules (pinned by the ``flower`` extra to 1.42.*).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from queue import Empty, Queue

from flwr.app import Context, Message, RecordDict
from flwr.app.user_config import UserConfig
from flwr.clientapp import ClientApp
from flwr.clientapp.client_app import ClientAppException
from flwr.common.constant import RUN_ID_NUM_BYTES, SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES
from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
from flwr.server.superlink.fleet.vce.backend.backend import Backend, BackendConfig
from flwr.server.superlink.fleet.vce.metrics import VceMetrics
from flwr.server.superlink.fleet.vce.vce_api import _register_node_info_stores, _register_nodes, run_api
from flwr.server.superlink.linkstate import InMemoryLinkState, LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
from flwr.serverapp import ServerApp
from flwr.simulation.run_simulation import run_serverapp_th
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager


class InProcessBackend(Backend):
    """A Simulation Runtime backend that runs the ClientApp in this process, one message at a time."""

    def __init__(self, backend_config: BackendConfig | None = None) -> None:
        super().__init__(backend_config or {})
        self._app_fn: Callable[[], ClientApp] | None = None

    def build(self, app_fn: Callable[[], ClientApp]) -> None:
        self._app_fn = app_fn

    @property
    def num_workers(self) -> int:
        return 1

    def is_worker_idle(self) -> bool:
        return True

    def terminate(self) -> None:
        self._app_fn = None

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        if self._app_fn is None:
            raise RuntimeError("the backend is not built")
        try:
            return self._app_fn()(message, context), context
        except Exception as err:
            raise ClientAppException(str(err)) from err


def run_simulation_in_process(
    server_app: ServerApp,
    client_app: ClientApp,
    num_supernodes: int,
    *,
    run_config: Mapping[str, bool | int | float | str] | None = None,
) -> Context:
    """Run ``server_app`` against ``num_supernodes`` simulated nodes of ``client_app``; return the server's context.

    ``run_config`` is what ``[tool.flwr.app.config]`` would give (the ServerApp's and every
    ClientApp's ``context.run_config``); each node's ``node_config`` has Flower's
    ``partition-id`` and ``num-partitions``.

    Raises
    ------
    BaseException
        Whatever the ServerApp raised.
    """
    config: UserConfig = dict(run_config or {})
    run_id = generate_rand_int_from_bytes(RUN_ID_NUM_BYTES)
    run = Run.create_empty(run_id=run_id)
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    run.override_config = dict(config)
    # the process-wide task identity Message() stamps on messages (what flwr's run_simulation sets too)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    state_factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    state = state_factory.state()
    assert isinstance(state, InMemoryLinkState)
    state.run_ids[run_id] = RunRecord(run=run)
    state.task_store[run.primary_task_id] = Task(task_id=run.primary_task_id, run_id=run_id)

    from flwr.superlink.grid import InMemoryGrid

    grid = InMemoryGrid(state_factory=state_factory)
    grid.set_run(run)
    context = Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config=dict(config))
    stop = threading.Event()
    errors: Queue[BaseException] = Queue()
    contexts: Queue[Context] = Queue()
    thread = run_serverapp_th(None, server_app, context, grid, "", stop, errors, False, contexts)
    try:
        nodes = _register_nodes(num_nodes=num_supernodes, state_factory=state_factory)
        stores = _register_node_info_stores(nodes_mapping=nodes, run=run, app_dir=None)
        for store in stores.values():  # flwr fuses the run config from an installed FAB; here it is given
            info = store.run_infos[run_id]
            info.initial_run_config = dict(config)
            info.context.run_config = dict(config)
        run_api(lambda: client_app, InProcessBackend, nodes, state_factory, stores, stop, VceMetrics())
    finally:
        stop.set()
        thread.join()
    try:
        raise errors.get_nowait()
    except Empty:
        pass
    return contexts.get_nowait()


__all__ = ["InProcessBackend", "run_simulation_in_process"]
