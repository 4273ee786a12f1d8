"""An update whose tensors differ from the manifest's schema is excluded with a reason naming the tensor.

A frozen tensor (one the task keeps out of the schema, e.g. LoRA's A or the pre-trained base) is
by definition not in the schema: an update carrying one is excluded like any unexpected tensor.
"""

from __future__ import annotations

import numpy as np
import pytest
from support.federation import crafted, finish, make, small_demo, small_manifest, submit, zeros

from fedchain.chain import EmbeddedChain
from fedchain.storage import LocalBlockStore


@pytest.mark.parametrize(
    ("change", "reason", "named"),
    [
        ("extra", "unexpected-tensor", "embedding.weight.lora_A"),
        ("missing", "missing-tensor", "fc.weight"),
        ("shape", "shape", "fc.bias"),
    ],
)
def test_a_tensor_outside_the_schema_is_excluded_naming_the_tensor(
    tmp_path, change: str, reason: str, named: str
) -> None:  # type: ignore[no-untyped-def]
    chain = EmbeddedChain()
    fed = make(chain, LocalBlockStore(tmp_path / "store"), small_demo(), small_manifest(min_updates=2))
    r = fed.coordinator.open_round()
    delta = zeros(fed.rules)
    if change == "extra":
        delta[named] = np.zeros((4, 8), dtype=np.float32)  # a "frozen" adapter half sent along
    elif change == "missing":
        del delta[named]
    else:
        delta[named] = np.zeros(delta[named].shape[0] + 1, dtype=np.float32)
    mallory = fed.attacker()
    submit(fed, mallory, r, crafted(fed, mallory, r, delta))
    for p in fed.participants:
        p.participate(r)
    report = finish(fed, r)
    [ex] = [e for e in report.verdict.excluded if e.participant == mallory.address]
    assert ex.reason == reason and named in ex.detail
    assert mallory.address not in report.verdict.included and len(report.verdict.included) == 3
    chain.close()
