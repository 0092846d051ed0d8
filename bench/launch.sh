#!/usr/bin/env bash
# Launch overhead of sbox, against bubblewrap at comparable isolation and
# against plain `true`, measured with hyperfine as an unprivileged user.
#
#   bench/launch.sh [--warmup N] [--runs N] [--rounds N]
#
# Environment:
#   SBOX=PATH            the sbox binary (default: the release build, built
#                        with cargo if it is missing)
#   WARMUP=N, RUNS=N     hyperfine's --warmup and the runs of each command
#                        in all (default 5 and 50)
#   ROUNDS=N             the runs are made in N rounds of every command in
#                        turn (default 5), so that a machine that gets
#                        slower or faster meanwhile weighs on all alike
#   SBOX_BENCH_USER=NAME the user to run as when started as root (default
#                        sboxtest); it needs a /etc/subuid range for sbox to
#                        map ids as it normally does
#
# Not a test: it prints a table (mean and median ms, ± stddev, over the
# runs of all rounds) and the ratios sbox/bwrap, of the means and the
# range of the rounds' ratios.
set -euo pipefail

PROG=bench/launch.sh
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

WARMUP=${WARMUP:-5}
RUNS=${RUNS:-50}
ROUNDS=${ROUNDS:-5}
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
    --rounds)
      (($# >= 2)) || die "--rounds needs a number"
      ROUNDS=$2
      shift 2
      ;;
    -h | --help)
      sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup: not a number: $WARMUP"
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 2 ]] || die "--runs: need a number >= 2: $RUNS"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 ]] || die "--rounds: need a number >= 1: $ROUNDS"
# Each round runs every command RUNS/ROUNDS times (at least twice).
per_round=$(((RUNS + ROUNDS - 1) / ROUNDS))
((per_round >= 2)) || per_round=2

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
    SBOX="$stage/sbox" WARMUP="$WARMUP" RUNS="$RUNS" ROUNDS="$ROUNDS" SBOX_BENCH_REEXEC=1 \
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
echo "kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)," \
  "hyperfine --warmup $WARMUP, $ROUNDS round(s) of $per_round runs of each command" >&2

for ((round = 1; round <= ROUNDS; round++)); do
  echo "round $round of $ROUNDS" >&2
  args=(--shell=none --warmup "$WARMUP" --runs "$per_round" --style basic
    --export-json "$work/round-$round.json")
  for i in "${!cmds[@]}"; do
    args+=(--command-name "${names[$i]}" "${cmds[$i]}")
  done
  hyperfine "${args[@]}" >&2
done

python3 - "$work"/round-*.json <<'EOF'
import json, statistics, sys

rounds = [{r["command"]: r["times"] for r in json.load(open(f))["results"]}
          for f in sys.argv[1:]]
names = list(rounds[0])
times = {n: [t for r in rounds for t in r[n]] for n in names}
mean = {n: statistics.fmean(times[n]) for n in names}
width = max(len(n) for n in names)
print()
print(f"{'command':<{width}}  {'mean ms':>8}  {'median':>8}  {'± stddev':>8}  {'min ms':>8}  {'max ms':>8}")
for n in names:
    t = times[n]
    sd = statistics.stdev(t) if len(t) > 1 else 0.0
    print(f"{n:<{width}}  {mean[n] * 1e3:8.2f}  {statistics.median(t) * 1e3:8.2f}"
          f"  {sd * 1e3:8.2f}  {min(t) * 1e3:8.2f}  {max(t) * 1e3:8.2f}")
bwrap = "bwrap --unshare-all ... true"
host = "sbox run -- true"
print(f"({len(times[host])} runs of each, in {len(rounds)} round(s))")
print()
for n in ("sbox run --net none -- true", "sbox run --net user -- true"):
    print(f"{n}: {(mean[n] - mean[host]) * 1e3:+.2f} ms over the host network")
print()
for n in ("sbox run -- true", "sbox run --net none -- true",
          "sbox run --overlay none --net none -- true"):
    per_round = sorted(statistics.fmean(r[n]) / statistics.fmean(r[bwrap]) for r in rounds)
    spread = (f" (rounds {per_round[0]:.2f}-{per_round[-1]:.2f})"
              if len(per_round) > 1 else "")
    print(f"ratio {n} / bwrap: {mean[n] / mean[bwrap]:.2f}{spread}")
EOF
