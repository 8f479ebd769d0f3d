#!/usr/bin/env bash
# The test command (README.md, "Set-up"): the whole suite, unit and
# integration. Servers for later backends are started here once needed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test "$@"
