#!/usr/bin/env bash
# Headless Chromium from Debian's package, for the report tests (tests/report/): they open
# the HTML report as a person would and screenshot it. Installs only when missing (as root,
# or through sudo where that works without a password); elsewhere says so and leaves the
# browser test to skip. Idempotent: a second run returns at once.
set -euo pipefail

if command -v chromium >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "chromium is not installed and this user cannot install it (apt-get install chromium); the report's browser test will skip"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "installed $(chromium --version)"
