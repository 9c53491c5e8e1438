#!/usr/bin/env bash
# The whole test suite, as CI runs it. On a fresh Debian machine with Rust:
#   bash scripts/test.sh
# As root it installs the tools the tests drive (shadow utils, systemd tools,
# logrotate, nspawn) and builds the throwaway test-host image; as non-root, tests
# that need those skip with a printed reason.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
    need=()
    for tool in useradd:passwd systemd-analyze:systemd logrotate:logrotate debootstrap:debootstrap systemd-nspawn:systemd-container ip:iproute2 dpkg-scanpackages:dpkg-dev nft:nftables; do
        command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        echo "== installing: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # --no-install-recommends: libnss-mymachines would edit this machine's nsswitch.conf.
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    if [ -f scripts/testhost-image.sh ]; then
        echo "== test-host image"
        bash scripts/testhost-image.sh
    fi
fi

echo "== cargo test"
# Benches are run by bench/smoke.sh, not as tests.
cargo test --lib --bins --tests -- --test-threads="${TEST_THREADS:-4}"
