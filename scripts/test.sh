#!/usr/bin/env bash
# The test command (README.md, "Set-up"): the whole suite, unit and
# integration. The remote backend tests start real servers (sshd, Garage)
# on 127.0.0.1; scripts/install-test-servers.sh installs them if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-servers.sh
# Tests that cannot run on this machine record a SKIP line here
# (tests/integration/common.rs, `skip`); printed and counted below.
skips="${CARGO_TARGET_DIR:-target}/tmp/skipped-tests.txt"
rm -f "$skips"
cargo test "$@"
if [ -s "$skips" ]; then
    cat "$skips"
    echo "$(wc -l <"$skips") test(s) skipped on this machine (SKIP lines above)"
else
    echo "no test skipped"
fi
