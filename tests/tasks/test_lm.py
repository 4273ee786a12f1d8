"""The lm task on a tiny configuration: schema, frozen base, FFA-LoRA exactness, training, data, no hub."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedchain.errors import CodecError, DataError
from fedchain.tasks.lm import Corpus, LmBaseError, LmTask, export_corpus, load_corpus
from fedchain.tasks.lm._model import adapter_params, build_model, evaluate_model, lora_model

TINY: dict[str, object] = {
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 16,
    "n_positions": 48,
    "pretrain_steps": 100,
    "pretrain_batch": 8,
    "pretrain_lr": 1e-2,
    "lora_rank": 2,
    "lora_alpha": 4,
    "demo_train_records": 48,
    "demo_heldout_records": 16,
    "batch_size": 4,
    "lr": 1e-2,
    "epochs": 3,
}

# Run in a fresh interpreter: every socket refuses to connect, and the hub is told it is offline,
# so a download attempt anywhere fails the run instead of passing silently.
PROBE = """
import json, socket, sys
def refuse(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
from fedchain.tasks.lm import LmTask
task = LmTask(cache_dir=sys.argv[1], **json.loads(sys.argv[2]))
print(json.dumps({"frozen": dict(task.frozen()), "schema": task.schema().to_json()}))
"""


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> LmTask:
    return LmTask(cache_dir=tmp_path_factory.mktemp("lm-cache"), **TINY)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def corpus(task: LmTask) -> Corpus:
    return task.demo_split(3, 0).holdings[0].train


def _probe(cache: Path) -> dict[str, object]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(cache), json.dumps(TINY)], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_the_schema_holds_only_the_lora_b_matrices(task: LmTask) -> None:
    assert task.schema().shapes == {
        "transformer.h.0.attn.c_attn.lora_B": (48, 2),
        "transformer.h.0.attn.c_proj.lora_B": (16, 2),
        "transformer.h.0.mlp.c_fc.lora_B": (64, 2),
        "transformer.h.0.mlp.c_proj.lora_B": (16, 2),
    }


def test_init_is_zero_whatever_the_seed_so_the_genesis_model_is_the_base(task: LmTask, corpus: Corpus) -> None:
    a, b = task.init(0), task.init(7)
    assert all(v.dtype == np.float32 and not v.any() for v in a.values())
    assert {k: v.tobytes() for k, v in a.items()} == {k: v.tobytes() for k, v in b.items()}
    base = build_model(task.model_config, 1)
    with torch.no_grad():
        for name, param in base.named_parameters():
            param.copy_(torch.from_numpy(task.base()[name]))
    alone = evaluate_model(base, corpus, task.model_config.n_positions)
    assert task.evaluate(a, corpus) == pytest.approx(alone, rel=1e-6)


def test_a_fresh_process_with_no_network_pre_trains_the_same_base_and_adapters(tmp_path: Path, task: LmTask) -> None:
    fresh = _probe(tmp_path)
    assert fresh == {"frozen": dict(task.frozen()), "schema": task.schema().to_json()}
    (path,) = tmp_path.glob("*.safetensors")
    assert task.frozen()["base"] == "0x" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_cached_base_is_reused_and_a_tampered_one_is_refused(tmp_path: Path) -> None:
    digest = LmTask(cache_dir=tmp_path, **TINY).frozen()["base"]  # type: ignore[arg-type]
    assert LmTask(cache_dir=tmp_path, **TINY).frozen()["base"] == digest  # type: ignore[arg-type]
    with pytest.raises(LmBaseError, match="the federation expects 0x00"):
        LmTask(cache_dir=tmp_path, base_digest="0x" + "00" * 32, **TINY).frozen()  # type: ignore[arg-type]
    (path,) = tmp_path.glob("*.safetensors")
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(LmBaseError, match="recorded " + digest):
        LmTask(cache_dir=tmp_path, **TINY).frozen()  # type: ignore[arg-type]


def test_the_frozen_a_matrices_come_from_lora_seed_alone(task: LmTask) -> None:
    torch.manual_seed(123)  # the global generator must not matter
    a = task.lora_a()
    torch.manual_seed(456)
    again = adapter_params(lora_model(task.model_config, task.base(), task.lora), "lora_A")
    assert {k: v.tobytes() for k, v in a.items()} == {k: p.detach().numpy().tobytes() for k, p in again.items()}
    other = LmTask(cache_dir=task.cache_dir, lora_seed=1, **TINY).lora_a()  # type: ignore[arg-type]
    assert all(not np.array_equal(a[k], other[k]) for k in a)
    assert task.frozen()["lora_A"] != LmTask(cache_dir=task.cache_dir, lora_seed=1, **TINY).frozen()["lora_A"]  # type: ignore[arg-type]


def test_one_round_of_training_lowers_the_training_loss_and_is_reproducible(task: LmTask, corpus: Corpus) -> None:
    genesis = task.init(0)
    before = task.evaluate(genesis, corpus)["loss"]
    result = task.train(genesis, corpus, task.train_config(), seed=3)
    assert result.num_samples == len(corpus) == 48
    assert set(result.metrics) == {"loss", "perplexity"}
    after = task.evaluate(result.arrays, corpus)["loss"]
    assert after < before - 0.005, (before, after)  # tiny model: 3.145 -> 3.128 nats
    again = task.train(genesis, corpus, task.train_config(), seed=3)
    assert {k: v.tobytes() for k, v in result.arrays.items()} == {k: v.tobytes() for k, v in again.arrays.items()}


def test_averaging_the_b_matrices_averages_the_weight_updates_exactly(task: LmTask) -> None:
    split = task.demo_split(3, 0)
    genesis = task.init(0)
    results = [task.train(genesis, h.train, task.train_config(), seed=i) for i, h in enumerate(split.holdings)]
    weights = np.array([r.num_samples for r in results], dtype=np.float64) / sum(r.num_samples for r in results)
    scale = task.lora.alpha / task.lora.rank
    a = task.lora_a()
    for name in task.schema().names:
        a_name = name.replace("lora_B", "lora_A")
        mean_b = sum(w * r.arrays[name].astype(np.float64) for w, r in zip(weights, results, strict=True))
        updates = [scale * r.arrays[name].astype(np.float64) @ a[a_name].astype(np.float64) for r in results]
        mean_update = sum(w * u for w, u in zip(weights, updates, strict=True))
        np.testing.assert_allclose(scale * mean_b @ a[a_name].astype(np.float64), mean_update, rtol=1e-12, atol=1e-15)
        assert np.abs(mean_update).max() > 1e-4  # the updates are not trivially zero


def test_the_demo_has_three_hospitals_with_disjoint_text_and_a_pooled_held_out_set(task: LmTask) -> None:
    demo = task.demo(3, 0)
    assert [p.name for p in demo.participants] == ["st-mary", "northgate", "riverside"]
    texts = [set(p.data.texts) for p in demo.participants]
    assert [len(t) for t in texts] == [48, 48, 48]
    assert len(demo.test) == 48 and not set(demo.test.texts) & set().union(*texts)
    assert [p.name for p in task.demo(5, 0).participants][3:] == ["st-mary-2", "northgate-2"]
    with pytest.raises(DataError, match="1 to 10"):
        task.demo(11, 0)


def test_a_corpus_loads_from_lines_or_from_an_icd_shard(tmp_path: Path, task: LmTask, corpus: Corpus) -> None:
    export_corpus(corpus, tmp_path / "st-mary.txt")
    assert task.load_data(str(tmp_path / "st-mary.txt")).texts == corpus.texts
    shard = tmp_path / "shard.jsonl"
    shard.write_text('{"text": "Cholera, unspecified", "label": "x"}\n\n{"text": "Typhoid fever"}\n', encoding="utf-8")
    assert load_corpus(shard) == Corpus("shard", ("Cholera, unspecified", "Typhoid fever"))
    shard.write_text('{"label": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="shard.jsonl:1: expected an object"):
        load_corpus(shard)


def test_arrays_that_do_not_match_the_schema_are_refused(task: LmTask, corpus: Corpus) -> None:
    arrays = task.init(0)
    name = task.schema().names[0]
    arrays[name] = np.zeros((1, 1), dtype=np.float32)
    with pytest.raises(CodecError, match=f"{name}: shape"):
        task.evaluate(arrays, corpus)
