#!/usr/bin/env bash
# Launch overhead of sbox, against bubblewrap at comparable isolation and
# against plain `true`, measured with hyperfine as an unprivileged user.
#
#   bench/launch.sh [--warmup N] [--runs N]
#
# Environment:
#   SBOX=PATH            the sbox binary (default: the release build, built
#                        with cargo if it is missing)
#   WARMUP=N, RUNS=N     hyperfine's --warmup and --runs (default 5 and 50)
#   SBOX_BENCH_USER=NAME the user to run as when started as root (default
#                        sboxtest); it needs a /etc/subuid range for sbox to
#                        map ids as it normally does
#
# Not a test: it prints a table (mean ms ± stddev) and the ratio sbox/bwrap.
set -euo pipefail

PROG=bench/launch.sh
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

WARMUP=${WARMUP:-5}
RUNS=${RUNS:-50}
while (($#)); do
  case $1 in
    --warmup)
      (($# >= 2)) || die "--warmup needs a number"
      WARMUP=$2
      shift 2
      ;;
    --runs)
      (($# >= 2)) || die "--runs needs a number"
      RUNS=$2
      shift 2
      ;;
    -h | --help)
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup: not a number: $WARMUP"
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 2 ]] || die "--runs: need a number >= 2: $RUNS"

for tool in hyperfine bwrap python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    case $tool in
      hyperfine) pkg=hyperfine ;;
      bwrap) pkg=bubblewrap ;;
      python3) pkg=python3 ;;
    esac
    die "$tool not found: install it with: sudo apt-get install $pkg"
  fi
done

# -------------------------------------------------------- the sbox binary

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
sbox_binary

# ------------------------------------------- as root: again, unprivileged

if [ "$(id -u)" -eq 0 ]; then
  bench_stage "${BASH_SOURCE[0]}"
  trap 'rm -rf -- "$stage"' EXIT
  echo "Running as $user (binary copied to $stage)" >&2
  set +e
  setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- \
    env -i HOME="$home" USER="$user" LOGNAME="$user" \
    PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
    SBOX="$stage/sbox" WARMUP="$WARMUP" RUNS="$RUNS" SBOX_BENCH_REEXEC=1 \
    bash "$stage/launch.sh"
  rc=$?
  set -e
  exit "$rc"
fi

# ------------------------------------------------------------ the bench

work=$(mktemp -d /tmp/sbox-bench.XXXXXX)
trap 'rm -rf -- "$work"' EXIT
project=$work/project
mkdir "$project"
cd "$project"
json=$work/results.json

BWRAP="bwrap --unshare-all --die-with-parent --new-session --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp true"
# bwrap's line above is the same isolation as `--overlay none --net none`
# (host read-only, own network namespace); the FUSE root adds
# copy-on-write of the whole host, which bwrap does not offer.
names=("sbox run -- true" "sbox run --net none -- true" "sbox run --net user -- true"
  "sbox run --overlay none --net none -- true" "bwrap --unshare-all ... true" "true")
cmds=("$SBOX run -- true" "$SBOX run --net none -- true" "$SBOX run --net user -- true"
  "$SBOX run --overlay none --net none -- true" "$BWRAP" "true")

# Each command once first, so that a failure shows its own message.
for i in "${!cmds[@]}"; do
  # shellcheck disable=SC2086 # the commands are word lists on purpose
  if ! out=$(${cmds[$i]} 2>&1); then
    die "${names[$i]} fails here: ${out:-no message} (as $(id -un); see sbox doctor)"
  fi
done

echo "sbox: $("$SBOX" --version) ($SBOX), as $(id -un) in $project" >&2
echo "kernel $(uname -r), $(nproc) CPUs, hyperfine --warmup $WARMUP --runs $RUNS" >&2

args=(--shell=none --warmup "$WARMUP" --runs "$RUNS" --style basic --export-json "$json")
for i in "${!cmds[@]}"; do
  args+=(--command-name "${names[$i]}" "${cmds[$i]}")
done
hyperfine "${args[@]}" >&2

python3 - "$json" <<'EOF'
import json, sys

results = json.load(open(sys.argv[1]))["results"]
by_name = {r["command"]: r for r in results}
width = max(len(r["command"]) for r in results)
print()
print(f"{'command':<{width}}  {'mean ms':>9}  {'± stddev':>9}  {'min ms':>8}  {'max ms':>8}")
for r in results:
    print(f"{r['command']:<{width}}  {r['mean'] * 1e3:9.2f}  {r['stddev'] * 1e3:9.2f}"
          f"  {r['min'] * 1e3:8.2f}  {r['max'] * 1e3:8.2f}")
bwrap = by_name["bwrap --unshare-all ... true"]["mean"]
host = by_name["sbox run -- true"]["mean"]
print()
for name in ("sbox run --net none -- true", "sbox run --net user -- true"):
    print(f"{name}: {(by_name[name]['mean'] - host) * 1e3:+.2f} ms over the host network")
print()
for name in ("sbox run -- true", "sbox run --net none -- true",
             "sbox run --overlay none --net none -- true"):
    print(f"ratio {name} / bwrap: {by_name[name]['mean'] / bwrap:.2f}")
EOF
