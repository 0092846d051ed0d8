# Shared by the bench scripts (sourced, not run): finding the sbox binary,
# re-running as the unprivileged bench user, and a local registry. The
# caller defines die() first.

# Sets SBOX to the binary to measure: $SBOX when set, else the release
# build of this tree (built with cargo when it is missing).
sbox_binary() {
  if [ -z "${SBOX:-}" ]; then
    local repo target
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    target=${CARGO_TARGET_DIR:-$repo/target}
    case $target in /*) ;; *) target=$repo/$target ;; esac
    SBOX=$target/release/sbox
    if [ ! -x "$SBOX" ]; then
      command -v cargo >/dev/null 2>&1 || die "$SBOX is missing and cargo is not installed: build sbox or set SBOX=PATH"
      echo "Building $SBOX (cargo build --release --locked)" >&2
      (cd "$repo" && cargo build --release --locked) || die "cargo build --release failed"
    fi
  fi
  [ -x "$SBOX" ] || die "SBOX=$SBOX is not an executable file"
  SBOX=$(realpath "$SBOX")
}

# As root, before running again as the bench user: sets `user` and `home`
# ($SBOX_BENCH_USER, default sboxtest) and `stage`, a new directory
# everyone can read holding the binary, the script SCRIPT, this file and
# the other FILES. The caller removes `stage`.
bench_stage() {
  [ -z "${SBOX_BENCH_REEXEC:-}" ] || die "still root after switching users"
  user=${SBOX_BENCH_USER:-sboxtest}
  id "$user" >/dev/null 2>&1 || die "user $user does not exist: create it (useradd -m $user; usermod --add-subuids 200000-265535 --add-subgids 200000-265535 $user) or set SBOX_BENCH_USER"
  home=$(getent passwd "$user" | cut -d: -f6)
  stage=$(mktemp -d /tmp/sbox-bench-stage.XXXXXX)
  chmod 0755 "$stage"
  install -m 0755 "$SBOX" "$stage/sbox"
  local f
  for f in "$@" "${BASH_SOURCE[0]}"; do
    install -m 0755 "$f" "$stage/$(basename "$f")"
  done
}

# Starts Debian's docker-registry on a free port of 127.0.0.1 with its
# storage and log in DIR; sets `port` and `reg_pid` (the caller stops it).
start_registry() {
  local dir=$1
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >"$dir/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
http:
  addr: 127.0.0.1:$port
YML
  docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  die "docker-registry did not start: $(tail -3 "$dir/registry.log")"
}
