"""Trust nothing at an address: only the shipped ledger's code is a ledger; finding a past deployment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hexbytes import HexBytes

from fedchain.chain import Chain, Ledger, Signer
from fedchain.chain._revert import RevertDecoder
from fedchain.chain.compile import SETTINGS, _run_compiler, default_contracts_dir, find_compiler, load_artifact
from fedchain.chain.ledger import _send, code_mismatch, create_address
from fedchain.errors import UnknownContractError
from fedchain.hashing import sha256
from fedchain.types import Cid

GENESIS = sha256(b"genesis model")
MANIFEST = sha256(b'{"round":{"quorum":2}}')
FIXTURE = Path(__file__).parent / "fixtures" / "LookAlikeLedger.sol"


@pytest.fixture(scope="module")
def look_alike() -> dict[str, Any]:
    """The look-alike contract compiled with solc-js (abi, bytecode), against the ledger's own interface."""
    interface = (default_contracts_dir() / "IFederatedLedger.sol").read_text(encoding="utf-8")
    source = {
        "language": "Solidity",
        "sources": {
            "IFederatedLedger.sol": {"content": interface},
            "LookAlikeLedger.sol": {"content": FIXTURE.read_text(encoding="utf-8")},
        },
        "settings": json.loads(json.dumps(SETTINGS)),
    }
    output = _run_compiler(find_compiler(), source)
    contract = output["contracts"]["LookAlikeLedger.sol"]["LookAlikeLedger"]
    return {"abi": contract["abi"], "bytecode": "0x" + contract["evm"]["bytecode"]["object"]}


def deploy_look_alike(chain: Chain, signer: Signer, compiled: dict[str, Any]) -> str:
    factory = chain.w3.eth.contract(abi=compiled["abi"], bytecode=compiled["bytecode"])
    data = factory.constructor(bytes(GENESIS), "QmGenesis", bytes(MANIFEST), "QmManifest").data_in_transaction
    _, receipt = _send(chain, signer, "deploy look-alike", None, data, RevertDecoder(compiled["abi"]))
    return str(receipt["contractAddress"])


def test_a_look_alike_contract_is_unknown_code(chain: Chain, coordinator: Signer, look_alike: dict[str, Any]) -> None:
    address = deploy_look_alike(chain, coordinator, look_alike)
    # it does answer the ledger's views as a ledger would
    mimic = chain.w3.eth.contract(address=address, abi=load_artifact()["abi"])  # type: ignore[call-overload]
    assert bytes(mimic.functions.manifestHash().call()) == MANIFEST
    with pytest.raises(UnknownContractError, match="unknown contract code") as exc:
        Ledger(chain, address)
    assert exc.value.address == address
    assert address in str(exc.value)


def test_an_address_without_code_is_unknown_code(chain: Chain) -> None:
    nobody = Signer.create("nobody").address
    with pytest.raises(UnknownContractError, match="no code at the address"):
        Ledger(chain, nobody)


def test_ledgers_with_other_immutables_are_the_same_known_code(chain: Chain, coordinator: Signer) -> None:
    first, _ = Ledger.deploy(chain, coordinator, GENESIS, Cid("QmGenesis"), MANIFEST, Cid("QmManifest"))
    other, _ = Ledger.deploy(chain, coordinator, sha256(b"other"), Cid("QmOther"), sha256(b"m2"), Cid("QmM2"))
    first_code = bytes(chain.w3.eth.get_code(first.address))  # type: ignore[arg-type]
    other_code = bytes(chain.w3.eth.get_code(other.address))  # type: ignore[arg-type]
    assert first_code != other_code  # the immutables differ...
    assert code_mismatch(first_code) is None and code_mismatch(other_code) is None  # ...and are masked


def test_one_changed_byte_outside_the_immutables_is_unknown_code() -> None:
    artifact = load_artifact()
    code = bytearray(HexBytes(artifact["deployedBytecode"]))
    masked = {
        s + i
        for refs in artifact["immutableReferences"].values()
        for r in refs
        for s in [r["start"]]
        for i in range(r["length"])
    }
    index = next(i for i in range(len(code) // 2, len(code)) if i not in masked)
    code[index] ^= 0x01
    assert code_mismatch(bytes(code)) == f"runtime code differs from the shipped ledger's at byte {index}"
    assert (
        code_mismatch(bytes(code[:-1])) == f"{len(code) - 1} bytes of runtime code, the shipped ledger has {len(code)}"
    )


def test_create_addresses_are_those_the_chain_assigns(chain: Chain, coordinator: Signer) -> None:
    nonce = chain.w3.eth.get_transaction_count(coordinator.address)  # type: ignore[arg-type]
    ledger, _ = Ledger.deploy(chain, coordinator, GENESIS, Cid("QmGenesis"), MANIFEST, Cid("QmManifest"))
    assert create_address(coordinator.address, nonce) == ledger.address


def test_find_deployment_finds_the_ledger_with_that_genesis_and_manifest(
    chain: Chain, coordinator: Signer, look_alike: dict[str, Any]
) -> None:
    ledger, _ = Ledger.deploy(chain, coordinator, GENESIS, Cid("QmGenesis"), MANIFEST, Cid("QmManifest"))
    other, _ = Ledger.deploy(chain, coordinator, GENESIS, Cid("QmGenesis"), sha256(b"other"), Cid("QmOther"))
    ledger.register_participant(coordinator, Signer.create().address, 5)  # a later nonce that created nothing
    deploy_look_alike(chain, coordinator, look_alike)  # newest, same genesis and manifest, unknown code

    found = Ledger.find_deployment(chain, coordinator.address, genesis_hash=GENESIS, manifest_hash=MANIFEST)
    assert found is not None and found.address == ledger.address
    found = Ledger.find_deployment(chain, coordinator.address, genesis_hash=GENESIS, manifest_hash=sha256(b"other"))
    assert found is not None and found.address == other.address


def test_find_deployment_finds_nothing_for_another_manifest_or_coordinator(chain: Chain, coordinator: Signer) -> None:
    Ledger.deploy(chain, coordinator, GENESIS, Cid("QmGenesis"), MANIFEST, Cid("QmManifest"))
    assert Ledger.find_deployment(chain, coordinator.address, genesis_hash=GENESIS, manifest_hash=sha256(b"x")) is None
    assert Ledger.find_deployment(chain, coordinator.address, genesis_hash=sha256(b"x"), manifest_hash=MANIFEST) is None
    stranger = Signer.create("stranger")
    assert Ledger.find_deployment(chain, stranger.address, genesis_hash=GENESIS, manifest_hash=MANIFEST) is None
