#!/usr/bin/env bash
# Network benchmark of sbox: TCP throughput from a server inside a
# --net user sandbox to the host through a published port (-p), against the
# same transfer over the host's loopback; then outbound, a client inside
# downloading from a server on the host's loopback through sbox's forwarder
# (--allow-net host.sbox.internal:PORT) and through pasta (--net user
# --allow-host-loopback), with the connections per second each opens.
# Startup costs of --net none and --net user are in bench/launch.sh.
#
#   bench/net.sh            (as root it re-runs itself as $SBOX_BENCH_USER)
#
# HTTP (python3 -m http.server and curl) and, when socat is installed, raw
# TCP (socat to socat).
#
# Environment: SBOX=PATH (default: the release build), SIZE_MB (default 1024),
# SBOX_BENCH_USER (default sboxtest). Traffic stays on 127.0.0.1.
set -euo pipefail
PROG=bench/net.sh
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
SIZE_MB=${SIZE_MB:-1024}
[[ $SIZE_MB =~ ^[0-9]+$ ]] || die "SIZE_MB: not a number"
for tool in python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found: sudo apt-get install $tool"
done
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
sbox_binary
if [ "$(id -u)" -eq 0 ]; then
  bench_stage "${BASH_SOURCE[0]}"
  trap 'rm -rf -- "$stage"' EXIT
  set +e
  setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- \
    env -i HOME="$home" USER="$user" LOGNAME="$user" \
    PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 SBOX="$stage/sbox" \
    SIZE_MB="$SIZE_MB" SBOX_BENCH_REEXEC=1 bash "$stage/net.sh"
  rc=$?
  set -e
  exit "$rc"
fi

work=$(mktemp -d /tmp/sbox-netbench.XXXXXX)
cleanup() {
  [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null
  [ -n "${box:-}" ] && kill "$box" 2>/dev/null
  [ -n "${conn_srv:-}" ] && kill "$conn_srv" 2>/dev/null
  wait 2>/dev/null
  rm -rf -- "$work"
}
trap cleanup EXIT
cd "$work"
head -c "$((SIZE_MB << 20))" /dev/zero >blob
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
fetch() { # URL → MB/s
  local t0 t1
  t0=$(date +%s.%N)
  curl -s -o /dev/null --max-time 600 "$1" || die "download of $1 failed"
  t1=$(date +%s.%N)
  python3 -c "print(f'{$SIZE_MB/($t1-$t0):.0f}')"
}
wait_port() { for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.05; done; die "nothing answers on port $1"; }

p1=$(free_port)
python3 -m http.server "$p1" --bind 127.0.0.1 >/dev/null 2>&1 &
srv=$!
wait_port "$p1"
host=$(fetch "http://127.0.0.1:$p1/blob")
kill "$srv"; wait "$srv" 2>/dev/null || true; srv=

p2=$(free_port)
"$SBOX" run --net user -p "$p2:8000" -- python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &
box=$!
wait_port "$p2"
sandbox=$(fetch "http://127.0.0.1:$p2/blob")
kill "$box"; wait "$box" 2>/dev/null || true; box=

# Raw TCP with socat (less CPU spent in the sender than python's server).
raw_host=- raw_box=-
if command -v socat >/dev/null 2>&1; then
  raw() { # port → MB/s, reading everything the listener sends
    local t0 t1
    t0=$(date +%s.%N)
    socat -u "TCP:127.0.0.1:$1" - | wc -c >/dev/null
    t1=$(date +%s.%N)
    python3 -c "print(f'{$SIZE_MB/($t1-$t0):.0f}')"
  }
  p3=$(free_port)
  socat -u "FILE:$work/blob" "TCP-LISTEN:$p3,reuseaddr" &
  srv=$!
  sleep 0.3
  raw_host=$(raw "$p3")
  wait "$srv" 2>/dev/null || true; srv=
  p4=$(free_port)
  "$SBOX" run --net user -p "$p4:9000" -- socat -u "FILE:$work/blob" TCP-LISTEN:9000,reuseaddr >/dev/null 2>&1 &
  box=$!
  for _ in $(seq 200); do
    (echo >"/dev/tcp/127.0.0.1/$p4") 2>/dev/null && break
    sleep 0.05
  done
  # The probe above took the listener's one connection: start it again.
  wait "$box" 2>/dev/null || true
  "$SBOX" run --net user -p "$p4:9000" -- socat -u "FILE:$work/blob" TCP-LISTEN:9000,reuseaddr >/dev/null 2>&1 &
  box=$!
  sleep 1.5
  raw_box=$(raw "$p4")
  wait "$box" 2>/dev/null || true; box=
fi

# Outbound: a client inside, the server on the host's loopback.
p5=$(free_port)
python3 -m http.server "$p5" --bind 127.0.0.1 >/dev/null 2>&1 &
srv=$!
wait_port "$p5"
p6=$(free_port)
python3 -c '
import socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(512)
while True:
    c, _ = l.accept(); c.sendall(b"x"); c.close()
' "$p6" >/dev/null 2>&1 &
conn_srv=$!
inside() { # sbox options… → MB/s of the download, connections/s
  "$SBOX" run "$@" -- sh -c '
    t0=$(date +%s.%N)
    curl -s -o /dev/null --max-time 600 "http://host.sbox.internal:$0/blob" || exit 1
    t1=$(date +%s.%N)
    python3 -c "
import socket, time
n = 1000
t = time.monotonic()
for _ in range(n):
    s = socket.create_connection((\"host.sbox.internal\", $1))
    while s.recv(64): pass
    s.close()
print(f\"{$2/($t1-$t0):.0f} {n/(time.monotonic()-t):.0f}\")
"' "$p5" "$p6" "$SIZE_MB"
}
read -r out_fwd cps_fwd < <(inside --allow-net "host.sbox.internal:$p5,$p6")
read -r out_pasta cps_pasta < <(inside --net user --allow-host-loopback)
cps_host=$(python3 -c "
import socket, time
n = 1000
t = time.monotonic()
for _ in range(n):
    s = socket.create_connection(('127.0.0.1', $p6))
    while s.recv(64): pass
    s.close()
print(f'{n/(time.monotonic()-t):.0f}')
")
kill "$srv" "$conn_srv"; wait "$srv" "$conn_srv" 2>/dev/null || true; srv= conn_srv=

printf '\n%-44s %12s %12s\n' "transfer of ${SIZE_MB} MiB, MB/s" "HTTP" "raw TCP"
printf '%-44s %12s %12s\n' "host loopback" "$host" "$raw_host"
printf '%-44s %12s %12s\n' "--net user, published port" "$sandbox" "$raw_box"
python3 -c "print(f'ratio sandbox / host loopback, HTTP: {$sandbox/$host:.2f}')"
[ "$raw_box" = - ] || python3 -c "print(f'ratio sandbox / host loopback, raw TCP: {$raw_box/$raw_host:.2f}')"

printf '\n%-44s %12s %12s\n' "outbound, client inside" "HTTP MB/s" "conn/s"
printf '%-44s %12s %12s\n' "host loopback (no sandbox)" "$host" "$cps_host"
printf '%-44s %12s %12s\n' "--allow-net, sbox's forwarder" "$out_fwd" "$cps_fwd"
printf '%-44s %12s %12s\n' "--net user --allow-host-loopback, pasta" "$out_pasta" "$cps_pasta"
