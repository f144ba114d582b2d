#!/usr/bin/env bash
# lab.sh - the interop lab: our gateway against a real strongSwan, in network namespaces.
#
#   hl 10.1.0.10 -eth0--lan0- [ours] 10.1.0.1 | 192.0.2.1 =wan0=wan0= 192.0.2.2 | 10.2.0.1 [sw] -lan0--eth0- 10.2.0.10 hr
#
# "ours" is where ipsec-gateway runs (this script does not start it); "sw" runs strongSwan's
# charon with the kernel-libipsec plugin (userspace ESP over a TUN device, because these kernels
# have no ESP transform; libipsec 5.9.8 only does ESP in UDP, so charon fakes a NAT and both
# sides float to UDP 4500). charon gets its own strongswan.conf, its own vici socket and a
# private /run (bind mount inside the mount namespace that `ip netns exec` creates), so any
# number of labs can run side by side. charon logs ike/chd at level 4 (keys included) into the
# lab directory: this is a test lab, never a production setup.
#
# Command line (as root):
#   scripts/lab.sh up                       build the lab, start charon (responder); prints
#                                           shell assignments (LAB_DIR=..., NS_OURS=..., ...)
#   scripts/lab.sh down LAB_DIR             stop what the lab started, delete its namespaces
#                                           and the lab directory (KEEP=1 keeps the directory)
#   scripts/lab.sh swanctl LAB_DIR ARGS...  swanctl against the lab's charon
#   scripts/lab.sh exec LAB_DIR ROLE CMD... run CMD in namespace ROLE (hl, ours, sw, hr)
#   scripts/lab.sh gateway-config LAB_DIR INITIATE
#                                           print an ipsec-gateway config for "ours"
#                                           (INITIATE: start, on-traffic or wait); its
#                                           proposals are the default LAB_* ones
#   scripts/lab.sh logs LAB_DIR [LINES]     tail of charon's log
# Environment for `up`: LAB_PREFIX (namespace prefix, default ipgw<pid>), LAB_PSK,
#   LAB_IKE_PROPOSALS (default aes128-sha1-modp2048), LAB_ESP_PROPOSALS (same), LAB_DPD_DELAY
#   (default 0s = off), LAB_DPD_TIMEOUT (default 30s), LAB_CHILD_REKEY_TIME (strongSwan's
#   CHILD_SA rekey_time, default 1h; lower it to test rekeying), LAB_CHILD_LIFE_TIME (its
#   life_time, with no random jitter; default: strongSwan's, 110 % of rekey_time), LAB_AGGRESSIVE (yes: IKEv1
#   Aggressive Mode on both sides; default no = Main Mode), LAB_SW_SUBNETS (the networks
#   behind strongSwan that the tunnel protects, comma-separated: strongSwan's local_ts and
#   gateway-config's remote_subnets; default 10.2.0.0/24; 192.168.10.0/24, the "remote
#   customer network" of the static NAT example, is also reachable behind it), LAB_NO_CHARON=1 (build the
#   namespaces but start no strongSwan: for a second ipsec-gateway as the peer).
#
# As a library: `source scripts/lab.sh` defines the lab_* functions and runs nothing. The caller
# sets its own `trap lab_down EXIT`.
#
# Network rules kept here: outer addresses from the documentation range 192.0.2.0/24, private
# 10.x only inside the namespaces, no traffic leaves them; every wait is bounded.

LAB_CHARON=${LAB_CHARON:-/usr/lib/ipsec/charon}
LAB_ROLES="hl ours sw hr"

lab_say() { printf '[lab %(%T)T] %s\n' -1 "$*" >&2; }

# lab_ns ROLE: the namespace name of ROLE in the current lab.
lab_ns() { echo "$LAB_PREFIX-$1"; }

# lab_load LAB_DIR: reads the state written by lab_up (LAB_PREFIX, NS_*, CHARON_PID, ...).
lab_load() {
    local dir=${1:?lab directory}
    [ -f "$dir/lab.env" ] || { lab_say "$dir is not a lab directory (no lab.env)"; return 1; }
    # shellcheck source=/dev/null
    . "$dir/lab.env"
}

# lab_track_pid PID: `lab_down` will stop PID (only processes the lab's users started).
lab_track_pid() { echo "$1" >> "$LAB_DIR/pids"; }

# ------------------------------------------------------------------ topology --
lab_topology() {
    local r
    for r in $LAB_ROLES; do
        if ip netns list | grep -qw "$(lab_ns "$r")"; then
            lab_say "namespace $(lab_ns "$r") already exists (stale lab?): ip netns del $(lab_ns "$r")"
            return 1
        fi
    done
    for r in $LAB_ROLES; do
        ip netns add "$(lab_ns "$r")" || return 1
        echo "$(lab_ns "$r")" >> "$LAB_DIR/namespaces"
        ip -n "$(lab_ns "$r")" link set lo up
    done

    local ours sw hl hr
    ours=$(lab_ns ours) sw=$(lab_ns sw) hl=$(lab_ns hl) hr=$(lab_ns hr)
    # The outer link between the two gateways.
    ip link add wan0 netns "$ours" type veth peer name wan0 netns "$sw"
    ip -n "$ours" addr add 192.0.2.1/24 dev wan0
    ip -n "$sw" addr add 192.0.2.2/24 dev wan0
    # The protected networks: one host namespace behind each gateway.
    ip link add lan0 netns "$ours" type veth peer name eth0 netns "$hl"
    ip link add lan0 netns "$sw" type veth peer name eth0 netns "$hr"
    ip -n "$ours" addr add 10.1.0.1/24 dev lan0
    ip -n "$hl" addr add 10.1.0.10/24 dev eth0
    ip -n "$sw" addr add 10.2.0.1/24 dev lan0
    ip -n "$hr" addr add 10.2.0.10/24 dev eth0
    # A second network behind strongSwan, 192.168.10.0/24 with hr at 192.168.10.15: the
    # remote customer address of the static NAT example (10.1.255.92 <-> 192.168.10.15).
    ip -n "$sw" addr add 192.168.10.1/24 dev lan0
    ip -n "$hr" addr add 192.168.10.15/24 dev eth0
    for r in "$ours wan0" "$sw wan0" "$ours lan0" "$sw lan0" "$hl eth0" "$hr eth0"; do
        set -- $r
        ip -n "$1" link set "$2" up
    done
    ip -n "$hl" route add default via 10.1.0.1
    ip -n "$hr" route add default via 10.2.0.1
    ip netns exec "$ours" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$sw" sysctl -qw net.ipv4.ip_forward=1
}

# ---------------------------------------------------------------- strongSwan --
lab_write_strongswan_conf() {
    local d=$LAB_DIR/sw
    mkdir -p "$d/run" "$d"/{x509,x509ca,x509ocsp,x509aa,x509ac,x509crl,pubkey,private,rsa,ecdsa,bliss,pkcs8,pkcs12}
    # strongswan.conf takes exactly one setting per line.
    cat > "$d/strongswan.conf" <<EOF
# charon for the ipsec-gateway interop lab (selected with STRONGSWAN_CONF).
charon {
    # kernel-libipsec before kernel-netlink: userspace ESP over TUN, netlink for routes.
    load_modular = no
    load = random nonce openssl aes sha1 sha2 md5 hmac gmp kdf kernel-libipsec kernel-netlink socket-default vici
    # A responder refuses Aggressive Mode with a PSK unless told otherwise.
    i_dont_care_about_security_and_use_aggressive_mode_psk = $LAB_AGGRESSIVE
    # Lab retransmits: a failure shows within seconds (defaults would take about 2 minutes).
    retransmit_timeout = 1.0
    retransmit_base = 1.4
    retransmit_tries = 3
    keep_alive = 5s
    filelog {
        stderr {
            default = 1
            time_format = %T
        }
        # Level 4 on ike and chd writes SKEYID*, Ka and the ESP keys: lab only.
        lab {
            path = $d/charon.log
            time_format = %T
            flush_line = yes
            default = 1
            ike = 4
            chd = 4
            cfg = 2
            knl = 2
        }
    }
    plugins {
        vici {
            socket = unix://$d/run/charon.vici
        }
    }
}
swanctl {
    load = random openssl pem pkcs1 x509 pubkey
}
EOF
    cat > "$d/swanctl.conf" <<EOF
# strongSwan's side of the lab tunnel: IKEv1 Main Mode, PSK, both IDs are the outer addresses.
connections {
    lab {
        version = 1
        aggressive = $LAB_AGGRESSIVE
        local_addrs = 192.0.2.2
        remote_addrs = 192.0.2.1
        proposals = $LAB_IKE_PROPOSALS
        dpd_delay = $LAB_DPD_DELAY
        dpd_timeout = $LAB_DPD_TIMEOUT
        local {
            auth = psk
            id = 192.0.2.2
        }
        remote {
            auth = psk
            id = 192.0.2.1
        }
        children {
            net {
                mode = tunnel
                local_ts = $LAB_SW_SUBNETS
                remote_ts = 10.1.0.0/24
                # The DH group here is the Quick Mode PFS group.
                esp_proposals = $LAB_ESP_PROPOSALS
                rekey_time = $LAB_CHILD_REKEY_TIME
$( [ -z "${LAB_CHILD_LIFE_TIME:-}" ] || printf '                life_time = %s\n                rand_time = 0s\n' "$LAB_CHILD_LIFE_TIME" )
                dpd_action = clear
                start_action = none
            }
        }
    }
}
secrets {
    ike-lab {
        id-1 = 192.0.2.2
        id-2 = 192.0.2.1
        secret = "$LAB_PSK"
    }
}
EOF
    # The same key for our gateway, in a file only root can read.
    (umask 077 && printf '%s' "$LAB_PSK" > "$LAB_DIR/psk")
}

# lab_swanctl ARGS...: swanctl against the lab's charon.
lab_swanctl() {
    STRONGSWAN_CONF=$LAB_DIR/sw/strongswan.conf swanctl "$@" --uri "unix://$LAB_DIR/sw/run/charon.vici"
}

# lab_start_charon: starts charon in the sw namespace, waits (bounded) for vici, loads the config.
lab_start_charon() {
    local d=$LAB_DIR/sw
    # ip, sh and env all exec, so $! is charon's own PID.
    ip netns exec "$(lab_ns sw)" sh -c 'mount --bind "$1" /run && exec env STRONGSWAN_CONF="$2" "$3"' \
        sh "$d/run" "$d/strongswan.conf" "$LAB_CHARON" > "$d/stdout" 2>&1 < /dev/null &
    CHARON_PID=$!
    echo "CHARON_PID=$CHARON_PID" >> "$LAB_DIR/lab.env"
    lab_track_pid "$CHARON_PID"

    local i
    for i in $(seq 100); do
        lab_swanctl --stats > /dev/null 2>&1 && break
        kill -0 "$CHARON_PID" 2> /dev/null || { lab_say "charon exited:"; cat "$d/stdout" >&2; return 1; }
        sleep 0.05
    done
    [ "$i" -lt 100 ] || { lab_say "charon's vici socket did not come up in 5 s"; return 1; }
    lab_swanctl --load-all --noprompt --file "$d/swanctl.conf" > "$d/load.out" 2>&1 \
        || { lab_say "swanctl --load-all failed:"; cat "$d/load.out" >&2; return 1; }
}

# lab_stop_pid PID [FIRST]: signal FIRST (default INT), then TERM, then KILL, each after a
# bounded wait (3 s) for PID to exit.
lab_stop_pid() {
    local p=$1 sig i
    for sig in "${2:-INT}" TERM KILL; do
        kill -0 "$p" 2> /dev/null || return 0
        kill -"$sig" "$p" 2> /dev/null || true
        for i in $(seq 30); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    done
    wait "$p" 2> /dev/null || true
}

# ----------------------------------------------------------------- lifecycle --
# lab_up: builds the topology and starts charon as responder. Sets LAB_DIR, LAB_PREFIX, NS_*.
lab_up() {
    LAB_PREFIX=${LAB_PREFIX:-ipgw$$}
    LAB_PSK=${LAB_PSK:-ipgw-lab-psk-4f1c2e9a7b}
    LAB_IKE_PROPOSALS=${LAB_IKE_PROPOSALS:-aes128-sha1-modp2048}
    LAB_ESP_PROPOSALS=${LAB_ESP_PROPOSALS:-aes128-sha1-modp2048}
    LAB_DPD_DELAY=${LAB_DPD_DELAY:-0s}
    LAB_DPD_TIMEOUT=${LAB_DPD_TIMEOUT:-30s}
    LAB_CHILD_REKEY_TIME=${LAB_CHILD_REKEY_TIME:-1h}
    LAB_AGGRESSIVE=${LAB_AGGRESSIVE:-no}
    LAB_SW_SUBNETS=${LAB_SW_SUBNETS:-10.2.0.0/24}
    case $LAB_AGGRESSIVE in yes|no) ;; *) lab_say "LAB_AGGRESSIVE must be yes or no"; return 1 ;; esac
    [ "$(id -u)" = 0 ] || { lab_say "the lab needs root (namespaces, veth, TUN)"; return 1; }
    [ -x "$LAB_CHARON" ] || { lab_say "no $LAB_CHARON: run scripts/install-deps.sh"; return 1; }

    LAB_DIR=$(mktemp -d "/tmp/ipsec-lab.$LAB_PREFIX.XXXXXX") || return 1
    chmod 700 "$LAB_DIR"
    : > "$LAB_DIR/pids"
    : > "$LAB_DIR/namespaces"
    NS_HL=$(lab_ns hl) NS_OURS=$(lab_ns ours) NS_SW=$(lab_ns sw) NS_HR=$(lab_ns hr)
    LAB_PSK_FILE=$LAB_DIR/psk CHARON_LOG=$LAB_DIR/sw/charon.log
    cat > "$LAB_DIR/lab.env" <<EOF
LAB_DIR=$LAB_DIR
LAB_PREFIX=$LAB_PREFIX
NS_HL=$NS_HL
NS_OURS=$NS_OURS
NS_SW=$NS_SW
NS_HR=$NS_HR
LAB_PSK_FILE=$LAB_PSK_FILE
CHARON_LOG=$CHARON_LOG
LAB_AGGRESSIVE=$LAB_AGGRESSIVE
LAB_SW_SUBNETS=$LAB_SW_SUBNETS
EOF
    lab_topology || return 1
    lab_write_strongswan_conf || return 1
    if [ "${LAB_NO_CHARON:-0}" = 1 ]; then
        lab_say "LAB_NO_CHARON=1: no strongSwan in $NS_SW (start your own peer there)"
    else
        lab_start_charon || return 1
    fi
}

# lab_down: stops every tracked process (newest first), deletes the namespaces, removes the
# lab directory unless KEEP=1. Safe to call twice and after a partial lab_up.
lab_down() {
    [ -n "${LAB_DIR:-}" ] && [ -d "$LAB_DIR" ] || return 0
    local p n
    if [ -f "$LAB_DIR/pids" ]; then
        for p in $(tac "$LAB_DIR/pids"); do lab_stop_pid "$p"; done
        : > "$LAB_DIR/pids"
    fi
    if [ -f "$LAB_DIR/namespaces" ]; then
        for n in $(cat "$LAB_DIR/namespaces"); do
            p=$(ip netns pids "$n" 2> /dev/null | tr '\n' ' ')
            [ -z "$p" ] || lab_say "namespace $n still has processes we did not start: $p"
            ip netns del "$n" 2> /dev/null || true
        done
        : > "$LAB_DIR/namespaces"
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        lab_say "lab directory kept: $LAB_DIR"
    else
        rm -rf "$LAB_DIR"
    fi
}

# lab_gateway_config INITIATE: an ipsec-gateway config matching the lab's strongSwan.
lab_gateway_config() {
    local initiate=${1:-start}
    cat <<EOF
# ipsec-gateway config for the lab's "ours" namespace (written by scripts/lab.sh).
[gateway]
tun_name = "ipgw0"
control_socket = "$LAB_DIR/ipsec-gateway.sock"
# Lab values, like charon's: a failure shows within seconds.
retransmit = { initial_ms = 500, max_interval_ms = 2000, tries = 3 }

[[tunnel]]
name = "lab"
local_address = "192.0.2.1"
remote_address = "192.0.2.2"
initiate = "$initiate"
local_subnets = ["10.1.0.0/24"]
remote_subnets = [$(printf '%s\n' "${LAB_SW_SUBNETS:-10.2.0.0/24}" | sed 's/[^,][^,]*/"&"/g; s/,/, /g')]
psk = { file = "$LAB_DIR/psk" }

[tunnel.phase1]
mode = "$( [ "${LAB_AGGRESSIVE:-no}" = yes ] && echo aggressive || echo main )"
encryption = ["aes128"]
authentication = ["sha1"]
dh_group = [14]
lifetime_seconds = 28800
local_id = "192.0.2.1"
remote_id = "192.0.2.2"

[tunnel.phase2]
encryption = ["aes128"]
authentication = ["sha1"]
pfs_group = 14
lifetime_seconds = 3600

[tunnel.dpd]
delay_seconds = 10
timeout_seconds = 30
action = "restart"
EOF
}

# --------------------------------------------------------------------- main --
lab_main() {
    set -Eeuo pipefail
    local cmd=${1:-}
    shift || true
    case $cmd in
        up)
            # On failure, undo what was built; on success the lab stays up for `down`.
            if ! lab_up; then
                lab_down
                exit 1
            fi
            cat "$LAB_DIR/lab.env"
            ;;
        down)
            lab_load "${1:?usage: lab.sh down LAB_DIR}"
            lab_down
            ;;
        swanctl)
            lab_load "${1:?usage: lab.sh swanctl LAB_DIR ARGS...}"
            shift
            lab_swanctl "$@"
            ;;
        exec)
            lab_load "${1:?usage: lab.sh exec LAB_DIR ROLE CMD...}"
            local role=${2:?role: hl ours sw hr}
            shift 2
            exec ip netns exec "$(lab_ns "$role")" "$@"
            ;;
        gateway-config)
            lab_load "${1:?usage: lab.sh gateway-config LAB_DIR INITIATE}"
            lab_gateway_config "${2:-start}"
            ;;
        logs)
            lab_load "${1:?usage: lab.sh logs LAB_DIR [LINES]}"
            tail -n "${2:-60}" "$LAB_DIR/sw/charon.log"
            ;;
        *)
            sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
            exit 2
            ;;
    esac
}

# Run only when executed, not when sourced.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    lab_main "$@"
fi
