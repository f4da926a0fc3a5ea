#!/usr/bin/env bash
# Makes sure Debian's chromium is at hand for the dashboard's browser tests (Playwright drives
# it: its own browser download is not used). Installs it with apt when we may.
set -euo pipefail
chromium="${DLAAS_TEST_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$chromium" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium (for the dashboard's browser tests) ..."
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 ||
     { apt-get update -qq >/dev/null 2>&1 &&
       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }; then
    exit 0
  fi
fi
echo "no chromium at $chromium and apt-get could not install it: the browser tests will fail" >&2
echo "(install Debian's chromium, or set DLAAS_TEST_CHROMIUM to a Chromium binary)" >&2
exit 1
