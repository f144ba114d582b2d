#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian 12 machine (run as root).
# strongSwan is the real IKEv1 peer; kernel-libipsec (in libcharon-extra-plugins) gives it
# userspace ESP, because these kernels have no ESP transform. Safe to run repeatedly.
set -euo pipefail

PKGS=(strongswan-charon strongswan-swanctl libcharon-extra-plugins tshark nftables
      iputils-ping iproute2 iperf3 procps jq python3)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup)" >&2; exit 1; }

# libreswan (pluto) for the interop matrix: its package conflicts with strongSwan's, so it is
# unpacked, not installed (scripts/matrix.sh libreswan-install: apt-get download + dpkg-deb -x
# into /opt/libreswan-deb, and apt-get install of its libraries). Idempotent.
"$(dirname "$0")/matrix.sh" libreswan-install
