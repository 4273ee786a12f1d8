#!/usr/bin/env python3
"""Gas of private rounds on anvil: registerMaskingKey, submitUpdate, revealShares, a round of 3 and of 10 (no dropouts).

Every member reveals, in one revealShares, its share of every member's self seed (K words).

Usage: PYTHONPATH=. python scripts/gas_private.py
"""

import statistics

from fedchain.chain import Ledger, Signer, connect
from fedchain.chain.anvil import AnvilNode
from fedchain.hashing import sha256
from fedchain.types import Cid

with AnvilNode() as node:
    chain = connect(node.url)
    coord = Signer.create("c")
    chain.fund(coord.address)
    for K in (3, 10):
        ms = [Signer.create(f"p{i}") for i in range(K)]
        for m in ms:
            chain.fund(m.address)
        ledger, _ = Ledger.deploy(
            chain,
            coord,
            sha256(b"g"),
            Cid("QmGenesisCidxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
            sha256(b"m"),
            Cid("QmManifest"),
        )
        for m in ms:
            ledger.register_participant(coord, m.address, 1000)
        keys = [ledger.register_masking_key(m, sha256(m.address.encode())).gas_used for m in ms]
        base = sha256(b"g")
        totals = []
        for r in range(3):
            g = ledger.open_round(
                coord, r, base, Cid("QmGenesisCidxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), chain.now() + 1000, 1
            ).gas_used
            subs = [
                ledger.submit_update(
                    m, r, sha256(f"{r}{m.address}".encode()), Cid("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"), 500
                ).gas_used
                for m in ms
            ]
            g += sum(subs)
            g += ledger.close_round(coord, r).gas_used
            reveals = [
                ledger.reveal_shares(
                    m, r, {o.address: sha256(f"s{r}{m.address}{o.address}".encode()) for o in ms}
                ).gas_used
                for m in ms
            ]
            g += sum(reveals)
            agg = sha256(f"agg{r}".encode())
            g += ledger.finalize_round(
                coord, r, agg, Cid("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"), [m.address for m in ms]
            ).gas_used
            base = agg
            totals.append(g)
        per = statistics.median(subs) + statistics.median(reveals) + statistics.median(keys) / 10
        print(
            f"K={K}: submit {statistics.median(subs)}, shares reveal {statistics.median(reveals)}, key {statistics.median(keys)}, per participant per round (keys/10) {per:.0f}, round total {statistics.median(totals)}, with keys/10 {statistics.median(totals) + sum(keys) / 10:.0f}"
        )
