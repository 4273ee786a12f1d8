"""Tasks: the model-specific code of a federation (init, train, evaluate, data loading).

The only fedchain package whose modules import torch; see :mod:`fedchain.tasks.api`.
"""
