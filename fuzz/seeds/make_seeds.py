#!/usr/bin/env python3
"""Writes the fuzz seed corpus from shared/fixtures (session.json of every scenario).

isakmp_message/: every captured ISAKMP message; encrypted ones a second time with their
                 decrypted body in place of the ciphertext (same length, so the header
                 stays valid and the fuzzer reaches the payload decoders).
payload_chain/:  first-payload-type byte followed by each message's (decrypted) chain.

Usage: python3 fuzz/seeds/make_seeds.py [path/to/shared/fixtures]
"""
import json
import pathlib
import sys

here = pathlib.Path(__file__).resolve().parent
fixtures = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else here.parents[2] / "shared" / "fixtures"
if not fixtures.is_dir():
    sys.exit(f"fixtures not found at {fixtures}")

seen = set()
for session in sorted(fixtures.glob("*/session.json")):
    scenario = session.parent.name
    for m in json.loads(session.read_text())["messages"]:
        wire = bytes.fromhex(m["isakmp_hex"])
        outputs = [("isakmp_message", f"{scenario}-{m['frame']}", wire)]
        body = wire[28:]
        if m["encrypted"]:
            body = bytes.fromhex(m["plaintext_hex"])
            outputs.append(("isakmp_message", f"{scenario}-{m['frame']}-plain", wire[:28] + body))
        outputs.append(("payload_chain", f"{scenario}-{m['frame']}", wire[16:17] + body))
        for target, name, data in outputs:
            if (target, data) in seen:
                continue
            seen.add((target, data))
            out = here / target
            out.mkdir(exist_ok=True)
            (out / f"{name}.bin").write_bytes(data)
print(f"wrote {len(seen)} seeds under {here}")
