#!/usr/bin/env python3
"""Writes the fuzz seed corpus from shared/fixtures (session.json of every scenario).

isakmp_message/: every captured ISAKMP message; encrypted ones a second time with their
                 decrypted body in place of the ciphertext (same length, so the header
                 stays valid and the fuzzer reaches the payload decoders).
payload_chain/:  first-payload-type byte followed by each message's (decrypted) chain.
nat_translate/:  ipsec-nat's captured inner packets, also with mapped addresses.
esp_dataplane/:  algorithm/mode bytes, then captured inner pings or ESP packets, or a
                 batch of length-prefixed pings (mode 2).
endpoint_datagram/: mode byte, then captured Main Mode messages with length prefixes.

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
# nat_translate/: the inner packets captured for ipsec-nat's tests, as they are and with
# their addresses moved into the example table's mappings (checksums left stale on
# purpose: the translator updates them incrementally either way).
nat_data = here.parents[1] / "ipsec-nat" / "tests" / "data"
mappings = [bytes([10, 1, 255, 92]), bytes([192, 168, 10, 15])]
for path in sorted(nat_data.glob("*.hex")):
    packet = bytes.fromhex(path.read_text().strip())
    variants = [("", packet)]
    if len(packet) >= 20:
        for i, addr in enumerate(mappings):
            variants.append((f"-src{i}", packet[:12] + addr + packet[16:]))
            variants.append((f"-dst{i}", packet[:16] + addr + packet[20:]))
    out = here / "nat_translate"
    out.mkdir(exist_ok=True)
    for suffix, data in variants:
        if ("nat_translate", data) not in seen:
            seen.add(("nat_translate", data))
            (out / f"{path.stem}{suffix}.bin").write_bytes(data)

# esp_dataplane/: [cipher, integrity, mode] then an inner packet (mode 0: the captured
# pings from 10.1.0.0/24 to 10.2.0.0/24 under each algorithm pair) or an ESP packet
# without its SPI (mode 1).
for session in sorted(fixtures.glob("*/session.json")):
    packets = json.loads(session.read_text()).get("esp_packets") or []
    for n, e in enumerate(packets[:4]):
        inner = bytes.fromhex(e["inner_ip_hex"])
        seeds = [bytes([k, k, 0]) + inner for k in range(5)]
        seeds.append(bytes([0, 0, 1]) + bytes.fromhex(e["esp_hex"])[4:])
        out = here / "esp_dataplane"
        out.mkdir(exist_ok=True)
        for k, data in enumerate(seeds):
            if ("esp_dataplane", data) not in seen:
                seen.add(("esp_dataplane", data))
                (out / f"{session.parent.name}-{n}-{k}.bin").write_bytes(data)

# esp_dataplane/ mode 2: [cipher, integrity, 2] then every captured ping of a scenario (up to
# 16), each behind its 2-byte length, for encapsulate_batch.
for session in sorted(fixtures.glob("*/session.json")):
    packets = json.loads(session.read_text()).get("esp_packets") or []
    inners = [bytes.fromhex(e["inner_ip_hex"]) for e in packets][:16]
    if len(inners) < 2:
        continue
    body = b"".join(len(i).to_bytes(2, "big") + i for i in inners)
    out = here / "esp_dataplane"
    for k in range(5):
        data = bytes([k, k, 2]) + body
        if ("esp_dataplane", data) not in seen:
            seen.add(("esp_dataplane", data))
            (out / f"{session.parent.name}-batch-{k}.bin").write_bytes(data)

# endpoint_datagram/: [mode] then length-prefixed datagrams: the initiator's Main Mode
# messages of each Main Mode scenario (we play the responder), and the responder's
# messages (mode 1: we initiate first, they answer).
for session in sorted(fixtures.glob("*/session.json")):
    s = json.loads(session.read_text())
    if s["phase1"]["exchange"] != "main":
        continue
    for direction, mode in (("initiator->responder", 0), ("responder->initiator", 1)):
        msgs = [bytes.fromhex(m["isakmp_hex"]) for m in s["messages"]
                if m["direction"] == direction and m["message_id"] == 0][:3]
        data = bytes([mode])
        for msg in msgs:
            data += len(msg).to_bytes(2, "big") + msg
        out = here / "endpoint_datagram"
        out.mkdir(exist_ok=True)
        if ("endpoint_datagram", data) not in seen:
            seen.add(("endpoint_datagram", data))
            (out / f"{session.parent.name}-{mode}.bin").write_bytes(data)

print(f"wrote {len(seen)} seeds under {here}")
