#!/usr/bin/env bash
# Network benchmark of sbox.
#
# Inbound: 1 GiB from a server inside a --net user sandbox to the host
# through a published port (-p), against the same transfer over the host's
# loopback.
# Outbound: a client inside downloads 1 GiB from a server on the host's
# loopback, through sbox's forwarder (--allow-net host.sbox.internal:PORT)
# and through pasta (--net user --allow-host-loopback), against the same
# client on the host; then it opens 1000 connections one after the other
# (connections per second, which is what setting one up costs).
# Startup costs of --net none and --net user are in bench/launch.sh.
#
#   bench/net.sh            (as root it re-runs itself as $SBOX_BENCH_USER)
#
# Each transfer is made over HTTP (bench/netpeer.py's server, curl) and over
# raw TCP (netpeer.py to netpeer.py). The senders use sendfile(2), so the
# sender's own copying is not what limits a path. The outbound paths are
# measured in ROUNDS rounds, each path in turn, and the table gives the
# medians; each round's figures are printed as they come.
#
# Environment: SBOX=PATH (default: the release build), SIZE_MB (default
# 1024), ROUNDS (default 3), SBOX_BENCH_USER (default sboxtest). Traffic
# stays on 127.0.0.1. MB/s are MiB per second.
set -euo pipefail
PROG=bench/net.sh
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
SIZE_MB=${SIZE_MB:-1024}
ROUNDS=${ROUNDS:-3}
[[ $SIZE_MB =~ ^[1-9][0-9]*$ ]] || die "SIZE_MB: not a positive number"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS: not a positive number"
for tool in python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found: sudo apt-get install $tool"
done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"
sbox_binary
if [ "$(id -u)" -eq 0 ]; then
  bench_stage "${BASH_SOURCE[0]}" "$here/netpeer.py"
  trap 'rm -rf -- "$stage"' EXIT
  set +e
  setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- \
    env -i HOME="$home" USER="$user" LOGNAME="$user" \
    PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 SBOX="$stage/sbox" \
    SIZE_MB="$SIZE_MB" ROUNDS="$ROUNDS" SBOX_BENCH_REEXEC=1 bash "$stage/net.sh"
  rc=$?
  set -e
  exit "$rc"
fi

work=$(mktemp -d /tmp/sbox-netbench.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf -- "$work"
}
trap cleanup EXIT
# The sandbox sees $work as its project directory (the current one).
cd "$work"
cp "$here/netpeer.py" .
head -c "$((SIZE_MB << 20))" /dev/zero >blob
peer() { python3 "$work/netpeer.py" "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$1/netpeer.py" && return 0; sleep 0.05; done; die "no HTTP server answers on port $1"; }
wait_raw() { for _ in $(seq 200); do peer ready 127.0.0.1 "$1" && return 0; sleep 0.05; done; die "nothing sends on port $1"; }
# The client side of one path, run by "$@" (nothing, or sbox run …) with
# the server's address: HTTP MB/s, raw MB/s and connections/s on a line.
clients() {
  local host=$1 http=$2 raw=$3 conn=$4
  shift 4
  "$@" sh -c '
    t0=$(date +%s.%N)
    curl -s -o /dev/null --max-time 600 "http://$0:$1/blob" || exit 1
    t1=$(date +%s.%N)
    python3 -c "print(f\"{$4/($t1-$t0):.0f}\", end=\" \")"
    python3 netpeer.py get "$0" "$2" | tr "\n" " "
    python3 netpeer.py connect "$0" "$3" 1000' "$host" "$http" "$raw" "$conn" "$SIZE_MB"
}
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : int((v[NR/2]+v[NR/2+1])/2)}'; }

# Inbound: servers inside a --net user sandbox, published on the host.
p=$(free_port) q=$(free_port)
peer http "$p" "$work" >/dev/null 2>&1 & pids+=($!)
peer blob "$q" "$work/blob" >/dev/null 2>&1 & pids+=($!)
wait_http "$p"; wait_raw "$q"
t0=$(date +%s.%N); curl -s -o /dev/null "http://127.0.0.1:$p/blob"; t1=$(date +%s.%N)
in_host_http=$(python3 -c "print(f'{$SIZE_MB/($t1-$t0):.0f}')")
in_host_raw=$(peer get 127.0.0.1 "$q")
kill "${pids[@]}"; wait 2>/dev/null || true; pids=()
p=$(free_port) q=$(free_port)
"$SBOX" run --net user -p "$p:8000" -p "$q:9000" -- sh -c \
  'python3 netpeer.py http 8000 . & exec python3 netpeer.py blob 9000 blob' >/dev/null 2>&1 &
pids+=($!)
wait_http "$p"; wait_raw "$q"
t0=$(date +%s.%N); curl -s -o /dev/null "http://127.0.0.1:$p/blob"; t1=$(date +%s.%N)
in_box_http=$(python3 -c "print(f'{$SIZE_MB/($t1-$t0):.0f}')")
in_box_raw=$(peer get 127.0.0.1 "$q")
kill "${pids[@]}"; wait 2>/dev/null || true; pids=()

# Outbound: servers on the host's loopback, clients inside.
ph=$(free_port) pr=$(free_port) pc=$(free_port)
peer http "$ph" "$work" >/dev/null 2>&1 & pids+=($!)
peer blob "$pr" "$work/blob" >/dev/null 2>&1 & pids+=($!)
peer byte "$pc" >/dev/null 2>&1 & pids+=($!)
wait_http "$ph"; wait_raw "$pr"; wait_raw "$pc"
declare -A got
paths=(host fwd pasta)
for r in $(seq "$ROUNDS"); do
  read -r a b c < <(clients 127.0.0.1 "$ph" "$pr" "$pc")
  got[host]+=" $a/$b/$c"
  read -r a b c < <(clients host.sbox.internal "$ph" "$pr" "$pc" \
    "$SBOX" run --allow-net "host.sbox.internal:$ph,$pr,$pc" --)
  got[fwd]+=" $a/$b/$c"
  read -r a b c < <(clients host.sbox.internal "$ph" "$pr" "$pc" \
    "$SBOX" run --net user --allow-host-loopback --)
  got[pasta]+=" $a/$b/$c"
  echo "round $r (HTTP MB/s / raw MB/s / conn/s): host ${got[host]##* }, forwarder ${got[fwd]##* }, pasta ${got[pasta]##* }" >&2
done
# shellcheck disable=SC2086
column_of() { local k=$1 i=$2; median $(printf '%s\n' ${got[$k]} | cut -d/ -f"$i"); }
declare -A med
for k in "${paths[@]}"; do
  for i in 1 2 3; do med[$k.$i]=$(column_of "$k" "$i"); done
done

printf '\n%-44s %12s %12s\n' "inbound, ${SIZE_MB} MiB, MB/s" "HTTP" "raw TCP"
printf '%-44s %12s %12s\n' "host loopback" "$in_host_http" "$in_host_raw"
printf '%-44s %12s %12s\n' "--net user, published port" "$in_box_http" "$in_box_raw"
python3 -c "print(f'ratio sandbox / host loopback: HTTP {$in_box_http/$in_host_http:.2f}, raw TCP {$in_box_raw/$in_host_raw:.2f}')"

printf '\n%-44s %12s %12s %12s\n' "outbound, median of $ROUNDS rounds" "HTTP MB/s" "raw MB/s" "conn/s"
printf '%-44s %12s %12s %12s\n' "host loopback (no sandbox)" "${med[host.1]}" "${med[host.2]}" "${med[host.3]}"
printf '%-44s %12s %12s %12s\n' "--allow-net, sbox's forwarder" "${med[fwd.1]}" "${med[fwd.2]}" "${med[fwd.3]}"
printf '%-44s %12s %12s %12s\n' "--net user --allow-host-loopback, pasta" "${med[pasta.1]}" "${med[pasta.2]}" "${med[pasta.3]}"
python3 -c "print(f'ratio forwarder / pasta: HTTP {${med[fwd.1]}/${med[pasta.1]}:.2f}, raw TCP {${med[fwd.2]}/${med[pasta.2]}:.2f}, conn/s {${med[fwd.3]}/${med[pasta.3]}:.2f}')"
