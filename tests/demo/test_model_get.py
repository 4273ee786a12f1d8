"""`fedchain model get`: a round's verified aggregate as a safetensors file, the digest on chain."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors.numpy import load_file

from fedchain.cli import main


def test_model_get_writes_the_verified_aggregate_whose_sha256_is_the_digest_on_chain(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    workdir = tmp_path / "demo"
    assert main(["demo", "--task", "digits", "--rounds", "2", "--workdir", str(workdir)]) == 0
    capsys.readouterr()
    assert main(["audit", "--workdir", str(workdir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rounds, schema = report["rounds"], report["manifest"]["schema"]
    for args, r in (([], 1), (["--round", "0"], 0)):
        out = tmp_path / f"model-{r}.safetensors"
        assert main(["model", "get", "--workdir", str(workdir), "-o", str(out), *args]) == 0
        assert "0x" + hashlib.sha256(out.read_bytes()).hexdigest() == rounds[r]["aggregate"]["hash"]
        tensors = load_file(str(out))  # loads in the safetensors library, outside fedchain
        assert {n: list(a.shape) for n, a in tensors.items()} == {t["name"]: t["shape"] for t in schema}
    assert main(["model", "get", "--workdir", str(workdir), "-o", str(tmp_path / "x"), "--round", "7"]) == 2
    assert "round 7 does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
