#!/usr/bin/env bash
# demo.sh - ipsec-gateway against a real strongSwan, in network namespaces, start to finish.
#
#   hl 10.1.0.10 -- [ours: ipsec-gateway] 192.0.2.1 == 192.0.2.2 [sw: strongSwan] -- 10.2.0.10 hr
#
# Installs what is missing (scripts/install-deps.sh), builds the gateway, builds the lab
# (scripts/lab.sh), starts our gateway as initiator, shows the tunnel coming up, pings between
# the hosts behind the two gateways in both directions, prints both sides' view of the SAs,
# stops the gateway with SIGTERM (it deletes its SAs) and removes everything it created.
# Run as root on Debian 12:  ./scripts/demo.sh      (KEEP=1 keeps the lab directory)
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
[ "$(id -u)" = 0 ] || { echo "run as root (namespaces, TUN device, ports 500/4500)" >&2; exit 2; }

step "dependencies"
./scripts/install-deps.sh

step "build"
cargo build --release -p ipsec-gateway
BIN=$(realpath "${CARGO_TARGET_DIR:-$ROOT/target}/release/ipsec-gateway")

# shellcheck source=scripts/lab.sh
. "$ROOT/scripts/lab.sh"
GW_PID=
cleanup() {
    [ -z "$GW_PID" ] || lab_stop_pid "$GW_PID"
    lab_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "lab: namespaces, links, strongSwan (responder) in the sw namespace"
LAB_PREFIX=ipgwdemo$$ lab_up
echo "lab directory $LAB_DIR; namespaces $NS_HL $NS_OURS $NS_SW $NS_HR"
lab_swanctl --list-conns

step "our gateway's config (what it means, as ipsec-gateway check prints it)"
lab_gateway_config start > "$LAB_DIR/gateway.toml"
"$BIN" check "$LAB_DIR/gateway.toml"

step "start ipsec-gateway in $NS_OURS; it initiates"
ip netns exec "$NS_OURS" env RUST_LOG="${RUST_LOG:-info}" "$BIN" run "$LAB_DIR/gateway.toml" \
    > "$LAB_DIR/gateway.log" 2>&1 < /dev/null &
GW_PID=$!
lab_track_pid "$GW_PID"
up=0
for _ in $(seq 100); do      # at most 20 s
    if lab_swanctl --list-sas 2> /dev/null | grep -q INSTALLED; then up=1; break; fi
    kill -0 "$GW_PID" 2> /dev/null || break
    sleep 0.2
done
echo "--- gateway log:"
cat "$LAB_DIR/gateway.log"
[ "$up" = 1 ] || { echo "the tunnel did not come up; charon's log:"; tail -40 "$CHARON_LOG"; exit 1; }

step "ping from hl (10.1.0.10, behind us) to hr (10.2.0.10, behind strongSwan)"
ip netns exec "$NS_HL" ping -c 3 -W 2 10.2.0.10
step "and back, from hr to hl"
ip netns exec "$NS_HR" ping -c 3 -W 2 10.1.0.10

step "strongSwan's view (swanctl --list-sas)"
lab_swanctl --list-sas
step "our view (ipsec-gateway status)"
"$BIN" status --socket "$LAB_DIR/ipsec-gateway.sock"

step "SIGTERM: the gateway deletes its SAs and exits"
lines=$(wc -l < "$LAB_DIR/gateway.log")
lab_stop_pid "$GW_PID" TERM
GW_PID=
tail -n +"$((lines + 1))" "$LAB_DIR/gateway.log"
echo "--- strongSwan:"
grep -E "received DELETE" "$CHARON_LOG" || true
lab_swanctl --list-sas

step "done: tearing the lab down"
