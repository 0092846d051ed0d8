#!/usr/bin/env bash
# Pull speed from a local registry: `sbox image pull` (download, digest
# checks; the image is unpacked at its first use) against `skopeo copy` of
# the same image into a directory (download and digest checks) and against
# `skopeo copy` + `umoci unpack --rootless` (download and unpacking, as
# podman does it). bench/image.sh times the first use, pull and run.
#
#   bench/pull.sh [--runs N] [DIR...]
#
# The image has one gzip layer per DIR (default: /usr/lib/python3,
# /usr/share/perl, /usr/lib/x86_64-linux-gnu/perl-base; missing ones are
# skipped). Needs docker-registry, skopeo, umoci, python3. Each run starts
# from an empty store / directory. Environment: SBOX=PATH (default: the
# release build, built with cargo if missing), RUNS=N (default 5).
#
# Not a test: it prints the median wall time of each, in ms.
set -euo pipefail

PROG=bench/pull.sh
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

RUNS=${RUNS:-5}
dirs=()
while (($#)); do
  case $1 in
    --runs)
      (($# >= 2)) || die "--runs needs a number"
      RUNS=$2
      shift 2
      ;;
    -h | --help)
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      dirs+=("$1")
      shift
      ;;
  esac
done
((${#dirs[@]})) || dirs=(/usr/lib/python3 /usr/share/perl /usr/lib/x86_64-linux-gnu/perl-base)
for t in docker-registry skopeo umoci python3; do
  command -v "$t" >/dev/null || die "$t is not installed"
done
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
sbox_binary

work=$(mktemp -d)
reg_pid=
cleanup() {
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null && wait "$reg_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# The image, as an OCI layout.
python3 - "$work/layout" "${dirs[@]}" <<'PY'
import hashlib, json, os, subprocess, sys
out, srcs = sys.argv[1], [d for d in sys.argv[2:] if os.path.isdir(d)]
os.makedirs(out + "/blobs/sha256")
def put(b):
    d = hashlib.sha256(b).hexdigest()
    open(f"{out}/blobs/sha256/{d}", "wb").write(b)
    return {"digest": "sha256:" + d, "size": len(b)}
layers, diffs = [], []
for s in srcs:
    tar = subprocess.run(["tar", "--numeric-owner", "-C", s, "-cf", "-", "."],
                         capture_output=True, check=True).stdout
    gz = subprocess.run(["gzip", "-n", "-6"], input=tar, capture_output=True, check=True).stdout
    diffs.append("sha256:" + hashlib.sha256(tar).hexdigest())
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(gz)})
cfg = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": diffs}}).encode())
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
                  "layers": layers}).encode()
m = put(man)
open(out + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
open(out + "/index.json", "w").write(json.dumps({"schemaVersion": 2, "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", **m,
     "annotations": {"org.opencontainers.image.ref.name": "1"}}]}))
print(f"image: {len(layers)} layers, {sum(l['size'] for l in layers) / 1e6:.1f} MB compressed")
PY

start_registry "$work"
ref=127.0.0.1:$port/bench/pull:1
skopeo copy -q --dest-tls-verify=false "oci:$work/layout:1" "docker://$ref"

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }

# Each run starts empty; the removal is not timed.
clear_sbox() {
  rm -rf "$work/home"
  mkdir -p "$work/home"
}
run_sbox() {
  HOME=$work/home XDG_DATA_HOME=$work/home/data XDG_CONFIG_HOME=$work/home/config \
    "$SBOX" image pull -q "$ref" >/dev/null
}
clear_skopeo() { rm -rf "$work/dir"; }
run_skopeo() {
  skopeo copy -q --src-tls-verify=false "docker://$ref" "dir:$work/dir"
}
clear_umoci() { rm -rf "$work/oci" "$work/bundle"; }
run_umoci() {
  skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/oci:1"
  umoci unpack --rootless --image "$work/oci:1" "$work/bundle" >/dev/null
}

printf '%-44s %10s\n' "what (median of $RUNS)" "ms"
for what in skopeo umoci sbox; do
  "clear_$what"
  "run_$what" # warm-up
  times=()
  for _ in $(seq "$RUNS"); do
    "clear_$what"
    sync
    t0=$(now)
    "run_$what"
    times+=($((($(now) - t0) / 1000000)))
  done
  case $what in
    skopeo) label="skopeo copy docker:// dir:" ;;
    umoci) label="skopeo copy docker:// oci: + umoci unpack" ;;
    sbox) label="sbox image pull" ;;
  esac
  printf '%-44s %10s\n' "$label" "$(printf '%s\n' "${times[@]}" | median)"
done
