#!/usr/bin/env bash
# Images side by side: sbox against rootless podman, the same image from
# the same local registry (Debian's docker-registry on 127.0.0.1).
#
#   bench/image.sh [--warmup N] [--runs N] [--build-runs N] [--pull-runs N]
#
#   1. start: `sbox run --image IMG -- true` against `sbox run -- true`
#      (the host's root), `podman run --rm --network none IMG true` and
#      bwrap (reference);
#   2. build: `make -j2` of a generated 300-file C project (bench/fs.sh's)
#      inside `sbox run --image IMG` and inside `podman run IMG`, the
#      project bound read-write in both;
#   3. pull: `sbox image pull` into an empty store against `skopeo copy
#      docker://... dir:...` into an empty directory (neither unpacks: sbox
#      unpacks an image at its first use); and the first use from an empty
#      store, `sbox image pull` + `sbox run --image IMG -- true` against
#      `podman pull` + `podman run` (both download and unpack).
#
# IMG is built from the host's installed Debian packages (gcc-12, make,
# bash, coreutils, libc6-dev and their dependencies: one gzip layer) and
# cached, keyed by the packages' versions, so later runs skip that step.
#
# Environment:
#   SBOX=PATH             the sbox binary (default: the release build, built
#                         with cargo if it is missing)
#   WARMUP=N, RUNS=N      hyperfine's --warmup/--runs for 1 (default 3, 30)
#   BUILD_RUNS=N          runs of 2 (default 3, one warm-up)
#   PULL_RUNS=N           runs of 3 (default 5, one warm-up; the first
#                         use: 3)
#   IMAGE_CACHE=DIR       where the image is cached (default
#                         $XDG_CACHE_HOME/sbox-bench-image or ~/.cache/...)
#   PODMAN_DRIVER=NAME    podman's storage driver (default overlay; vfs)
#   SBOX_BENCH_USER=NAME  the user to run as when started as root (default
#                         sboxtest); it needs a /etc/subuid range
#
# Needs hyperfine, podman, runc, skopeo, docker-registry, bwrap, python3.
# Everything it starts (the registry, podman's pause process, its stores
# and temporary directories) is removed at the end; only IMAGE_CACHE stays.
# Not a test: it prints a table (mean ms ± stddev) and the ratios.
set -euo pipefail

PROG=bench/image.sh
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}
note() { printf '%s: %s\n' "$PROG" "$*" >&2; }

WARMUP=${WARMUP:-3}
RUNS=${RUNS:-30}
BUILD_RUNS=${BUILD_RUNS:-3}
PULL_RUNS=${PULL_RUNS:-5}
while (($#)); do
  case $1 in
    --warmup | --runs | --build-runs | --pull-runs)
      (($# >= 2)) || die "$1 needs a number"
      case $1 in
        --warmup) WARMUP=$2 ;;
        --runs) RUNS=$2 ;;
        --build-runs) BUILD_RUNS=$2 ;;
        --pull-runs) PULL_RUNS=$2 ;;
      esac
      shift 2
      ;;
    -h | --help)
      sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup: not a number: $WARMUP"
for v in RUNS BUILD_RUNS PULL_RUNS; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 2 ]] || die "$v: need a number >= 2: ${!v}"
done

for tool in hyperfine podman runc skopeo docker-registry bwrap python3 dpkg-query gzip tar; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    case $tool in
      bwrap) pkg=bubblewrap ;;
      dpkg-query) pkg=dpkg ;;
      *) pkg=$tool ;;
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
  bench_stage "${BASH_SOURCE[0]}" "$(dirname "${BASH_SOURCE[0]}")/cproject.py"
  trap 'rm -rf -- "$stage"' EXIT
  echo "Running as $user (binary copied to $stage)" >&2
  set +e
  setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- \
    env -i HOME="$home" USER="$user" LOGNAME="$user" \
    PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
    SBOX="$stage/sbox" WARMUP="$WARMUP" RUNS="$RUNS" BUILD_RUNS="$BUILD_RUNS" \
    PULL_RUNS="$PULL_RUNS" ${IMAGE_CACHE:+IMAGE_CACHE="$IMAGE_CACHE"} \
    ${PODMAN_DRIVER:+PODMAN_DRIVER="$PODMAN_DRIVER"} SBOX_BENCH_REEXEC=1 \
    bash "$stage/image.sh"
  rc=$?
  set -e
  exit "$rc"
fi

# ------------------------------------------------------ work and cleanup

IMAGE_CACHE=${IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sbox-bench-image}
PODMAN_DRIVER=${PODMAN_DRIVER:-overlay}
# Everything but the cache lives here: the registry's storage, podman's and
# sbox's stores, the runtime directory (podman's pause process) and the
# project. Under $HOME, not /tmp (which sandboxes get privately).
work=$(mktemp -d "$HOME/sbox-bench-image.XXXXXX")
# The runtime directory is short: podman refuses a runroot of more than 50
# characters.
run=$(mktemp -d /tmp/sbox-bench-run.XXXXXX)
export XDG_RUNTIME_DIR=$run XDG_DATA_HOME=$work/data XDG_CONFIG_HOME=$work/config
export XDG_CACHE_HOME=$work/cache
chmod 0700 "$run"
mkdir -p "$XDG_DATA_HOME" "$XDG_CONFIG_HOME" "$XDG_CACHE_HOME"
reg_pid=
PODMAN=(podman --root "$work/podman/root" --runroot "$run/podman"
  --storage-driver "$PODMAN_DRIVER" --runtime runc --cgroup-manager cgroupfs
  --events-backend file --network-config-dir "$work/podman/net")
cleanup() {
  set +e
  if [ -n "$reg_pid" ]; then
    kill "$reg_pid" 2>/dev/null
    wait "$reg_pid" 2>/dev/null
  fi
  # podman's own leftovers first (its store has files of subordinate ids,
  # only removable inside its user namespace), then its pause process.
  if [ -d "$work/podman" ]; then
    "${PODMAN[@]}" rm -af >/dev/null 2>&1
    "${PODMAN[@]}" unshare rm -rf "$work/podman" 2>/dev/null
  fi
  # It ignores SIGTERM; its pid file has no newline. One that podman
  # started but did not record (a failed command) is found by its
  # runtime directory, which is this run's own.
  local pid pids
  pids=$(cat "$XDG_RUNTIME_DIR/libpod/tmp/pause.pid" 2>/dev/null)
  for pid in /proc/[0-9]*; do
    [[ $(cat "$pid/comm" 2>/dev/null) == "podman pause" ]] &&
      tr '\0' '\n' <"$pid/environ" 2>/dev/null | grep -qxF "XDG_RUNTIME_DIR=$run" &&
      pids+=" ${pid#/proc/}"
  done
  for pid in $pids; do
    [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == podman* ]] &&
      kill -KILL "$pid" 2>/dev/null
  done
  chmod -R u+rwX "$work" 2>/dev/null
  rm -rf -- "$work" "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------ the image (cached)

PKGS="gcc-12 gcc cpp make bash coreutils dash grep sed findutils libc6-dev libc-bin"
mkdir -p "$IMAGE_CACHE" || die "cannot create IMAGE_CACHE=$IMAGE_CACHE"
closure=$(python3 - $PKGS <<'PY'
import re, subprocess, sys
status = {}
def installed(n):
    if n not in status:
        r = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Status}", n],
                           capture_output=True, text=True)
        status[n] = r.returncode == 0 and r.stdout.strip() == "installed"
    return status[n]
def deps(p):
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Depends}, ${Pre-Depends}", p],
                         capture_output=True, text=True, check=True).stdout
    res = []
    for alt in out.split(","):
        for a in alt.split("|"):
            n = re.sub(r"\(.*?\)", "", a).strip().split(":")[0]
            if n and installed(n):
                res.append(n)
                break
    return res
missing = [p for p in sys.argv[1:] if not installed(p)]
if missing:
    sys.exit("not installed on this host: " + " ".join(missing))
seen, todo = set(), list(sys.argv[1:])
while todo:
    p = todo.pop()
    if p not in seen and installed(p):
        seen.add(p)
        todo += deps(p)
for p in sorted(seen):
    v = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", p],
                       capture_output=True, text=True, check=True).stdout
    print(p, v)
PY
) || die "the image's packages: see above (Debian: apt-get install gcc-12 make)"
# The key: the packages' versions and this script's image format.
key=$(printf 'format 2\n%s\n' "$closure" | sha256sum | cut -c1-16)
layout=$IMAGE_CACHE/$key/layout
if [ ! -f "$layout/index.json" ]; then
  note "Building the image from $(printf '%s\n' "$closure" | wc -l) installed packages into $IMAGE_CACHE/$key"
  rm -rf "${IMAGE_CACHE:?}/$key"
  mkdir -p "$IMAGE_CACHE/$key"
  printf '%s\n' "$closure" >"$IMAGE_CACHE/$key/packages"
  python3 - "$IMAGE_CACHE/$key" <<'PY' || die "building the image failed"
import hashlib, json, os, shutil, stat, subprocess, sys
out = sys.argv[1]
root, lay = out + "/rootfs", out + "/layout.tmp"
pkgs = [l.split()[0] for l in open(out + "/packages")]
# Merged /usr, as on the host: /bin, /sbin, /lib* are links into /usr.
for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "etc", "tmp", "root",
          "proc", "dev", "sys", "var/tmp"):
    os.makedirs(f"{root}/{d}", exist_ok=True)
for d in ("bin", "sbin", "lib", "lib64"):
    os.symlink(f"usr/{d}", f"{root}/{d}")
os.chmod(f"{root}/tmp", 0o1777)
os.chmod(f"{root}/var/tmp", 0o1777)
def dest(p):
    for d in ("/bin/", "/sbin/", "/lib/", "/lib64/"):
        if p.startswith(d):
            return root + "/usr" + p
    return root + p
for p in pkgs:
    files = subprocess.run(["dpkg-query", "-L", p], capture_output=True, text=True,
                           check=True).stdout.split("\n")
    for f in files:
        if not f.startswith("/") or f.startswith(("/usr/share/doc", "/usr/share/man",
                                                  "/usr/share/info", "/usr/share/locale")):
            continue
        try:
            st = os.lstat(f)
        except FileNotFoundError:
            continue
        t = dest(f)
        if stat.S_ISDIR(st.st_mode):
            if not os.path.islink(t):
                os.makedirs(t, exist_ok=True)
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            continue
        os.makedirs(os.path.dirname(t), exist_ok=True)
        if os.path.lexists(t):
            os.unlink(t)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(f), t)
        else:
            shutil.copy2(f, t)
# What dpkg's maintainer scripts and alternatives would make.
for name, target in (("usr/bin/cc", "gcc"), ("usr/bin/sh", "dash")):
    if not os.path.lexists(f"{root}/{name}"):
        os.symlink(target, f"{root}/{name}")
with open(f"{root}/etc/passwd", "w") as f:
    f.write("root:x:0:0:root:/root:/bin/bash\n")
with open(f"{root}/etc/group", "w") as f:
    f.write("root:x:0:\n")
subprocess.run(["/usr/sbin/ldconfig", "-r", root], check=True)
# One gzip layer, owned by root, in an OCI layout.
os.makedirs(lay + "/blobs/sha256")
def put(b):
    d = hashlib.sha256(b).hexdigest()
    open(f"{lay}/blobs/sha256/{d}", "wb").write(b)
    return {"digest": "sha256:" + d, "size": len(b)}
tar = subprocess.run(["tar", "--numeric-owner", "--owner=0", "--group=0", "--sort=name",
                      "-C", root, "-cf", "-", "."], capture_output=True, check=True).stdout
gz = subprocess.run(["gzip", "-n", "-6"], input=tar, capture_output=True, check=True).stdout
layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(gz)}
cfg = put(json.dumps({"architecture": "amd64", "os": "linux",
                      "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
                      "rootfs": {"type": "layers",
                                 "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]}}).encode())
m = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
                    "layers": [layer]}).encode())
open(lay + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
open(lay + "/index.json", "w").write(json.dumps({"schemaVersion": 2, "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", **m,
     "annotations": {"org.opencontainers.image.ref.name": "1"}}]}))
shutil.rmtree(root)
os.rename(lay, out + "/layout")
print(f"image: {len(tar) / 1e6:.0f} MB, {gz and len(gz) / 1e6:.1f} MB gzip")
PY
fi
img_mb=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]+"/index.json"))["manifests"][0]["digest"].split(":")[1]; man=json.load(open(sys.argv[1]+"/blobs/sha256/"+m)); print("%.1f" % (sum(l["size"] for l in man["layers"])/1e6))' "$layout")

# ------------------------------------------------------- the registry

start_registry "$work"
ref=127.0.0.1:$port/bench/gcc:1
skopeo copy -q --dest-tls-verify=false "oci:$layout:1" "docker://$ref" ||
  die "skopeo could not push the image to the local registry"

# ------------------------------------------ both stores, and a check

note "Pulling $ref ($img_mb MB gzip) into sbox's and podman's stores"
"$SBOX" image pull -q "$ref" >/dev/null || die "sbox image pull $ref failed"
"${PODMAN[@]}" pull -q --tls-verify=false "$ref" >/dev/null ||
  die "podman pull failed (storage driver $PODMAN_DRIVER; try PODMAN_DRIVER=vfs)"

project=$work/project
mkdir "$project"
python3 "$(dirname "${BASH_SOURCE[0]}")/cproject.py" "$project" 300
cd "$project"

BWRAP="bwrap --unshare-all --die-with-parent --new-session --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp true"
PODMAN_S="${PODMAN[*]}"
names=("sbox run --net none -- true" "sbox run --image IMG --net none -- true"
  "podman run --rm --network none IMG true" "bwrap --unshare-all ... true")
cmds=("$SBOX run --net none -- true" "$SBOX run --image $ref --net none -- true"
  "$PODMAN_S run --rm --network none $ref true" "$BWRAP")
B_SBOX="$SBOX run --image $ref --net none -- make -s -j2"
B_PODMAN="$PODMAN_S run --rm --network none -v $project:/src -w /src $ref make -s -j2"

# Each once first, so that a failure shows its own message; the build
# checks that gcc works inside and that the result runs.
for i in "${!cmds[@]}"; do
  # shellcheck disable=SC2086 # the commands are word lists on purpose
  out=$(${cmds[$i]} 2>&1) || die "${names[$i]} fails here: ${out:-no message} (as $(id -un))"
done
# shellcheck disable=SC2086
out=$($B_SBOX 2>&1 && ./prog) || die "the build inside sbox run --image fails: $(tail -3 <<<"$out")"
make -s clean
# shellcheck disable=SC2086
out=$($B_PODMAN 2>&1 && ./prog) || die "the build inside podman run fails: $(tail -3 <<<"$out")"
make -s clean

echo "sbox: $("$SBOX" --version) ($SBOX), as $(id -un); $(podman --version), driver $PODMAN_DRIVER" >&2
echo "kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); image $img_mb MB gzip" >&2

# ----------------------------------------------------------- the bench

json=$work/json
mkdir "$json"
note "1/3 start: hyperfine --warmup $WARMUP --runs $RUNS"
args=(--shell=none --warmup "$WARMUP" --runs "$RUNS" --style basic --export-json "$json/start.json")
for i in "${!cmds[@]}"; do
  args+=(--command-name "${names[$i]}" "${cmds[$i]}")
done
hyperfine "${args[@]}" >&2

note "2/3 build: make -j2 of 300 C files, hyperfine --warmup 1 --runs $BUILD_RUNS"
hyperfine --shell=bash --warmup 1 --runs "$BUILD_RUNS" --style basic --prepare "make -s clean" \
  --export-json "$json/build.json" \
  --command-name "sbox run --image IMG -- make -j2" "$B_SBOX" \
  --command-name "podman run IMG make -j2" "$B_PODMAN" >&2
make -s clean

note "3/3 pull: an empty store / directory each time, hyperfine --warmup 1 --runs $PULL_RUNS"
hyperfine --shell=bash --warmup 1 --runs "$PULL_RUNS" --style basic \
  --export-json "$json/pull.json" \
  --command-name "sbox image pull" \
  --prepare "rm -rf $work/pulldata" \
  "XDG_DATA_HOME=$work/pulldata $SBOX image pull -q $ref" \
  --command-name "skopeo copy docker:// dir:" \
  --prepare "rm -rf $work/pulldir" \
  "skopeo copy -q --src-tls-verify=false docker://$ref dir:$work/pulldir" >&2
FIRST_RUNS=$((PULL_RUNS < 3 ? PULL_RUNS : 3))
note "3/3 first use: pull + run from an empty store, hyperfine --warmup 1 --runs $FIRST_RUNS"
hyperfine --shell=bash --warmup 1 --runs "$FIRST_RUNS" --style basic \
  --export-json "$json/first.json" \
  --command-name "sbox image pull + run --image" \
  --prepare "rm -rf $work/pulldata" \
  "export XDG_DATA_HOME=$work/pulldata; $SBOX image pull -q $ref >/dev/null && $SBOX run --image $ref --net none -- true" \
  --command-name "podman pull + run" \
  --prepare "$PODMAN_S rmi -f $ref >/dev/null 2>&1 || true" \
  "$PODMAN_S pull -q --tls-verify=false $ref >/dev/null && $PODMAN_S run --rm --network none $ref true" >&2

python3 - "$json" "$img_mb" <<'PY'
import json, sys
d, mb = sys.argv[1], sys.argv[2]
r = {}
for part in ("start", "build", "pull", "first"):
    for x in json.load(open(f"{d}/{part}.json"))["results"]:
        r[x["command"]] = x
w = max(len(k) for k in r) + 2
print()
print(f"{'command':<{w}}{'mean ms':>10}{'± σ':>9}{'min ms':>9}{'max ms':>9}")
for k, x in r.items():
    print(f"{k:<{w}}{x['mean'] * 1e3:10.1f}{x['stddev'] * 1e3:9.1f}{x['min'] * 1e3:9.1f}{x['max'] * 1e3:9.1f}")
m = lambda k: r[k]["mean"]
rows = [
    ("image root / host root", m("sbox run --image IMG --net none -- true") / m("sbox run --net none -- true"), "<= 1.2"),
    ("sbox --image / podman", m("sbox run --image IMG --net none -- true") / m("podman run --rm --network none IMG true"), "<= 0.1"),
    ("sbox --image / bwrap", m("sbox run --image IMG --net none -- true") / m("bwrap --unshare-all ... true"), ""),
    ("build: sbox / podman", m("sbox run --image IMG -- make -j2") / m("podman run IMG make -j2"), "<= 1.1"),
    ("pull: sbox / skopeo", m("sbox image pull") / m("skopeo copy docker:// dir:"), "<= 1.0"),
    ("first use: sbox / podman", m("sbox image pull + run --image") / m("podman pull + run"), ""),
]
print()
print(f"image: {mb} MB gzip, one layer")
for name, v, t in rows:
    ok = "" if not t else ("  meets " if v <= float(t[3:]) else "  MISSES ") + t
    print(f"{name:<26}{v:8.2f}{ok}")
PY
