#!/usr/bin/env bash
# Filesystem cost of the sandbox's root, as an unprivileged user, on one
# machine in one run: the native host, kernel overlayfs in a user namespace
# (`sbox run --overlay kernel`), fuse-overlayfs (lower = the host /, in
# `unshare -Urm`, chrooted into its mount) and sbox's FUSE root (`sbox run`).
#
#   bench/fs.sh [--runs N] [--files N] [--sources N] [--envs LIST] [--rows LIST]
#
# Rows: (a) untar N small files (default 10000) into a lower-layer
# directory; (b) `find | xargs stat` over /usr/share, warm and cold; (c)
# `grep -r` over /usr/include; (d) read a 1 GiB file; (e) `make -j2` of a
# generated C project (default 300 files) whose sources are in the bound
# project directory while compiler and headers come through the root.
# Times are measured inside each environment (sandbox start-up excluded);
# each row is the median of --runs runs (default 3; the build runs once).
# --envs picks environments (comma-separated: native, kernel, fuse-overlayfs,
# sbox-fuse, sbox-none; native always runs) and --rows picks rows by letter
# (e.g. b,c). sbox-none is `sbox run --overlay none`: the host read-only, no
# overlay, the same confinement (Landlock, seccomp, namespaces), so the
# columns tell the overlay's cost from the sandbox's; it cannot untar into
# the read-only host (row a fails there).
# Cold runs drop the page cache first, which needs root: started as root,
# the script keeps a small root helper for that and re-runs itself as the
# user; otherwise "cold" is a fresh sandbox on a warm host cache.
#
# Environment:
#   SBOX=PATH            the sbox binary (default: the release build, built
#                        with cargo if it is missing)
#   SBOX_BENCH_USER=NAME the user to run as when started as root (default
#                        sboxtest, which needs a /etc/subuid range)
#   FUSE_OVERLAYFS=PATH  fuse-overlayfs (default: from PATH; the row is
#                        skipped with a note when it is missing)
#
# Not a test: it prints a table of seconds and the ratio to native.
set -euo pipefail

PROG=bench/fs.sh
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}
note() { printf '%s\n' "$*" >&2; }

RUNS=${RUNS:-3}
FILES=${FILES:-10000}
SOURCES=${SOURCES:-300}
ONLY_ENVS=${ONLY_ENVS:-}
ONLY_ROWS=${ONLY_ROWS:-}
while (($#)); do
  case $1 in
    --envs | --rows)
      (($# >= 2)) || die "$1 needs a list"
      [[ $2 =~ ^[a-z,-]+$ ]] || die "$1: not a comma-separated list: $2"
      if [ "$1" = --envs ]; then ONLY_ENVS=$2; else ONLY_ROWS=$2; fi
      shift 2
      ;;
    --runs | --files | --sources)
      (($# >= 2)) || die "$1 needs a number"
      [[ $2 =~ ^[0-9]+$ && $2 -ge 1 ]] || die "$1: not a positive number: $2"
      case $1 in
        --runs) RUNS=$2 ;;
        --files) FILES=$2 ;;
        --sources) SOURCES=$2 ;;
      esac
      shift 2
      ;;
    -h | --help)
      sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done

for tool in tar find xargs stat grep gcc make python3 unshare chroot; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian: apt-get install tar findutils grep gcc make python3 util-linux coreutils)"
done

# -------------------------------------------------------- the sbox binary

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
sbox_binary

# ------------------------------------------- as root: again, unprivileged

if [ "$(id -u)" -eq 0 ]; then
  bench_stage "${BASH_SOURCE[0]}" "$(dirname "${BASH_SOURCE[0]}")/cproject.py"
  dropper=
  cleanup() {
    [ -z "$dropper" ] || kill "$dropper" 2>/dev/null || true
    rm -rf -- "$stage"
  }
  trap cleanup EXIT
  # The cache dropper: the user's run writes to drop.req, we drop the page
  # cache and answer on drop.ack.
  mkfifo -m 0600 "$stage/drop.req" "$stage/drop.ack"
  chown "$user" "$stage/drop.req" "$stage/drop.ack"
  (
    while read -r _ <"$stage/drop.req"; do
      sync
      echo 3 >/proc/sys/vm/drop_caches || true
      echo done >"$stage/drop.ack"
    done
  ) &
  dropper=$!
  note "Running as $user (binary copied to $stage; page cache dropped by root on request)"
  set +e
  setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- \
    env -i HOME="$home" USER="$user" LOGNAME="$user" \
    PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8 \
    SBOX="$stage/sbox" RUNS="$RUNS" FILES="$FILES" SOURCES="$SOURCES" \
    ONLY_ENVS="$ONLY_ENVS" ONLY_ROWS="$ONLY_ROWS" \
    FUSE_OVERLAYFS="${FUSE_OVERLAYFS:-}" SBOX_BENCH_REEXEC=1 \
    SBOX_BENCH_DROP="$stage/drop" \
    bash "$stage/fs.sh"
  rc=$?
  set -e
  exit "$rc"
fi

# ------------------------------------------------------------ the set-up

FOVL=${FUSE_OVERLAYFS:-$(command -v fuse-overlayfs || true)}
drop_caches() {
  if [ -n "${SBOX_BENCH_DROP:-}" ]; then
    echo x >"$SBOX_BENCH_DROP.req"
    read -r _ <"$SBOX_BENCH_DROP.ack"
  fi
}

# Everything lives in the home directory: in the lower layer of every
# sandbox (not under /tmp, which sandboxes get privately).
base=$(mktemp -d "$HOME/sbox-bench-fs.XXXXXX")
fo_state=$(mktemp -d /tmp/sbox-bench-fo.XXXXXX)
cleanup() {
  chmod -R u+rwX "$base" "$fo_state" 2>/dev/null || true
  rm -rf -- "$base" "$fo_state"
}
trap cleanup EXIT
project=$base/project
mkdir -p "$project" "$base/targets"

note "Preparing: $FILES small files, a 1 GiB file, a C project of $SOURCES files in $base"
python3 - "$base" "$FILES" "$SOURCES" <<'EOF'
import os, sys
base, files, sources = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
src = os.path.join(base, "tree")
per = 100
for i in range(files):
    d = os.path.join(src, f"d{i // per:03}")
    if i % per == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05}.txt"), "w") as f:
        f.write(f"file {i}\n" * (1 + i % 8))
EOF
python3 "$(dirname "${BASH_SOURCE[0]}")/cproject.py" "$project" "$SOURCES"
tar -C "$base/tree" -cf "$base/files.tar" .
rm -rf "$base/tree"
# A real 1 GiB file (not sparse), read warm from the host's page cache.
head -c $((1 << 30)) /dev/urandom >"$base/big"

# ------------------------------------------------------- the environments

ENVS=(native)
for env in kernel fuse-overlayfs sbox-fuse sbox-none; do
  [ -z "$ONLY_ENVS" ] || [[ ,$ONLY_ENVS, == *",$env,"* ]] || continue
  ENVS+=("$env")
done
declare -A ENV_NOTE=()
[ -n "$FOVL" ] && [ -x "$FOVL" ] || ENV_NOTE[fuse-overlayfs]="not installed (apt-get install fuse-overlayfs)"

fo_n=0
# in_env ENV SCRIPT: run SCRIPT with sh in ENV, in the project directory.
in_env() {
  local env=$1 script=$2
  case $env in
    native) (cd "$project" && sh -c "$script") ;;
    kernel) (cd "$project" && "$SBOX" run --overlay kernel -- sh -c "$script") ;;
    sbox-fuse) (cd "$project" && "$SBOX" run --overlay fuse -- sh -c "$script") ;;
    sbox-none) (cd "$project" && "$SBOX" run --overlay none -- sh -c "$script") ;;
    fuse-overlayfs)
      fo_n=$((fo_n + 1))
      local d=$fo_state/$fo_n
      mkdir -p "$d/upper" "$d/work" "$d/mnt"
      # The host / as the lower layer, like the sandboxes; the host's /dev
      # and /proc and the project are bound in, /tmp is a private tmpfs
      # (fuse-overlayfs must never look at its own mount point, which is
      # under the host's /tmp); the command runs chrooted into the mount.
      # Unmounting at the end ends the fuse-overlayfs daemon.
      unshare -Urm sh -c '
        set -e
        "$1" -o "lowerdir=/,upperdir=$2/upper,workdir=$2/work,squash_to_root" "$2/mnt" 2>/dev/null
        for m in dev proc; do mount --rbind "/$m" "$2/mnt/$m"; done
        mount -t tmpfs tmpfs "$2/mnt/tmp"
        mount --bind "$3" "$2/mnt$3"
        rc=0
        chroot "$2/mnt" sh -c "cd \"\$0\" && $4" "$3" || rc=$?
        umount -l "$2/mnt"
        exit $rc
      ' sh "$FOVL" "$d" "$project" "$script"
      chmod -R u+rwX "$d" 2>/dev/null || true
      rm -rf -- "$d"
      ;;
  esac
}

# time_in ENV PREP CMD: seconds CMD takes inside ENV, after PREP (untimed).
time_in() {
  local env=$1 prep=$2 cmd=$3 out
  out=$(in_env "$env" "$prep
s=\$(date +%s%N)
rc=0
( $cmd ) >/dev/null 2>/tmp/sbox-bench-err.\$\$ || rc=\$?
e=\$(date +%s%N)
err=\$(tail -n 2 /tmp/sbox-bench-err.\$\$); rm -f /tmp/sbox-bench-err.\$\$
[ \$rc -eq 0 ] || { echo \"failed (\$rc): \$err\" >&2; exit 1; }
echo BENCHTIME \$(( (e - s) / 1000000 ))") || true
  out=$(printf '%s\n' "$out" | sed -n 's/^BENCHTIME //p' | tail -n 1)
  [ -n "$out" ] || return 1
  awk -v ms="$out" 'BEGIN { printf "%.3f\n", ms / 1000 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }

# The rows: name, runs, cold (drop caches first), prep, timed command.
ROWS=()
row() {
  if [ -n "$ONLY_ROWS" ]; then
    local letter=${1:1:1}
    [[ ,$ONLY_ROWS, == *",$letter,"* ]] || return 0
  fi
  ROWS+=("$1"$'\x1f'"$2"$'\x1f'"$3"$'\x1f'"$4"$'\x1f'"$5"); }
row "(a) untar $FILES files" "$RUNS" 0 ":" \
  "d=$base/targets/t\$(date +%s%N) && mkdir \$d && tar --no-same-owner -C \$d -xf $base/files.tar && test -e \$d/d000"
# Unreadable directories and vanishing /usr/share entries are not errors.
FINDSTAT="{ find /usr/share -xdev 2>/dev/null | xargs -d '\n' stat >/dev/null 2>&1; } || true"
row "(b) find|xargs stat /usr/share warm" "$RUNS" 0 "$FINDSTAT" "$FINDSTAT"
row "(b) find|xargs stat /usr/share cold" "$RUNS" 1 ":" "$FINDSTAT"
GREP="grep -r -F -e sbox-no-such-string-8d2f /usr/include; test \$? -eq 1"
row "(c) grep -r /usr/include (warm)" "$RUNS" 0 "$GREP" "$GREP"
row "(d) read a 1 GiB file (warm)" "$RUNS" 0 "cat $base/big >/dev/null" "cat $base/big >/dev/null"
row "(e) make -j2, $SOURCES C files" 1 0 "make -s clean" "make -s -j2 && ./prog"

# Every environment must work before anything is measured.
for env in "${ENVS[@]}"; do
  [ -z "${ENV_NOTE[$env]:-}" ] || continue
  if ! out=$(in_env "$env" 'test -r /usr/include/stdio.h && echo works' 2>&1) || [[ $out != *works* ]]; then
    ENV_NOTE[$env]="does not work here: $(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')"
  fi
done
[ -z "${ENV_NOTE[native]:-}" ] || die "the native environment fails: ${ENV_NOTE[native]}"

note "sbox $("$SBOX" --version 2>/dev/null || echo '?') ($SBOX), as $(id -un); kernel $(uname -r), $(nproc) CPUs"
note "cache drop for cold rows: $([ -n "${SBOX_BENCH_DROP:-}" ] && echo 'yes (root helper)' || echo 'no (not started as root): cold = fresh sandbox')"
[ -z "$FOVL" ] || note "fuse-overlayfs: $("$FOVL" --version 2>&1 | head -n 1)"

declare -A T=()
started=$(date +%s)
for r in "${ROWS[@]}"; do
  IFS=$'\x1f' read -r name runs cold prep cmd <<<"$r"
  for env in "${ENVS[@]}"; do
    [ -z "${ENV_NOTE[$env]:-}" ] || continue
    vals=()
    for ((i = 0; i < runs; i++)); do
      # Earlier writes (the 1 GiB file, untarred trees) are flushed first.
      sync
      [ "$cold" = 1 ] && drop_caches
      v=$(time_in "$env" "$prep" "$cmd") || {
        vals=()
        break
      }
      vals+=("$v")
    done
    if ((${#vals[@]})); then
      T[$name/$env]=$(printf '%s\n' "${vals[@]}" | median)
    else
      T[$name/$env]=fail
    fi
    note "  $name / $env: ${vals[*]:-failed}"
  done
  rm -rf -- "${base:?}/targets/"* 2>/dev/null || true
done
note "measured in $(($(date +%s) - started)) s"

# ------------------------------------------------------------- the table

printf '\n%-38s' "seconds (ratio to native)"
for env in "${ENVS[@]}"; do printf '  %-16s' "$env"; done
printf '\n'
for r in "${ROWS[@]}"; do
  IFS=$'\x1f' read -r name _ <<<"$r"
  printf '%-38s' "$name"
  nat=${T[$name/native]:-}
  for env in "${ENVS[@]}"; do
    v=${T[$name/$env]:-}
    if [ -z "$v" ] || [ "$v" = fail ]; then
      printf '  %-16s' "${v:--}"
    elif [ "$env" = native ]; then
      printf '  %-16s' "$v"
    else
      printf '  %-16s' "$v ($(awk -v a="$v" -v b="$nat" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }'))"
    fi
  done
  printf '\n'
done
for env in "${ENVS[@]}"; do
  [ -z "${ENV_NOTE[$env]:-}" ] || printf '%s: %s\n' "$env" "${ENV_NOTE[$env]}"
done
