#!/usr/bin/env bash
# matrix.sh - lab variants for the interop matrix (examples/tests/interop_matrix.rs), built on
# scripts/lab.sh (sourced: same namespaces, same charon setup, same teardown with `lab.sh down`).
#
# Command line (as root); each `*-up` prints the lab's shell assignments like `lab.sh up`:
#   scripts/matrix.sh nat-up SIDE        a masquerading namespace between the gateways (nft
#                                        `masquerade random`), charon started:
#     SIDE=ours: ours 192.0.2.1 -> [nat 192.0.2.254 | 198.51.100.254] -> sw 198.51.100.2
#                (our gateway is behind the NAT; charon answers anyone, remote id 192.0.2.1)
#     SIDE=peer: sw 198.51.100.2 -> [nat 198.51.100.254 | 192.0.2.254] -> ours 192.0.2.1
#                (strongSwan is behind the NAT and must initiate; we see it as 192.0.2.254)
#   scripts/matrix.sh charon-restart LAB_DIR
#                                        start charon again (after a test killed it) and load
#                                        its config
#   scripts/matrix.sh libreswan-install  unpack libreswan's .deb (it conflicts with strongSwan's
#                                        packages) into LIBRESWAN_ROOT and install its libraries
#   scripts/matrix.sh pluto-up           the lab with libreswan's pluto instead of charon in "sw".
#                                        Exit status 3 when pluto refuses the connection (the
#                                        reason is printed as PLUTO_REFUSED=...)
#   scripts/matrix.sh pluto-initiate LAB_DIR
#                                        pluto starts Main/Aggressive Mode and Quick Mode
#   scripts/matrix.sh pluto-log LAB_DIR  pluto's log
#   Teardown: scripts/lab.sh down LAB_DIR (the NAT namespace and pluto are tracked by lab.sh).
# Environment: everything lab.sh up reads (LAB_PREFIX, LAB_PSK, LAB_IKE_PROPOSALS, ...), and for
#   pluto-up: PLUTO_IKE (libreswan ike=, default aes128-sha1;modp2048), PLUTO_ESP (esp=, default
#   aes128-sha1), PLUTO_PFS (yes/no, default no), LAB_AGGRESSIVE (yes/no), LIBRESWAN_ROOT
#   (default /opt/libreswan-deb).
#
# Network rules: only namespaces of this lab (prefix LAB_PREFIX); documentation ranges
# 192.0.2.0/24 and 198.51.100.0/24 outside, 10.x inside; bounded waits; only our PIDs are killed.

MATRIX_SH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lab.sh
. "$MATRIX_SH_DIR/lab.sh"

LIBRESWAN_ROOT=${LIBRESWAN_ROOT:-/opt/libreswan-deb}
# Libraries pluto links against (it is unpacked, not installed, so apt does not pull them in).
LIBRESWAN_LIBS=(libnss3-tools libnss3 libnspr4 libevent-core-2.1-7 libevent-pthreads-2.1-7
    libldns3 libunbound8 libcurl3-nss libcap-ng0 libaudit1 libldap-2.5-0 libpam0g libsystemd0
    libselinux1 dns-root-data)

# ----------------------------------------------------------------------- NAT --
# matrix_nat_rewire SIDE: replaces lab.sh's direct wan0 link by ours -- nat -- sw.
matrix_nat_rewire() {
    local side=$1 ours sw nat
    ours=$(lab_ns ours) sw=$(lab_ns sw) nat=$(lab_ns nat)
    ip netns add "$nat" || return 1
    echo "$nat" >> "$LAB_DIR/namespaces"
    ip -n "$nat" link set lo up
    # Deleting one end of the veth pair deletes both.
    ip -n "$ours" link del wan0
    ip link add wan0 netns "$ours" type veth peer name inside netns "$nat"
    ip link add wan0 netns "$sw" type veth peer name outside netns "$nat"
    case $side in ours | peer) ;; *) lab_say "nat side must be ours or peer"; return 1 ;; esac
    # Same addresses in both variants; only the masquerading direction and the default route
    # differ: "inside" faces our gateway, "outside" faces strongSwan.
    local ours_addr=192.0.2.1/24 nat_in=192.0.2.254/24 nat_out=198.51.100.254/24 sw_addr=198.51.100.2/24
    ip -n "$ours" addr add "$ours_addr" dev wan0
    ip -n "$nat" addr add "$nat_in" dev inside
    ip -n "$nat" addr add "$nat_out" dev outside
    ip -n "$sw" addr add "$sw_addr" dev wan0
    local r
    for r in "$ours wan0" "$sw wan0" "$nat inside" "$nat outside"; do
        set -- $r
        ip -n "$1" link set "$2" up
    done
    ip netns exec "$nat" sysctl -qw net.ipv4.ip_forward=1
    # The masquerading interface is the one facing the public side.
    local public
    if [ "$side" = ours ]; then
        ip -n "$ours" route add default via 192.0.2.254
        public=outside
    else
        ip -n "$sw" route add default via 198.51.100.254
        public=inside
    fi
    ip netns exec "$nat" nft -f - << EOF
table ip nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "$public" masquerade random
    }
}
EOF
}

# matrix_nat_charon_conf SIDE: adapts lab.sh's swanctl.conf to the NAT addresses.
matrix_nat_charon_conf() {
    local f=$LAB_DIR/sw/swanctl.conf
    # strongSwan's own address and ID become 198.51.100.2 in both variants.
    sed -i -e 's/192\.0\.2\.2/198.51.100.2/g' "$f"
    if [ "$1" = ours ]; then
        # We arrive from the NAT's address with rewritten ports: accept any address, find the
        # PSK through the IDs.
        sed -i -e 's/remote_addrs = 192\.0\.2\.1/remote_addrs = %any/' "$f"
    fi
}

matrix_nat_up() {
    local side=${1:?nat side: ours or peer}
    LAB_NO_CHARON=1 lab_up || return 1
    matrix_nat_rewire "$side" || return 1
    matrix_nat_charon_conf "$side" || return 1
    lab_start_charon || return 1
    {
        echo "NS_NAT=$(lab_ns nat)"
        echo "NAT_SIDE=$side"
        echo "SW_ADDR=198.51.100.2"
        if [ "$side" = ours ]; then echo "NAT_PUBLIC=198.51.100.254"; else echo "NAT_PUBLIC=192.0.2.254"; fi
    } >> "$LAB_DIR/lab.env"
}

# ----------------------------------------------------------------- libreswan --
# matrix_libreswan_install: pluto from the .deb (never installed: it conflicts with strongSwan).
matrix_libreswan_install() {
    local missing=() p
    for p in "${LIBRESWAN_LIBS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        lab_say "installing libreswan's libraries: ${missing[*]}"
        apt-get update -q > /dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" > /dev/null || return 1
    fi
    if [ ! -x "$LIBRESWAN_ROOT/usr/libexec/ipsec/pluto" ]; then
        local tmp
        tmp=$(mktemp -d) || return 1
        # Writable by _apt, so apt-get download need not run unsandboxed.
        chmod 777 "$tmp"
        (cd "$tmp" && apt-get download -q libreswan > /dev/null 2>&1) \
            || { lab_say "apt-get download libreswan failed"; rm -rf "$tmp"; return 1; }
        mkdir -p "$LIBRESWAN_ROOT"
        dpkg-deb -x "$tmp"/libreswan_*.deb "$LIBRESWAN_ROOT" || { rm -rf "$tmp"; return 1; }
        rm -rf "$tmp"
    fi
    if ldd "$LIBRESWAN_ROOT/usr/libexec/ipsec/pluto" | grep -q 'not found'; then
        lab_say "pluto misses libraries:"; ldd "$LIBRESWAN_ROOT/usr/libexec/ipsec/pluto" | grep 'not found' >&2
        return 1
    fi
}

matrix_whack() {
    "$LIBRESWAN_ROOT/usr/libexec/ipsec/whack" --ctlsocket "$LAB_DIR/pluto/run/pluto/pluto.ctl" "$@"
}

matrix_pluto_conf() {
    local d=$LAB_DIR/pluto
    mkdir -p "$d/run/pluto" "$d/nss"
    certutil -N -d "sql:$d/nss" --empty-password || return 1
    cat > "$d/ipsec.conf" << EOF
# libreswan's side of the lab tunnel (written by scripts/matrix.sh).
config setup
    logfile=$d/pluto.log
    logappend=no
    plutodebug=none
    ikev1-policy=accept
conn lab
    keyexchange=ike
    ikev2=no
    authby=secret
    left=192.0.2.2
    leftid=192.0.2.2
    leftsubnet=10.2.0.0/24
    right=192.0.2.1
    rightid=192.0.2.1
    rightsubnet=10.1.0.0/24
    ike=$PLUTO_IKE
    esp=$PLUTO_ESP
    pfs=$PLUTO_PFS
    aggressive=$LAB_AGGRESSIVE
    ikelifetime=8h
    salifetime=1h
    retransmit-timeout=10s
    auto=add
EOF
    (umask 077 && printf '192.0.2.2 192.0.2.1 : PSK "%s"\n' "$LAB_PSK" > "$d/ipsec.secrets")
}

matrix_pluto_up() {
    PLUTO_IKE=${PLUTO_IKE:-aes128-sha1;modp2048}
    PLUTO_ESP=${PLUTO_ESP:-aes128-sha1}
    PLUTO_PFS=${PLUTO_PFS:-no}
    [ -x "$LIBRESWAN_ROOT/usr/libexec/ipsec/pluto" ] || matrix_libreswan_install || return 1
    LAB_NO_CHARON=1 lab_up || return 1
    matrix_pluto_conf || return 1
    local d=$LAB_DIR/pluto
    # pluto execs /usr/libexec/ipsec/addconn (compiled-in path) and uses /run/pluto: both are
    # bind-mounted in the private mount namespace of `ip netns exec`. ip and sh exec, so $! is pluto.
    ip netns exec "$(lab_ns sw)" sh -c 'mount --bind "$1/run" /run && mount --bind "$2/usr/libexec" /usr/libexec &&
        exec "$2/usr/libexec/ipsec/pluto" --nofork --config "$1/ipsec.conf" --rundir "$1/run/pluto" \
        --secretsfile "$1/ipsec.secrets" --nssdir "$1/nss" --ipsecdir "$1" --dumpdir "$1/run/pluto"' \
        sh "$d" "$LIBRESWAN_ROOT" > "$d/stdout" 2>&1 < /dev/null &
    local pid=$!
    PLUTO_PID=$pid
    lab_track_pid "$pid"
    {
        echo "PLUTO_PID=$pid"
        echo "PLUTO_LOG=$d/pluto.log"
    } >> "$LAB_DIR/lab.env"
    local i refused
    for i in $(seq 100); do
        # pluto logs why it did not add the connection (e.g. an algorithm it does not support):
        # that is its refusal of our choice, reported in its own words.
        refused=$(grep -m1 -F '"lab": failed to add connection' "$d/pluto.log" 2> /dev/null | sed 's/^.*"lab": //')
        if [ -n "$refused" ]; then
            printf 'PLUTO_REFUSED=%q\n' "$refused" >> "$LAB_DIR/lab.env"
            return 3
        fi
        matrix_whack --status 2> /dev/null | grep -q '"lab":' && return 0
        kill -0 "$pid" 2> /dev/null || { lab_say "pluto exited:"; cat "$d/stdout" >&2; return 1; }
        sleep 0.1
    done
    lab_say "pluto did not load the connection within 10 s"
    return 1
}

# ---------------------------------------------------------------------- main --
matrix_main() {
    set -Eeuo pipefail
    local cmd=${1:-} rc
    shift || true
    case $cmd in
        nat-up)
            if ! matrix_nat_up "${1:-}"; then
                lab_down
                exit 1
            fi
            cat "$LAB_DIR/lab.env"
            ;;
        charon-restart)
            lab_load "${1:?usage: matrix.sh charon-restart LAB_DIR}"
            lab_start_charon
            ;;
        libreswan-install)
            matrix_libreswan_install
            ;;
        pluto-up)
            rc=0
            matrix_pluto_up || rc=$?
            if [ "$rc" = 3 ]; then
                cat "$LAB_DIR/lab.env"
                # pluto ignores SIGINT (lab_down's first signal): TERM it first.
                lab_stop_pid "$(sed -n 's/^PLUTO_PID=//p' "$LAB_DIR/lab.env")" TERM
                lab_down
                exit 3
            elif [ "$rc" != 0 ]; then
                [ -z "${PLUTO_PID:-}" ] || lab_stop_pid "$PLUTO_PID" TERM
                lab_down
                exit 1
            fi
            cat "$LAB_DIR/lab.env"
            ;;
        pluto-initiate)
            lab_load "${1:?usage: matrix.sh pluto-initiate LAB_DIR}"
            matrix_whack --name lab --initiate --asynchronous
            ;;
        pluto-log)
            lab_load "${1:?usage: matrix.sh pluto-log LAB_DIR}"
            cat "$LAB_DIR/pluto/pluto.log"
            ;;
        *)
            sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
            exit 2
            ;;
    esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    matrix_main "$@"
fi
