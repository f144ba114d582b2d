#!/usr/bin/env bash
# Captures real kernel-built IPv4 packets for the ipsec-nat fixtures (see README.md here).
# Needs root, iproute2, tshark and python3. Everything it creates is removed on exit.
set -euo pipefail

out_dir=$(cd "$(dirname "$0")" && pwd)
ns_a="natcapA$$"
ns_b="natcapB$$"
veth_a="nca$$"
veth_b="ncb$$"
work=$(mktemp -d)
tshark_pid=""

cleanup() {
    if [ -n "$tshark_pid" ]; then kill "$tshark_pid" 2>/dev/null || true; fi
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns_a"
ip netns add "$ns_b"
ip link add "$veth_a" netns "$ns_a" type veth peer name "$veth_b" netns "$ns_b"
ip -n "$ns_a" addr add 10.77.0.2/24 dev "$veth_a"
ip -n "$ns_b" addr add 10.77.0.1/24 dev "$veth_b"
ip -n "$ns_a" link set lo up
ip -n "$ns_b" link set lo up
ip -n "$ns_a" link set "$veth_a" up
ip -n "$ns_b" link set "$veth_b" up

# veth offloads the TCP/UDP checksum by default, so a capture would show a partial
# checksum. Turn transmit checksum offload off on both ends (ETHTOOL_STXCSUM through the
# SIOCETHTOOL ioctl: there is no ethtool binary here) so the kernel computes it in software.
set_tx_csum_off() {
    ip netns exec "$1" python3 - "$2" <<'PY'
import array, fcntl, socket, struct, sys
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17
value = array.array("I", [ETHTOOL_STXCSUM, 0])
addr, _ = value.buffer_info()
ifreq = struct.pack("16sP", sys.argv[1].encode(), addr)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
PY
}
set_tx_csum_off "$ns_a" "$veth_a"
set_tx_csum_off "$ns_b" "$veth_b"

# A TCP listener in B that reads one message, so the capture holds a data segment too.
ip netns exec "$ns_b" python3 - <<'PY' &
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.77.0.1", 7777))
s.listen(1)
s.settimeout(10)
c, _ = s.accept()
c.recv(100)
c.close()
PY
listener_pid=$!

ip netns exec "$ns_b" tshark -q -i "$veth_b" -F pcap -w "$work/cap.pcap" -f "ip" 2>/dev/null &
tshark_pid=$!
sleep 3

# ICMP echo request and reply (56-byte payload, the ping default).
ip netns exec "$ns_a" ping -c1 -W2 10.77.0.1 >/dev/null
# A UDP datagram to a closed port: B answers with ICMP port unreachable (an ICMP error
# that embeds the datagram's IP and UDP headers).
ip netns exec "$ns_a" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.77.0.2", 40000))
s.sendto(b"static nat fixture\n", ("10.77.0.1", 5353))
'
# A 3000-byte UDP datagram the kernel must fragment on the 1500-byte MTU (path MTU
# discovery off, so DF is clear): a first fragment with the UDP header and later ones without.
ip netns exec "$ns_a" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT
s.bind(("10.77.0.2", 40001))
s.sendto(bytes(range(256)) * 11 + bytes(184), ("10.77.0.1", 5354))
'
# A TCP connection carrying one data segment.
ip netns exec "$ns_a" python3 -c '
import socket, time
s = socket.create_connection(("10.77.0.1", 7777), timeout=5)
s.sendall(b"hello through the tunnel\n")
time.sleep(0.3)
s.close()
'
wait "$listener_pid" || true
sleep 2
kill "$tshark_pid"
wait "$tshark_pid" 2>/dev/null || true
tshark_pid=""

# Write each captured IPv4 packet (Ethernet header stripped) as one hex line per file.
python3 - "$work/cap.pcap" "$out_dir" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
magic = struct.unpack("<I", data[:4])[0]
assert magic == 0xA1B2C3D4, "expected a little-endian microsecond pcap"
linktype = struct.unpack("<I", data[20:24])[0]
assert linktype == 1, "expected Ethernet link type"
off = 24
packets = []
while off + 16 <= len(data):
    _, _, incl, _ = struct.unpack("<IIII", data[off:off + 16])
    frame = data[off + 16:off + 16 + incl]
    off += 16 + incl
    if frame[12:14] == b"\x08\x00":
        packets.append(frame[14:])

def pick(name, pred):
    for p in packets:
        if pred(p):
            open(f"{sys.argv[2]}/{name}.hex", "w").write(p.hex() + "\n")
            return
    raise SystemExit(f"no packet for {name}")

proto = lambda p: p[9]
frag = lambda p: int.from_bytes(p[6:8], "big")
more_fragments = lambda p: frag(p) & 0x2000 != 0
offset = lambda p: frag(p) & 0x1FFF
ihl = lambda p: (p[0] & 0x0F) * 4
pick("icmp_echo_request", lambda p: proto(p) == 1 and p[ihl(p)] == 8)
pick("icmp_echo_reply", lambda p: proto(p) == 1 and p[ihl(p)] == 0)
pick("udp_datagram", lambda p: proto(p) == 17 and not more_fragments(p) and offset(p) == 0)
pick("udp_fragment_first", lambda p: proto(p) == 17 and more_fragments(p) and offset(p) == 0)
pick("udp_fragment_last", lambda p: proto(p) == 17 and not more_fragments(p) and offset(p) != 0)
pick("icmp_port_unreachable", lambda p: proto(p) == 1 and p[ihl(p)] == 3)
pick("tcp_syn", lambda p: proto(p) == 6 and p[ihl(p) + 13] == 0x02)
pick("tcp_data", lambda p: proto(p) == 6 and len(p) > ihl(p) + ((p[ihl(p) + 12] >> 4) * 4)
     and p[12:16] == bytes([10, 77, 0, 2]))
print(f"{len(packets)} IPv4 packets captured")
PY
