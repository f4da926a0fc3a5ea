#!/usr/bin/env bash
# Makes sure a Debian package the tests need is at hand, installing it with apt when we may:
#   deploy/ensure-apt.sh BINARY PACKAGE WHAT
# chromium: the dashboard's browser tests (Playwright drives it; its own browser download is
# not used; DLAAS_TEST_CHROMIUM names another binary). bubblewrap: each run's sandbox
# (worker/sandbox.py); without it DLAAS_SANDBOX=auto runs unsandboxed and its tests fail.
set -euo pipefail
binary="$1" package="$2" what="$3"
if [ -x "$binary" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's $package ($what) ..."
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null 2>&1 ||
     { apt-get update -qq >/dev/null 2>&1 &&
       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null 2>&1; }; then
    exit 0
  fi
fi
echo "no $binary and apt-get could not install $package: $what will fail" >&2
exit 1
