#!/usr/bin/env bash
# Install sbox for the current user (no root needed), or under --prefix.
#
#   ./install.sh                      build, install into ~/.local, check the host
#   ./install.sh --prefix /opt/sbox   install into /opt/sbox/{bin,share/man,share/sbox}
#   ./install.sh --binary ./sbox      install a prebuilt binary instead of building
#   ./install.sh --system-deps        also install uidmap, fuse3, passt (sudo)
#   ./install.sh --uninstall          remove what an install put there
#
# Missing host prerequisites are reported with their fix and do not fail the
# install; a failed build or copy does (one line on stderr, exit status 1).
set -euo pipefail

PROG=install.sh
SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MANIFEST_NAME=installed-files

usage() {
  cat <<EOF
Usage: $PROG [OPTIONS]

Build sbox and install it for the current user (with its man pages, profiles
and bash, zsh and fish completions), then check the host.

Options:
  --prefix DIR     install into DIR/bin, DIR/share/man and DIR/share/sbox/profiles
                   (default: \$HOME/.local)
  --binary PATH    install this prebuilt sbox binary instead of building one
  --system-deps    install the host packages sbox needs (uidmap, fuse3, passt),
                   with sudo when not root; the only option that needs root
  --uninstall      remove the files a previous install put under the prefix
  -h, --help       print this help

Building needs cargo (Rust >= 1.85): cargo build --release --locked.
EOF
}

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

usage_error() {
  printf '%s: error: %s (see %s --help)\n' "$PROG" "$*" "$PROG" >&2
  exit 2
}

say() { printf '%s\n' "$*"; }

# ---------------------------------------------------------------- arguments

prefix=
binary=
system_deps=0
uninstall=0

while (($#)); do
  case $1 in
    --prefix)
      (($# >= 2)) || usage_error "--prefix needs a directory"
      prefix=$2
      shift 2
      ;;
    --prefix=*)
      prefix=${1#--prefix=}
      shift
      ;;
    --binary)
      (($# >= 2)) || usage_error "--binary needs a path"
      binary=$2
      shift 2
      ;;
    --binary=*)
      binary=${1#--binary=}
      shift
      ;;
    --system-deps)
      system_deps=1
      shift
      ;;
    --uninstall)
      uninstall=1
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage_error "unknown option: $1"
      ;;
  esac
done

if ((uninstall)) && ((system_deps)); then
  usage_error "--uninstall and --system-deps do not go together"
fi
if ((uninstall)) && [ -n "$binary" ]; then
  usage_error "--uninstall and --binary do not go together"
fi

if [ -z "$prefix" ]; then
  [ -n "${HOME:-}" ] || die "HOME is not set: give --prefix DIR"
  prefix=$HOME/.local
fi
[ -n "$prefix" ] || usage_error "--prefix needs a directory"
case $prefix in
  /*) ;;
  *) prefix=$PWD/$prefix ;;
esac
# Drop trailing slashes (but keep "/").
while [ "${#prefix}" -gt 1 ] && [ "${prefix%/}" != "$prefix" ]; do
  prefix=${prefix%/}
done
[ "$prefix" = / ] && prefix=

BIN_DIR=$prefix/bin
MAN_DIR=$prefix/share/man
DATA_DIR=$prefix/share/sbox
PROFILE_DIR=$DATA_DIR/profiles
MANIFEST=$DATA_DIR/$MANIFEST_NAME

# ------------------------------------------------------------ system packages

run_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "installing packages needs root and sudo is not installed: run as root: $*"
  fi
}

install_system_deps() {
  if command -v apt-get >/dev/null 2>&1; then
    say "Installing uidmap fuse3 passt with apt-get"
    if ! run_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y uidmap fuse3 passt; then
      run_as_root apt-get update || die "apt-get update failed"
      run_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y uidmap fuse3 passt ||
        die "apt-get install uidmap fuse3 passt failed"
    fi
  elif command -v dnf >/dev/null 2>&1; then
    say "Installing shadow-utils fuse3 passt with dnf"
    run_as_root dnf install -y shadow-utils fuse3 passt || die "dnf install shadow-utils fuse3 passt failed"
  elif command -v pacman >/dev/null 2>&1; then
    say "Installing shadow fuse3 passt with pacman"
    run_as_root pacman -S --needed --noconfirm shadow fuse3 passt || die "pacman -S shadow fuse3 passt failed"
  else
    say "Unknown package manager: install these yourself, then run $PROG again:"
    say "  newuidmap and newgidmap (setuid root; often in a package named uidmap or shadow-utils)"
    say "  fuse3 (for /dev/fuse)"
    say "  passt (user-mode networking)"
  fi
}

# ------------------------------------------------------- shell completions

# A user install (the default prefix) puts the completions where bash and
# fish look for a user's own; any other prefix keeps them under it.
user_install=0
[ -n "${HOME:-}" ] && [ "$prefix" = "$HOME/.local" ] && user_install=1

completion_files() { # lines "SHELL PATH"
  local data=${XDG_DATA_HOME:-} config=${XDG_CONFIG_HOME:-}
  case $data in /*) ;; *) data=${HOME:-}/.local/share ;; esac
  case $config in /*) ;; *) config=${HOME:-}/.config ;; esac
  if ((user_install)); then
    printf 'bash %s\n' "$data/bash-completion/completions/sbox"
    printf 'zsh %s\n' "$prefix/share/zsh/site-functions/_sbox"
    printf 'fish %s\n' "$config/fish/completions/sbox.fish"
  else
    printf 'bash %s\n' "$prefix/share/bash-completion/completions/sbox"
    printf 'zsh %s\n' "$prefix/share/zsh/site-functions/_sbox"
    printf 'fish %s\n' "$prefix/share/fish/vendor_completions.d/sbox.fish"
  fi
}

# Does one of FILEs (relative to HOME, or absolute) name DIR, spelled as
# it is or from $HOME, ${HOME} or ~, outside a comment line?
files_mention() { # DIR FILE...
  local dir=$1
  shift
  local spellings=("$dir")
  if [ -n "${HOME:-}" ]; then
    case $dir in
      "$HOME"/*)
        local rest=${dir#"$HOME"/}
        # shellcheck disable=SC2016 # the spellings as written in the files
        spellings+=("\$HOME/$rest" "\${HOME}/$rest" "~/$rest")
        ;;
    esac
  fi
  local f sp
  for f in "$@"; do
    case $f in /*) ;; *) f=${HOME:-/nonexistent}/$f ;; esac
    [ -f "$f" ] && [ -r "$f" ] || continue
    for sp in "${spellings[@]}"; do
      grep -v '^[[:space:]]*#' -- "$f" 2>/dev/null | grep -qF -- "$sp" && return 0
    done
  done
  return 1
}

# How the manifest names a path: relative to the prefix when under it.
manifest_name() {
  case $1 in
    "$prefix"/*) printf '%s' "${1#"$prefix"/}" ;;
    *) printf '%s' "$1" ;;
  esac
}

# ---------------------------------------------------------------- uninstall

# Files (relative to the prefix) that this installer puts in place.
default_files() {
  printf '%s\n' bin/sbox
  local f
  for f in "$SRC_DIR"/man/*.1; do
    [ -e "$f" ] && printf 'share/man/man1/%s\n' "${f##*/}"
  done
  for f in "$SRC_DIR"/man/*.5; do
    [ -e "$f" ] && printf 'share/man/man5/%s\n' "${f##*/}"
  done
  for f in "$SRC_DIR"/profiles/*.toml; do
    [ -e "$f" ] && printf 'share/sbox/profiles/%s\n' "${f##*/}"
  done
  local sh path
  while read -r sh path; do
    printf '%s\n' "$(manifest_name "$path")"
  done < <(completion_files)
  return 0
}

# Remove one prefix-relative path if it is a file or a symbolic link.
remove_rel() {
  local rel=$1 p
  case $rel in
    "" | *..*) return 0 ;;
    # A user install's completions, outside the prefix.
    /*/bash-completion/completions/sbox | /*/fish/completions/sbox.fish) p=$rel ;;
    /*) return 0 ;; # nothing else outside the prefix
    *) p=$prefix/$rel ;;
  esac
  if [ -f "$p" ] || [ -L "$p" ]; then
    rm -f -- "$p" || die "cannot remove $p"
    say "removed $p"
  fi
}

do_uninstall() {
  local rel
  if [ -f "$MANIFEST" ]; then
    while IFS= read -r rel; do
      remove_rel "$rel"
    done <"$MANIFEST"
  else
    while IFS= read -r rel; do
      remove_rel "$rel"
    done < <(default_files)
  fi
  rm -f -- "$MANIFEST"
  rmdir -- "$PROFILE_DIR" 2>/dev/null || true
  rmdir -- "$DATA_DIR" 2>/dev/null || true
  local sh path
  while read -r sh path; do # the completion directories, when left empty
    rmdir -- "${path%/*}" "${path%/*/*}" 2>/dev/null || true
  done < <(completion_files)
  say "sbox is uninstalled from ${prefix:-/}."
  local cfg=${XDG_CONFIG_HOME:-${HOME:-~}/.config}/sbox
  if [ -d "$cfg" ]; then
    say "Your own profiles in $cfg are left in place."
  fi
}

if ((uninstall)); then
  do_uninstall
  exit 0
fi

# ---------------------------------------------------------------- install

((system_deps)) && install_system_deps

# The binary: given, or built with cargo.
if [ -n "$binary" ]; then
  [ -f "$binary" ] || die "--binary $binary: no such file"
  [ -x "$binary" ] || die "--binary $binary: not executable"
else
  command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install Rust >= 1.85 (https://rustup.rs) or give --binary PATH"
  [ -f "$SRC_DIR/Cargo.toml" ] || die "no Cargo.toml in $SRC_DIR: run $PROG from the sbox source tree or give --binary PATH"
  locked=(--locked)
  if [ ! -f "$SRC_DIR/Cargo.lock" ]; then
    say "No Cargo.lock: building without --locked"
    locked=()
  fi
  say "Building sbox: cargo build --release ${locked[*]}"
  (cd "$SRC_DIR" && cargo build --release "${locked[@]}") ||
    die "cargo build --release ${locked[*]} failed (see the output above)"
  target_dir=${CARGO_TARGET_DIR:-$SRC_DIR/target}
  case $target_dir in
    /*) ;;
    *) target_dir=$SRC_DIR/$target_dir ;;
  esac
  binary=$target_dir/release/sbox
  [ -x "$binary" ] || die "the build did not produce $binary"
fi

version=$("$binary" --version 2>/dev/null) || die "$binary does not run (--version failed)"
case $version in
  sbox\ *) ;;
  *) die "$binary is not sbox (--version printed: ${version%%$'\n'*})" ;;
esac

shopt -s nullglob
man1=("$SRC_DIR"/man/*.1)
man5=("$SRC_DIR"/man/*.5)
profiles=("$SRC_DIR"/profiles/*.toml)
shopt -u nullglob
((${#man1[@]})) || die "no man pages in $SRC_DIR/man"
((${#profiles[@]})) || die "no profiles in $SRC_DIR/profiles"

# The files the previous install put here, to remove those no longer shipped.
old_files=()
if [ -f "$MANIFEST" ]; then
  while IFS= read -r rel; do
    old_files+=("$rel")
  done <"$MANIFEST"
fi

for d in "$BIN_DIR" "$MAN_DIR/man1" "$MAN_DIR/man5" "$PROFILE_DIR"; do
  mkdir -p -- "$d" || die "cannot create $d"
done

new_files=()

# The binary goes in through a temporary name and a rename, so a running
# sbox keeps its file and nobody sees a half-written one.
tmp_bin=$BIN_DIR/.sbox.install.$$
trap 'rm -f -- "$tmp_bin"' EXIT
install -m 0755 -- "$binary" "$tmp_bin" || die "cannot copy $binary to $BIN_DIR"
mv -f -- "$tmp_bin" "$BIN_DIR/sbox" || die "cannot install $BIN_DIR/sbox"
new_files+=(bin/sbox)

install_file() { # SRC DIR REL
  install -m 0644 -- "$1" "$2/" || die "cannot copy $1 to $2"
  new_files+=("$3")
}
for f in "${man1[@]}"; do install_file "$f" "$MAN_DIR/man1" "share/man/man1/${f##*/}"; done
for f in "${man5[@]}"; do install_file "$f" "$MAN_DIR/man5" "share/man/man5/${f##*/}"; done
for f in "${profiles[@]}"; do install_file "$f" "$PROFILE_DIR" "share/sbox/profiles/${f##*/}"; done

# Shell completions, written by the installed binary. fish's go into a
# user's config only when fish is there.
tmp_comp=
trap 'rm -f -- "$tmp_bin" ${tmp_comp:+"$tmp_comp"}' EXIT
completions=()
while read -r sh path; do
  if [ "$sh" = fish ] && ((user_install)) && ! command -v fish >/dev/null 2>&1 &&
    [ ! -d "${path%/completions/sbox.fish}" ]; then
    continue
  fi
  dir=${path%/*}
  mkdir -p -- "$dir" || die "cannot create $dir"
  tmp_comp=$dir/.sbox.completion.$$
  "$BIN_DIR/sbox" completions "$sh" >"$tmp_comp" || die "$BIN_DIR/sbox completions $sh failed"
  chmod 0644 -- "$tmp_comp" && mv -f -- "$tmp_comp" "$path" || die "cannot install $path"
  tmp_comp=
  new_files+=("$(manifest_name "$path")")
  completions+=("$sh" "$path")
done < <(completion_files)

for rel in "${old_files[@]}"; do
  keep=0
  for n in "${new_files[@]}"; do
    [ "$n" = "$rel" ] && keep=1 && break
  done
  ((keep)) || remove_rel "$rel"
done
printf '%s\n' "${new_files[@]}" >"$MANIFEST.tmp" || die "cannot write $MANIFEST.tmp"
mv -f -- "$MANIFEST.tmp" "$MANIFEST" || die "cannot write $MANIFEST"

"$BIN_DIR/sbox" --version >/dev/null 2>&1 || die "the installed $BIN_DIR/sbox does not run"

names() { # the base names of the arguments, separated by spaces
  local IFS=' '
  set -- "${@##*/}"
  printf '%s' "$*"
}
say "Installed ${version} into ${prefix:-/}:"
say "  $BIN_DIR/sbox"
say "  $MAN_DIR/man1/ ($(names "${man1[@]}"))"
((${#man5[@]})) && say "  $MAN_DIR/man5/ ($(names "${man5[@]}"))"
say "  $PROFILE_DIR/ ($(names "${profiles[@]}"))"
for ((i = 0; i < ${#completions[@]}; i += 2)); do
  say "  ${completions[i + 1]} (${completions[i]} completion)"
done
# Where the shells would not find them by themselves.
for ((i = 0; i < ${#completions[@]}; i += 2)); do
  sh=${completions[i]}
  dir=${completions[i + 1]%/*}
  case $sh in
    bash)
      if command -v bash >/dev/null 2>&1 &&
        [ ! -f /usr/share/bash-completion/bash_completion ] && [ ! -f /etc/bash_completion ]; then
        say "note: bash loads completions through the bash-completion package: install it," \
          "or add  source ${completions[i + 1]}  to ~/.bashrc"
      fi
      ;;
    zsh)
      if command -v zsh >/dev/null 2>&1 &&
        ! env -i PATH=/usr/local/bin:/usr/bin:/bin zsh -fc 'print -rl -- $fpath' </dev/null 2>/dev/null |
        grep -qxF -- "$dir" && ! files_mention "$dir" .zshrc .zshenv; then
        say "note: for zsh, add  fpath=($dir \$fpath)  to ~/.zshrc before compinit"
      fi
      ;;
  esac
done

# ------------------------------------------------------------ host checks

warnings=0
warn() { # WHAT FIX...
  warnings=$((warnings + 1))
  printf 'warning: %s\n' "$1"
  shift
  local l
  for l in "$@"; do
    printf '  fix: %s\n' "$l"
  done
}

distro_pkg() { # what to install for newuidmap/newgidmap
  if command -v apt-get >/dev/null 2>&1; then
    printf 'sudo apt-get install uidmap'
  elif command -v dnf >/dev/null 2>&1; then
    printf 'sudo dnf install shadow-utils'
  elif command -v pacman >/dev/null 2>&1; then
    printf 'sudo pacman -S shadow'
  else
    printf 'install newuidmap/newgidmap (package uidmap or shadow-utils)'
  fi
}

me=$(id -un 2>/dev/null || printf '%s' "${USER:-}")
my_uid=$(id -u)
my_gid=$(id -g)

# newuidmap / newgidmap, where sbox looks for them.
for helper in newuidmap newgidmap; do
  found=
  for d in /usr/bin /bin /usr/sbin /sbin /usr/local/bin; do
    if [ -e "$d/$helper" ]; then
      found=$d/$helper
      break
    fi
  done
  if [ -z "$found" ]; then
    warn "$helper is missing (sbox falls back to a single-id map: only root, no other ids inside)" \
      "$(distro_pkg)"
  elif [ ! -u "$found" ] && command -v getcap >/dev/null 2>&1 &&
    ! getcap "$found" 2>/dev/null | grep -q 'cap_set[ug]id'; then
    warn "$found is neither setuid root nor has file capabilities" \
      "sudo chmod u+s $found"
  fi
done

# The user's subordinate ranges.
has_range() { # FILE ID...
  local file=$1
  shift
  [ -r "$file" ] || return 1
  awk -F: -v ids="$*" '
    BEGIN { n = split(ids, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 }
    /^[ \t]*#/ { next }
    ($1 in want) && $3 + 0 > 0 { found = 1 }
    END { exit !found }' "$file"
}
free_range() { # first 65536 ids above every range already given out
  local last
  last=$(cat /etc/subuid /etc/subgid 2>/dev/null |
    awk -F: '!/^[ \t]*#/ && NF >= 3 { e = $2 + $3 - 1; if (e > m) m = e } END { print m + 0 }')
  local start=100000
  ((last >= start)) && start=$((last + 1))
  printf '%s-%s' "$start" "$((start + 65535))"
}
missing_ids=()
has_range /etc/subuid "$me" "$my_uid" || missing_ids+=(subuid)
has_range /etc/subgid "$me" "$my_uid" "$my_gid" || missing_ids+=(subgid)
if ((${#missing_ids[@]})); then
  range=$(free_range)
  opts=
  for k in "${missing_ids[@]}"; do
    opts+=" --add-${k}s $range"
  done
  what=$(printf '/etc/%s ' "${missing_ids[@]}")
  warn "no subordinate id range for $me in ${what% } (sbox falls back to a single-id map)" \
    "sudo usermod$opts $me"
fi

# /dev/fuse.
if [ ! -e /dev/fuse ]; then
  warn "/dev/fuse does not exist" "sudo modprobe fuse (and install the fuse3 package)"
elif [ ! -r /dev/fuse ] || [ ! -w /dev/fuse ]; then
  warn "/dev/fuse is not readable and writable by $me" "sudo chmod 0666 /dev/fuse   (lasts until reboot; in a container, give it the device)"
fi

# Unprivileged user namespaces.
read_knob() { cat "$1" 2>/dev/null || true; }
userns_ok=1
v=$(read_knob /proc/sys/kernel/unprivileged_userns_clone)
if [ "$v" = 0 ]; then
  userns_ok=0
  warn "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)" \
    "sudo sysctl -w kernel.unprivileged_userns_clone=1 && echo kernel.unprivileged_userns_clone=1 | sudo tee -a /etc/sysctl.d/90-sbox-userns.conf"
fi
v=$(read_knob /proc/sys/user/max_user_namespaces)
if [ "$v" = 0 ]; then
  userns_ok=0
  warn "user namespaces are disabled (user.max_user_namespaces = 0)" \
    "sudo sysctl -w user.max_user_namespaces=15000 && echo user.max_user_namespaces=15000 | sudo tee -a /etc/sysctl.d/90-sbox-userns.conf"
fi
v=$(read_knob /proc/sys/kernel/apparmor_restrict_unprivileged_userns)
if [ "$v" = 1 ]; then
  userns_ok=0
  warn "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1)" \
    "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 && echo kernel.apparmor_restrict_unprivileged_userns=0 | sudo tee -a /etc/sysctl.d/90-sbox-userns.conf" \
    "or allow sbox alone: printf 'abi <abi/4.0>,\\ninclude <tunables/global>\\nprofile sbox $BIN_DIR/sbox flags=(unconfined) {\\n  userns,\\n}\\n' | sudo tee /etc/apparmor.d/sbox && sudo apparmor_parser -r /etc/apparmor.d/sbox"
fi
if ((userns_ok)) && command -v unshare >/dev/null 2>&1 && ! unshare --user true >/dev/null 2>&1; then
  warn "this host refuses to create a user namespace (in a container without user namespace support?)" \
    "run sbox on the host, or allow nested user namespaces in the container runtime"
fi

# The kernel: --overlay kernel (overlayfs with userxattr in a user
# namespace) needs Linux 5.11; the default FUSE root does not.
kver=$(uname -r)
kmaj=${kver%%.*}
kmin=${kver#*.}
kmin=${kmin%%[!0-9]*}
if [[ $kmaj =~ ^[0-9]+$ && $kmin =~ ^[0-9]+$ ]] && ((kmaj < 5 || (kmaj == 5 && kmin < 11))); then
  warn "Linux $kver is older than 5.11: --overlay kernel is unavailable (the default FUSE root works)" \
    "upgrade the kernel to use --overlay kernel"
fi

# PATH. A new login shell may already get the bin dir (Debian's default
# ~/.profile adds ~/.local/bin once it exists): ask the user's login shell,
# started afresh with a system PATH, what PATH it ends up with; when that
# cannot be run, look for the bin dir in the files login shells read.
login_adds_bin_dir() {
  [ -n "${HOME:-}" ] || return 1
  local shell=${SHELL:-}
  [ -n "$shell" ] && [ -x "$shell" ] || shell=/bin/sh
  local out
  if command -v timeout >/dev/null 2>&1 && out=$(mktemp 2>/dev/null); then
    # A file, not a pipe: whatever the profile leaves running cannot hold
    # the installer up past the timeout.
    # shellcheck disable=SC2016 # $PATH is for the login shell to expand
    timeout 5 env -i HOME="$HOME" USER="${USER:-$me}" LOGNAME="${LOGNAME:-${USER:-$me}}" \
      SHELL="$shell" PATH=/usr/local/bin:/usr/bin:/bin \
      "$shell" -lc 'printf "\n@sbox-login-path@%s\n" "$PATH"' </dev/null >"$out" 2>/dev/null
    local rc=$? line found=
    while IFS= read -r line; do
      case $line in
        @sbox-login-path@*) found=${line#@sbox-login-path@} ;;
      esac
    done <"$out"
    rm -f -- "$out"
    if [ "$rc" = 0 ] && [ -n "$found" ]; then
      case ":$found:" in
        *":$BIN_DIR:"* | *":$BIN_DIR/:"*) return 0 ;;
        *) return 1 ;;
      esac
    fi
  fi
  # The shell could not tell: the bin dir, however spelled, in a login file.
  local config=${XDG_CONFIG_HOME:-.config}
  files_mention "$BIN_DIR" .profile .bash_profile .bash_login .zprofile .zshenv .zlogin \
    "$config/fish/config.fish" "$config"/fish/conf.d/*.fish
}

case ":${PATH:-}:" in
  *":$BIN_DIR:"* | *":$BIN_DIR/:"*)
    other=$(command -v sbox 2>/dev/null || true)
    if [ -n "$other" ] && [ "$other" != "$BIN_DIR/sbox" ]; then
      warn "another sbox comes first on PATH: $other" \
        "remove it, or put $BIN_DIR earlier in PATH"
    fi
    ;;
  *)
    if login_adds_bin_dir; then
      # shellcheck disable=SC2016 # $PATH is for the user's shell to expand
      say "note: $BIN_DIR is not on this shell's PATH yet, but your login profile adds it:"
      say "  open a new login shell (or log in again), or for this shell: export PATH=\"$BIN_DIR:\$PATH\""
    else
      # What the user's login shell reads.
      # shellcheck disable=SC2016 # $PATH is for the user's shell to expand
      case ${SHELL:-} in
        */fish) path_fix="fish_add_path $BIN_DIR" ;;
        */zsh) path_fix="echo 'export PATH=\"$BIN_DIR:\$PATH\"' >> ~/.zprofile   (then log in again)" ;;
        *) path_fix="echo 'export PATH=\"$BIN_DIR:\$PATH\"' >> ~/.profile   (then log in again)" ;;
      esac
      warn "$BIN_DIR is not on PATH" "$path_fix"
    fi
    ;;
esac

if ((warnings)); then
  say "$warnings host prerequisite(s) missing: see the fixes above (sbox doctor checks again)."
else
  say "The host has everything sbox needs. Try: sbox run -- id"
fi
exit 0
