"""Node configs are validated on load, naming the key; keystores made by `fedchain keys new`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fedchain.cli import main
from fedchain.config import PASSWORD_ENV, load_node_config, load_signer
from fedchain.errors import ConfigError

GOOD = """
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
min_updates = 2
round_seconds = 60
server_lr = 0.5
max_update_norm = 50.0

[federation.train]
epochs = 2

[task]
app = "icd"

[task.settings]
num_buckets = 512
dim = 8

[participant]
name = "st-mary"
data = "data/st-mary.jsonl"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_valid_participant_config_loads_with_paths_resolved_beside_the_file(tmp_path: Path) -> None:
    config = load_node_config(_write(tmp_path, GOOD), role="participant")
    assert config.federation.rounds == 3
    assert config.federation.rules == {
        "rounds.min_updates": 2,
        "rounds.round_seconds": 60,
        "aggregation.server_lr": 0.5,
        "max_update_norm": 50.0,
        "train.epochs": 2,
    }
    assert config.task.app == "icd" and config.task.settings == {"num_buckets": 512, "dim": 8}
    assert config.keystore == tmp_path / "keys" / "node.json"
    assert config.store == str(tmp_path / "shared" / "store")
    assert config.participant is not None and config.participant.data == tmp_path / "data" / "st-mary.jsonl"


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (("rounds = 3", "rounds = 0"), "federation.rounds"),
        (("rounds = 3\n", ""), "federation.rounds"),
        (("round_seconds = 60", 'round_seconds = "soon"'), "federation.round_seconds"),
        (("round_seconds = 60", "round_secs = 60"), "federation.round_secs"),
        (('rpc = "http://127.0.0.1:8545"', 'rpc = "127.0.0.1:8545"'), "chain.rpc"),
        (('address_file = "shared/ledger.address"', 'address = "0x1234"'), "ledger.address"),
        (("server_lr = 0.5", "server_lr = -0.5"), "federation.server_lr"),
        (("max_update_norm = 50.0", 'max_update_norm = "big"'), "federation.max_update_norm"),
        (("epochs = 2", "epochs = true"), "federation.train.epochs"),
        (('app = "icd"', "app = 3"), "task.app"),
        (('app = "icd"', 'application = "icd"'), "task.application"),
        (('data = "data/st-mary.jsonl"', ""), "participant.data"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(tmp_path: Path, edit: tuple[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_node_config(_write(tmp_path, GOOD.replace(*edit)), role="participant")
    assert err.value.key == key


def test_a_coordinator_config_lists_participants_and_refuses_a_bad_address(tmp_path: Path) -> None:
    base = GOOD.split("[participant]")[0]
    ok = (
        base
        + '[[participants]]\naddress = "0x'
        + "11" * 20
        + '"\nmax_samples = 500\n[[participants]]\naddress = "0x'
        + "22" * 20
        + '"\nmax_samples = 500\n'
    )
    config = load_node_config(_write(tmp_path, ok), role="coordinator")
    assert [p.max_samples for p in config.participants] == [500, 500]
    with pytest.raises(ConfigError) as err:
        load_node_config(_write(tmp_path, ok.replace("min_updates = 2", "min_updates = 3")), role="coordinator")
    assert err.value.key == "federation.min_updates"  # a quorum above the participants listed
    with pytest.raises(ConfigError) as err:
        load_node_config(_write(tmp_path, ok.replace("22" * 20, "zz" * 20)), role="coordinator")
    assert err.value.key == "participants[1].address"


def test_the_coordinator_deploys_a_manifest_of_its_task_and_federation_rules(tmp_path: Path) -> None:
    from fedchain.cli._coordinator import manifest_of

    config = load_node_config(_write(tmp_path, GOOD.split("[participant]")[0]), role="coordinator")
    task, manifest = manifest_of(config)
    rules = manifest.flat()
    assert rules["model"] == '{"dim":8,"ngram":2,"num_buckets":512,"num_classes":22}'
    assert (rules["rounds.min_updates"], rules["rounds.round_seconds"]) == (2, 60)
    assert (rules["aggregation.rule"], rules["aggregation.server_lr"]) == ("fedavg", 0.5)
    assert (rules["max_update_norm"], rules["train.epochs"], rules["train.lr"]) == (50.0, 2, 8.0)
    assert manifest.schema == task.schema()


def test_a_config_error_exits_2_with_the_key_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, GOOD.replace("rounds = 3", "rounds = -1"))
    assert main(["participant", "--config", str(path)]) == 2
    assert "federation.rounds" in capsys.readouterr().err


def test_keys_new_writes_a_private_keystore_that_decrypts_to_the_printed_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    out = tmp_path / "keys" / "st-mary.json"
    assert main(["keys", "new", "--out", str(out)]) == 0
    address = capsys.readouterr().out.strip()
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert "s3cret" not in out.read_text(encoding="utf-8")
    assert load_signer(out, name="st-mary", prompt=False).address == address
    assert main(["keys", "address", str(out)]) == 0
    assert capsys.readouterr().out.strip() == address
    assert main(["keys", "new", "--out", str(out)]) == 2  # never overwritten


def test_a_keystore_without_a_password_and_no_terminal_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigError) as err:
        load_signer(tmp_path / "k.json", name="x", prompt=False)
    assert err.value.key == PASSWORD_ENV
