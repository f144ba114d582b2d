#!/usr/bin/env bash
# perf.sh - end-to-end throughput: iperf3 TCP from a host behind one gateway to a host behind
# the other, through two ipsec-gateways and through a strongSwan pair (charon with
# kernel-libipsec on both sides), on the same topology in the same run.
#
#   hl 10.1.0.10 -- [gw A] 192.0.2.1 == 192.0.2.2 [gw B] -- 10.2.0.10 hr      (scripts/lab.sh)
#
# Three labs are built side by side per cipher suite and measured in turn, round after round,
# so a change of load on the machine hits all of them alike:
#   ours-esp   two ipsec-gateways, no NAT: ESP as IP protocol 50 over raw sockets
#   ours-udp   two ipsec-gateways with a port-only SNAT in front of A (nftables in A's
#              namespace: UDP 500 -> 1500, 4500 -> 14500), so NAT-D sees a NAT and both
#              float to UDP 4500: ESP in UDP (RFC 3948), as against strongSwan's libipsec
#   swan       charon + kernel-libipsec on both sides (libipsec only does ESP in UDP)
# Each lab runs IKEv1 Main Mode + Quick Mode, PSK, DH group 14 with PFS.
#
# Usage (as root): scripts/perf.sh
# Environment: PERF_SECONDS (iperf3 -t, default 10), PERF_ROUNDS (default 2), PERF_SUITES
#   (default "aes128-sha1 aes256-sha256"), PERF_LABS (default "ours-esp ours-udp swan"),
#   GATEWAY (an ipsec-gateway binary; default: cargo build --release, then
#   ${CARGO_TARGET_DIR:-target}/release/ipsec-gateway), PERF_OUT (results file, default
#   ${TMPDIR:-/tmp}/ipsec-perf-results.md), KEEP=1 (keep lab directories and logs),
#   PERF_PROFILE=1 (sample the initiating ipsec-gateway with linux perf during the first
#   round; top symbols go into the results).
#
# Network rules: only namespaces this script creates (through lab.sh, prefix perf<pid>),
# outer addresses from 192.0.2.0/24, private 10.x inside; everything is torn down on EXIT;
# only PIDs we started are stopped; every wait is bounded.

set -Eeuo pipefail
PERF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lab.sh
. "$PERF_ROOT/scripts/lab.sh"

PERF_SECONDS=${PERF_SECONDS:-10}
PERF_ROUNDS=${PERF_ROUNDS:-2}
PERF_SUITES=${PERF_SUITES:-aes128-sha1 aes256-sha256}
PERF_LABS=${PERF_LABS:-ours-esp ours-udp swan}
PERF_OUT=${PERF_OUT:-${TMPDIR:-/tmp}/ipsec-perf-results.md}
PERF_LAB_DIRS=()

perf_say() { printf '[perf %(%T)T] %s\n' -1 "$*" >&2; }

# perf_cleanup: tears down every lab this run built (EXIT trap).
perf_cleanup() {
    local d
    for d in "${PERF_LAB_DIRS[@]}"; do
        [ -d "$d" ] || continue
        lab_load "$d" && lab_down
    done
    PERF_LAB_DIRS=()
}
trap perf_cleanup EXIT

perf_gateway_binary() {
    if [ -n "${GATEWAY:-}" ]; then
        [ -x "$GATEWAY" ] || { perf_say "GATEWAY=$GATEWAY is not executable"; return 1; }
        return 0
    fi
    perf_say "building ipsec-gateway (release)"
    (cd "$PERF_ROOT" && cargo build --release --quiet -p ipsec-gateway) || return 1
    GATEWAY=${CARGO_TARGET_DIR:-$PERF_ROOT/target}/release/ipsec-gateway
}

# perf_set_algorithms FILE ENC INTEG: the phase 2 (ESP) algorithms of a lab gateway config.
perf_set_algorithms() {
    sed -i -e "/^\[tunnel.phase2\]/,/^\[/ s/^encryption = .*/encryption = [\"$2\"]/" \
        -e "/^\[tunnel.phase2\]/,/^\[/ s/^authentication = .*/authentication = [\"$3\"]/" "$1"
}

# perf_mirror: a lab config (stdin) seen from the other gateway (stdout): addresses, subnets
# and control socket swapped, and it only answers.
perf_mirror() {
    sed -e 's/192\.0\.2\.1/@A@/g; s/192\.0\.2\.2/192.0.2.1/g; s/@A@/192.0.2.2/g' \
        -e 's#10\.1\.0\.0/24#@L@#g; s#10\.2\.0\.0/24#10.1.0.0/24#g; s#@L@#10.2.0.0/24#g' \
        -e 's/ipsec-gateway\.sock/peer-gateway.sock/' \
        -e 's/^initiate = .*/initiate = "wait"/'
}

# perf_start_gateway ROLE CONFIG LOG: ipsec-gateway in ROLE's namespace of the current lab.
perf_start_gateway() {
    "$GATEWAY" check "$2" > /dev/null || { perf_say "config $2 refused"; return 1; }
    # `ip netns exec` execs the gateway, so $! is the gateway's PID.
    RUST_LOG=${PERF_RUST_LOG:-info} ip netns exec "$(lab_ns "$1")" "$GATEWAY" run "$2" \
        > "$3" 2>&1 < /dev/null &
    lab_track_pid $!
    echo $! > "${2%.toml}.pid"
}

# perf_up_ours KIND ENC INTEG: two ipsec-gateways; KIND udp adds the port-only SNAT.
perf_up_ours() {
    LAB_PREFIX=perf$$${1:0:1}
    LAB_NO_CHARON=1
    lab_up || return 1
    LAB_NO_CHARON=0
    PERF_LAB_DIRS+=("$LAB_DIR")
    if [ "$1" = udp ]; then
        # A NAT that keeps the address and changes the ports: the NAT-D hashes (RFC 3947
        # section 3.2) no longer match, so both gateways float to 4500 and use ESP in UDP.
        ip netns exec "$NS_OURS" nft -f - <<'EOF' || return 1
table ip perf_natt {
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" udp sport 500 snat to 192.0.2.1:1500
        oifname "wan0" udp sport 4500 snat to 192.0.2.1:14500
    }
}
EOF
    fi
    lab_gateway_config wait | perf_mirror > "$LAB_DIR/peer.toml"
    lab_gateway_config start > "$LAB_DIR/gateway.toml"
    perf_set_algorithms "$LAB_DIR/peer.toml" "$2" "$3"
    perf_set_algorithms "$LAB_DIR/gateway.toml" "$2" "$3"
    perf_start_gateway sw "$LAB_DIR/peer.toml" "$LAB_DIR/peer.log" || return 1
    sleep 0.3
    perf_start_gateway ours "$LAB_DIR/gateway.toml" "$LAB_DIR/gateway.log" || return 1
}

# perf_up_swan: lab.sh's charon (responder, in sw) plus a mirror-image charon (initiator, in
# ours), built by running lab.sh's own functions in a subshell where "sw" means "ours".
perf_up_swan() {
    LAB_PREFIX=perf$$s
    lab_up || return 1
    PERF_LAB_DIRS+=("$LAB_DIR")
    local main=$LAB_DIR
    (
        LAB_DIR=$main/initiator
        mkdir -p "$LAB_DIR" && : > "$LAB_DIR/pids" && : > "$LAB_DIR/lab.env"
        lab_ns() { if [ "$1" = sw ]; then echo "$LAB_PREFIX-ours"; else echo "$LAB_PREFIX-$1"; fi; }
        lab_write_strongswan_conf \
            && sed -i -e 's/192\.0\.2\.1/@A@/g; s/192\.0\.2\.2/192.0.2.1/g; s/@A@/192.0.2.2/g' \
                -e 's#10\.1\.0\.0/24#@L@#g; s#10\.2\.0\.0/24#10.1.0.0/24#g; s#@L@#10.2.0.0/24#g' \
                "$LAB_DIR/sw/swanctl.conf" \
            && lab_start_charon
    ) || { cat "$main/initiator/pids" >> "$main/pids" 2> /dev/null; return 1; }
    cat "$main/initiator/pids" >> "$main/pids"
    LAB_DIR=$main/initiator lab_swanctl --initiate --child net --timeout 30 > "$main/initiate.out" 2>&1 \
        || { perf_say "strongSwan initiate failed:"; tail -5 "$main/initiate.out" >&2; return 1; }
}

# perf_wait_ping: until hl reaches hr through the tunnel (bounded: 40 tries, about 20 s).
perf_wait_ping() {
    local i
    for i in $(seq 40); do
        ip netns exec "$NS_HL" ping -c 1 -W 1 10.2.0.10 > /dev/null 2>&1 && return 0
        sleep 0.5
    done
    perf_say "no ping through lab $LAB_PREFIX after 20 s"
    return 1
}

# perf_describe LABNAME: what the lab negotiated, for the results file.
perf_describe() {
    case $1 in
        ours-*)
            "$GATEWAY" status --socket "$LAB_DIR/ipsec-gateway.sock" 2> /dev/null \
                | grep -E 'ike:|esp:' | sed 's/^ */    /' | head -4
            if [ -s "$LAB_DIR/profile.txt" ]; then
                echo "    profile of the initiating gateway (perf, flat, top symbols):"
                sed 's/^ */        /' "$LAB_DIR/profile.txt"
            fi
            ;;
        swan)
            LAB_DIR=$LAB_DIR/initiator lab_swanctl --list-sas 2> /dev/null \
                | grep -E 'INSTALLED|ESTABLISHED' | sed 's/^ */    /' | head -3
            ;;
    esac
}

# perf_daemon_pids: the two IPsec daemons of the current lab (gateways or charons).
perf_daemon_pids() {
    cat "$LAB_DIR/gateway.pid" "$LAB_DIR/peer.pid" 2> /dev/null || true
    sed -n 's/^CHARON_PID=//p' "$LAB_DIR/lab.env" "$LAB_DIR/initiator/lab.env" 2> /dev/null || true
}

# perf_cpu_ticks PID...: user + system clock ticks used so far by these processes (all threads).
perf_cpu_ticks() {
    local p total=0 t
    for p in "$@"; do
        t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2> /dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}

# perf_runq_wait_ns PID...: nanoseconds these processes' threads have spent runnable but
# waiting for a CPU (second field of /proc/PID/task/TID/schedstat).
perf_runq_wait_ns() {
    local p total=0 f w
    for p in "$@"; do
        for f in /proc/"$p"/task/*/schedstat; do
            [ -r "$f" ] || continue
            w=$(awk '{print $2}' "$f" 2> /dev/null || echo 0)
            total=$((total + ${w:-0}))
        done
    done
    echo "$total"
}

# perf_iperf: one iperf3 TCP run hl -> hr; prints "Mbit/s received" and "CPU % of one core
# used by both IPsec daemons together" and "% of the run their threads waited, runnable, for
# a CPU (summed over threads)" during the run.
perf_iperf() {
    local json=$LAB_DIR/iperf.json server pids ticks0 ticks1 t0 t1 w0 w1
    pids=$(perf_daemon_pids | tr '\n' ' ')
    ip netns exec "$NS_HR" iperf3 -s -1 -B 10.2.0.10 > "$LAB_DIR/iperf-server.txt" 2>&1 &
    server=$!
    lab_track_pid "$server"
    sleep 0.3
    # PERF_PROFILE=1: sample the initiating gateway (linux perf) while iperf3 runs, in the
    # first round only (the other rounds run unobserved).
    local profiler=
    if [ "${PERF_PROFILE:-0}" = 1 ] && [ "${PERF_ROUND:-1}" = 1 ] && [ -f "$LAB_DIR/gateway.pid" ] && command -v perf > /dev/null; then
        perf record -q -F 999 -p "$(cat "$LAB_DIR/gateway.pid")" -o "$LAB_DIR/perf.data" \
            -- sleep $((PERF_SECONDS > 3 ? PERF_SECONDS - 2 : 1)) > /dev/null 2>&1 &
        profiler=$!
    fi
    # shellcheck disable=SC2086
    ticks0=$(perf_cpu_ticks $pids) w0=$(perf_runq_wait_ns $pids) t0=$(date +%s%N)
    if ! timeout $((PERF_SECONDS + 20)) ip netns exec "$NS_HL" iperf3 -c 10.2.0.10 \
        -t "$PERF_SECONDS" -J > "$json" 2> "$LAB_DIR/iperf-client.err"; then
        perf_say "iperf3 failed in $LAB_PREFIX"
        lab_stop_pid "$server"
        echo "0 0 0"
        return 0
    fi
    # shellcheck disable=SC2086
    ticks1=$(perf_cpu_ticks $pids) w1=$(perf_runq_wait_ns $pids) t1=$(date +%s%N)
    lab_stop_pid "$server"
    if [ -n "$profiler" ]; then
        wait "$profiler" 2> /dev/null || true
        perf report -i "$LAB_DIR/perf.data" --stdio --no-children -g none --sort dso,symbol \
            2> /dev/null | grep -E '^ +[0-9.]+%' | head -20 | sed 's/ *$//' > "$LAB_DIR/profile.txt" || true
        perf report -i "$LAB_DIR/perf.data" --stdio --no-children -g none --sort dso \
            2> /dev/null | grep -E '^ +[0-9.]+%' | head -5 | sed 's/ *$//' >> "$LAB_DIR/profile.txt" || true
    fi
    echo "$(jq -r '.end.sum_received.bits_per_second / 1e6 | floor' "$json")" \
        "$(awk -v d=$((ticks1 - ticks0)) -v hz="$(getconf CLK_TCK)" -v ns=$((t1 - t0)) \
            'BEGIN {printf "%d", d / hz / (ns / 1e9) * 100}')" \
        "$(awk -v w=$((w1 - w0)) -v ns=$((t1 - t0)) 'BEGIN {printf "%d", w / ns * 100}')"
}

perf_median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }

perf_suite() {
    local suite=$1 enc integ lab dirs=() r i
    case $suite in
        aes128-sha1) enc=aes128 integ=sha1 ;;
        aes256-sha256) enc=aes256 integ=sha256 ;;
        *) perf_say "unknown suite $suite (aes128-sha1, aes256-sha256)"; return 1 ;;
    esac
    export LAB_ESP_PROPOSALS=$suite-modp2048 LAB_IKE_PROPOSALS=aes128-sha1-modp2048

    for lab in $PERF_LABS; do
        case $lab in
            ours-esp) perf_up_ours esp "$enc" "$integ" || return 1 ;;
            ours-udp) perf_up_ours udp "$enc" "$integ" || return 1 ;;
            swan) perf_up_swan || return 1 ;;
            *) perf_say "unknown lab $lab"; return 1 ;;
        esac
        dirs+=("$LAB_DIR")
    done
    for i in "${!dirs[@]}"; do
        lab_load "${dirs[$i]}"
        perf_wait_ping || return 1
        lab=$(echo "$PERF_LABS" | awk -v n=$((i + 1)) '{print $n}')
        perf_describe "$lab" | grep -v '^        ' > "$LAB_DIR/negotiated-before.txt" || true
    done

    local -A results=() cpus=() waits=()
    for r in $(seq "$PERF_ROUNDS"); do
        for i in "${!dirs[@]}"; do
            lab_load "${dirs[$i]}"
            lab=$(echo "$PERF_LABS" | awk -v n=$((i + 1)) '{print $n}')
            local mbit cpu wait
            read -r mbit cpu wait < <(PERF_ROUND=$r perf_iperf)
            perf_say "$suite round $r $lab: $mbit Mbit/s, daemons at $cpu % of a core, waited $wait % for a CPU (load $(cut -d' ' -f1 /proc/loadavg))"
            results[$lab]+="$mbit "
            cpus[$lab]+="$cpu "
            waits[$lab]+="$wait "
        done
    done

    {
        echo "#### $suite"
        echo
        for i in "${!dirs[@]}"; do
            lab_load "${dirs[$i]}"
            lab=$(echo "$PERF_LABS" | awk -v n=$((i + 1)) '{print $n}')
            echo "- $lab: rounds ${results[$lab]}Mbit/s; both daemons' CPU ${cpus[$lab]}(% of one core); runnable but waiting for a CPU ${waits[$lab]}(% of the run, summed over threads); negotiated before the rounds:"
            cat "$LAB_DIR/negotiated-before.txt"
            echo "  and after them:"
            perf_describe "$lab"
        done
        local sw=0 lab_m cpu_m
        [ -z "${results[swan]:-}" ] || sw=$(echo "${results[swan]}" | tr ' ' '\n' | grep . | perf_median)
        echo
        echo "| lab | median Mbit/s | ratio to strongSwan (target >= 3) | daemons' CPU, % of one core (median) | Mbit/s per core |"
        echo "|---|---|---|---|---|"
        for lab in $PERF_LABS; do
            lab_m=$(echo "${results[$lab]}" | tr ' ' '\n' | grep . | perf_median)
            cpu_m=$(echo "${cpus[$lab]}" | tr ' ' '\n' | grep . | perf_median)
            echo "| $lab | $lab_m | $(awk -v a="$lab_m" -v b="$sw" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}') | $cpu_m | $(awk -v a="$lab_m" -v c="$cpu_m" 'BEGIN {if (c > 0) printf "%.0f", a / c * 100; else print "-"}') |"
        done
        echo
    } >> "$PERF_OUT"

    perf_cleanup
}

perf_main() {
    [ "$(id -u)" = 0 ] || { perf_say "needs root (namespaces, veth, TUN)"; exit 1; }
    command -v iperf3 > /dev/null && command -v jq > /dev/null \
        || { perf_say "needs iperf3 and jq (scripts/install-deps.sh)"; exit 1; }
    perf_gateway_binary
    {
        echo "### End to end: iperf3 TCP hl -> hr, $PERF_SECONDS s per run, $PERF_ROUNDS rounds"
        echo
        echo "$(date -u '+%F %T UTC'); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs; load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo
    } > "$PERF_OUT"
    local suite
    for suite in $PERF_SUITES; do
        perf_suite "$suite"
    done
    echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$PERF_OUT"
    cat "$PERF_OUT"
}

perf_main "$@"
