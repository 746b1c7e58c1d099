# shellcheck shell=bash
# Shared by scripts/test, scripts/demo and scripts/bench: installs what they
# need on a fresh Debian 12 and skips whatever is already there. Source it,
# then call pg_setup_build (toolchain, C compiler) and, for the test suite or
# the benchmark, pg_setup_musl and pg_setup_test.
# apt-get update runs only when a package actually has to be installed.

PG_MUSL_TARGET=x86_64-unknown-linux-musl

pg_log() { printf '==> %s\n' "$*" >&2; }
pg_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root (directly, or through sudo when not root).
pg_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    pg_die "need root to run: $* (run as root or install sudo)"
  fi
}

# Installs the given Debian packages; the caller has already decided they are missing.
pg_apt_install() {
  command -v apt-get >/dev/null 2>&1 || pg_die "missing $*, and this is not a Debian system: install it by hand"
  pg_log "installing $*"
  if [ -z "${PG_APT_UPDATED:-}" ]; then
    pg_as_root apt-get update -qq
    PG_APT_UPDATED=1
  fi
  pg_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Each argument is COMMAND:PACKAGE; installs the packages whose command is missing.
pg_need_commands() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then pg_apt_install "${missing[@]}"; fi
}

# cargo, rustfmt and clippy from the machine's rustup toolchain; gcc with a
# static libc (the linker driver for Rust, and the static no-op of scripts/bench).
pg_setup_build() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || pg_die "cargo not found: install Rust with rustup (https://rustup.rs), then rerun"
  if ! command -v gcc >/dev/null 2>&1 || [ ! -f "$(gcc -print-file-name=libc.a)" ]; then
    pg_apt_install build-essential
  fi
  local missing=()
  cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
  cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
  if [ ${#missing[@]} -gt 0 ]; then
    command -v rustup >/dev/null 2>&1 || pg_die "cargo ${missing[*]} missing and rustup not found: install them"
    pg_log "adding rust components ${missing[*]}"
    rustup component add "${missing[@]}"
  fi
}

# The musl target the shipped verifier is built for.
pg_setup_musl() {
  pg_try_musl || pg_die "rust target $PG_MUSL_TARGET is missing and could not be added (rustup target add $PG_MUSL_TARGET)"
}

# Like pg_setup_musl, but returns non-zero instead of stopping when the
# target cannot be had (no rustup, or its download server unreachable).
pg_try_musl() {
  if [ -d "$(rustc --print sysroot)/lib/rustlib/$PG_MUSL_TARGET" ]; then
    return 0
  fi
  command -v rustup >/dev/null 2>&1 || return 1
  pg_log "adding rust target $PG_MUSL_TARGET"
  rustup target add "$PG_MUSL_TARGET"
}

# External programs the test suites run for real: a registry (Debian's
# docker-registry), htpasswd for its basic auth, openssl for a throw-away CA.
pg_setup_test() {
  pg_need_commands docker-registry:docker-registry htpasswd:apache2-utils openssl:openssl ip:iproute2 unshare:util-linux \
    musl-gcc:musl-tools jq:jq tar:tar redis-server:redis-server redis-cli:redis-tools
}

# Waits (bounded, in tenths of a second) for a socket to appear; fails if PID exits first.
pg_wait_socket() {
  local socket=$1 pid=$2 tries=${3:-300}
  while [ ! -S "$socket" ]; do
    kill -0 "$pid" 2>/dev/null || return 1
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || return 1
    sleep 0.1
  done
}
