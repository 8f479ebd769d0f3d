#!/usr/bin/env bash
# The test command (README.md, "Set-up"): the whole suite, unit and
# integration. The remote backend tests start real servers (sshd, Garage)
# on 127.0.0.1; scripts/install-test-servers.sh installs them if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-servers.sh
cargo test "$@"
