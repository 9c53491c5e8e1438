#!/usr/bin/env bash
# CI smoke run of the benchmark harness: small N, one run each. It proves the harness
# builds and that every workload works end to end with the real binary (a no-op check
# exits 0, a drifted one 2, a converge is then in sync); it asserts no timings.
#
# It builds with the dev profile by default: CI has just built the debug artifacts for
# the tests, so this adds seconds, where a cold release build takes minutes on 2 cores.
# SMOKE_PROFILE=release bash bench/smoke.sh smokes the release build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --profile "${SMOKE_PROFILE:-dev}" --bench workloads -- --quick
