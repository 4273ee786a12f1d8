"""``[federation.privacy]`` in a node's config: validated on load naming the key, deployed as the manifest's ``privacy``."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedchain.cli._coordinator import manifest_of
from fedchain.config import load_node_config
from fedchain.errors import ConfigError
from fedchain.protocol import check_against

COMMON = """
[chain]
rpc = "http://127.0.0.1:8545"
dev = true

[ledger]
address_file = "shared/ledger.address"

[store]
location = "shared/store"

[key]
keystore = "keys/node.json"

[federation]
rounds = 3
round_seconds = 60

[federation.privacy]
mode = "masked"
frac_bits = 24
clip = 10
min_survivors = 2
max_samples = 5000
max_participants = 8
phase_seconds = 5

[federation.privacy.dp]
epsilon_budget = 8
delta = 1e-5

[task]
app = "icd"

[task.settings]
num_buckets = 512
dim = 8
"""
PARTICIPANTS = "".join(f'\n[[participants]]\naddress = "0x{c * 40}"\nmax_samples = 500\n' for c in "123")


#: What ``mode = "masked"`` alone deploys (the private demo's settings).
DEMO_PRIVACY = {
    "mode": "masked",
    "frac_bits": 32,
    "clip": 100.0,
    "min_survivors": 2,
    "max_samples": 1_000_000,
    "max_participants": 16,
    "phase_seconds": 60,
}


def _with_privacy(table: str) -> str:
    """:data:`COMMON` with ``table`` in place of its ``[federation.privacy]`` tables."""
    return COMMON.split("[federation.privacy]")[0] + table + "\n[task]" + COMMON.split("[task]")[1]


def _load(tmp_path: Path, text: str, role: str = "coordinator") -> object:
    path = tmp_path / f"{role}.toml"
    path.write_text(text, encoding="utf-8")
    return load_node_config(path, role=role)


def test_a_masked_privacy_table_becomes_the_manifests_privacy_and_a_quorum_within_the_survivors(
    tmp_path: Path,
) -> None:
    config = _load(tmp_path, COMMON + PARTICIPANTS)
    _, manifest = manifest_of(config)
    assert manifest.privacy == {
        "mode": "masked",
        "frac_bits": 24,
        "clip": 10.0,
        "min_survivors": 2,
        "max_samples": 5000,
        "max_participants": 8,
        "phase_seconds": 5,
        "dp": {"epsilon_budget": 8.0, "delta": 1e-5},
    }
    assert manifest.private and manifest.min_updates == 2  # the default quorum (3 listed) capped by min_survivors
    # A participant with the same table agrees with the manifest; one with another phase length is refused by name.
    same = _load(tmp_path, COMMON + '\n[participant]\ndata = "st-mary.jsonl"\n', role="participant")
    check_against(manifest, same.federation.rules, source="participant.toml")  # type: ignore[attr-defined]
    other = _load(
        tmp_path,
        COMMON.replace("phase_seconds = 5", "phase_seconds = 6") + '\n[participant]\ndata = "st-mary.jsonl"\n',
        role="participant",
    )
    with pytest.raises(ConfigError) as err:
        check_against(manifest, other.federation.rules, source="participant.toml")  # type: ignore[attr-defined]
    assert err.value.key == "privacy.phase_seconds"


def test_mode_masked_alone_deploys_the_private_demos_settings(tmp_path: Path) -> None:
    text = COMMON.split("frac_bits")[0] + '\n[task]\napp = "icd"\n[task.settings]\nnum_buckets = 512\ndim = 8\n'
    _, manifest = manifest_of(_load(tmp_path, text + PARTICIPANTS))
    assert manifest.privacy == DEMO_PRIVACY


def test_without_a_privacy_table_the_rounds_are_plain(tmp_path: Path) -> None:
    text = _with_privacy("")
    config = _load(tmp_path, text + PARTICIPANTS)
    assert config.federation.privacy is None  # type: ignore[attr-defined]
    _, manifest = manifest_of(config)
    assert manifest.privacy == {"mode": "none"} and not manifest.private and manifest.min_updates == 3


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (("phase_seconds = 5", "phase_secs = 5"), "federation.privacy.phase_secs"),
        (('mode = "masked"', 'mode = "secret"'), "federation.privacy.mode"),
        (('mode = "masked"\n', ""), "federation.privacy.mode"),
        (('mode = "masked"', 'mode = "none"'), "federation.privacy.clip"),  # masked-only fields in plain rounds
        (("clip = 10", 'clip = "ten"'), "federation.privacy.clip"),
        (("clip = 10", "clip = -1.0"), "federation.privacy.clip"),
        (("frac_bits = 24", "frac_bits = 61"), "federation.privacy"),  # MaskingParams' range
        (("frac_bits = 24", "frac_bits = 1.5"), "federation.privacy.frac_bits"),
        (("min_survivors = 2", "min_survivors = 1"), "federation.privacy.min_survivors"),
        (("min_survivors = 2", "min_survivors = 9"), "federation.privacy.min_survivors"),  # above max_participants
        (("max_samples = 5000", "max_samples = 100000000000000"), "federation.privacy"),  # the sums could overflow
        (("max_samples = 5000", "max_samples = 400"), "participants[0].max_samples"),
        (("max_participants = 8", "max_participants = 2"), "federation.privacy.max_participants"),  # 3 listed
        (("phase_seconds = 5", "phase_seconds = 0"), "federation.privacy.phase_seconds"),
        (("phase_seconds = 5", "phase_seconds = 5\nshare_threshold = 1"), "federation.privacy.share_threshold"),
        (("delta = 1e-5", "delta = 1.5"), "federation.privacy.dp.delta"),
        (("delta = 1e-5", "delta = 1e-5\nepsilon = 3.0"), "federation.privacy.dp.epsilon"),
        (("epsilon_budget = 8\n", ""), "federation.privacy.dp.epsilon_budget"),
        (("round_seconds = 60", "round_seconds = 60\nmin_updates = 3"), "federation.min_updates"),
        (("round_seconds = 60", 'round_seconds = 60\nrule = "median"'), "federation.rule"),
        (("[federation.privacy.dp]", "[federation.privacy.noise]"), "federation.privacy.noise"),
    ],
)
def test_a_bad_privacy_setting_is_refused_naming_its_key(tmp_path: Path, edit: tuple[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, COMMON.replace(*edit) + PARTICIPANTS)
    assert err.value.key == key


def test_the_starters_commented_privacy_table_uncommented_is_a_valid_one(tmp_path: Path) -> None:
    from fedchain.tasks._starter import _TOML

    block = _TOML.split("# [federation.privacy]")[1]
    lines = ["[federation.privacy]"] + [
        line.removeprefix("# ").split("  #")[0].rstrip() for line in block.splitlines() if line.startswith("# ")
    ]
    _, manifest = manifest_of(_load(tmp_path, _with_privacy("\n".join(lines)) + PARTICIPANTS))
    assert manifest.privacy == {**DEMO_PRIVACY, "dp": {"epsilon_budget": 8.0, "delta": 1e-5}}


def test_the_readmes_privacy_table_is_a_valid_one(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    [block] = [b.split("```")[0] for b in readme.split("```toml\n") if b.startswith("[federation.privacy]")]
    _, manifest = manifest_of(_load(tmp_path, _with_privacy(block) + PARTICIPANTS))
    assert manifest.privacy == {**DEMO_PRIVACY, "max_samples": 100_000}


def test_fedchain_deploy_private_deploys_a_masked_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from fedchain.chain import Signer
    from fedchain.cli import main
    from fedchain.protocol import Manifest
    from fedchain.protocol.privacy import default_masked
    from fedchain.storage import LocalBlockStore

    monkeypatch.setenv("FEDCHAIN_PRIVATE_KEY", "0x" + Signer.create()._account.key.hex())
    argv = [
        "deploy",
        "--rpc",
        "embedded",
        "--store",
        str(tmp_path / "store"),
        "--json",
        "--fund",
        "--set",
        "num_buckets=512",
    ]
    assert main([*argv, "--private"]) == 0
    out = json.loads(capsys.readouterr().out)
    manifest = Manifest.from_bytes(LocalBlockStore(tmp_path / "store").get(out["manifest_cid"]))
    assert manifest.privacy == default_masked(0) and manifest.private
    assert main([*argv, "--private", "--min-updates", "3"]) == 2  # a quorum above the minimum of 2 survivors
    assert capsys.readouterr().err == (
        "fedchain deploy: error: manifest.rounds.min_updates: 3 is above the masked rounds' minimum of survivors 2\n"
    )
