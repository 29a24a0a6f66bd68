#!/usr/bin/env bash
# Installs what shoal needs on a Debian bookworm machine (as root): the OCI runtimes, conmon,
# nftables, debootstrap for the offline base image, and shoal itself into a venv.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "shoal: this needs root (containers, mounts and cgroups): run it with sudo" >&2
  exit 1
fi
here=$(cd "$(dirname "$0")/.." && pwd)
pkgs=(crun runc conmon nftables iproute2 debootstrap busybox-static docker-registry apache2-utils
      ca-certificates xz-utils zstd tini skopeo openssl curl python3-venv golang-github-containers-common
      wireguard-tools wireguard-go)  # encrypted overlay networks: wg, and WireGuard where the kernel has none
# For the tests only (make test sets SHOAL_TEST_DEPS=1): qemu boots Debian's kernel for the cgroup v2
# tests in tests/cgroupv2, which download and unpack that kernel themselves (never installed);
# iperf3 measures TCP throughput between tasks for bench/bench_overlay.py (run from the host in
# the tasks' namespaces, so images need not have it).
# zsh and fish run the completion scripts `shoal completion zsh|fish` prints (tests/unit/test_completion.py).
# golang-cfssl: a real `cfssl serve` as the external CA of `swarm ca --external-ca` (tests/unit/test_ca_external.py).
if [ "${SHOAL_TEST_DEPS:-0}" = 1 ]; then pkgs+=(qemu-system-x86 iperf3 zsh fish golang-cfssl); fi
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || { echo "shoal: could not install ${missing[*]} from the Debian archive (see apt's message above): check /etc/apt/sources.list and that the Debian archive is reachable, or install them by hand; nothing was started" >&2; exit 1; }
fi
venv="${SHOAL_VENV:-$here/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# Reinstall only when the project's dependencies changed (a repeat `make demo` stays quick).
stamp="$venv/.shoal-installed"
want=$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -e "$here[test]"
  echo "$want" > "$stamp"
fi
# Bytecode for every module (PYTHONDONTWRITEBYTECODE, set on some machines, would otherwise make
# each CLI command compile shoal again) and the generated compose-schema check (fastcheck.py).
"$venv/bin/python" -c 'from shoal.compose import fastcheck; fastcheck.ensure()'
"$venv/bin/python" -m compileall -q "$here/src/shoal" >/dev/null
# shoald runs with -OO (src/shoal/daemonenv.py): its bytecode too, for shoal, its libraries and
# the standard library, or each start compiles them again in memory.
"$venv/bin/python" -OO -m compileall -q -j 0 -x '/(test|tests|idlelib|lib2to3|tkinter|turtledemo)/' "$here/src/shoal" \
  "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
  "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" >/dev/null 2>&1 || true
ln -sf "$venv/bin/shoal" /usr/local/bin/shoal
