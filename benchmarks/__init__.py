"""fedchain's benchmarks: where fedchain stands against plain federated learning (``python -m benchmarks``).

Parts (each a module with ``run(quick) -> dict``, ``verdicts(result)`` and ``table(result)``):
``gas``, ``overhead``, ``aggregation``, ``audit``, ``scale``; and the optional ``robust``,
``masking`` and ``tasks`` (slow, not in ``--quick``). They time fedchain through the
backends and hooks it is given (a chain, a store, a task, ``Federation.run(on_step=...)``),
never by replacing names in its modules, and report every comparison as a ratio measured
side by side in the same run.
"""
