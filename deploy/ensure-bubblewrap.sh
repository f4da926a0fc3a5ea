#!/usr/bin/env bash
# Makes sure Debian's bubblewrap is at hand: each run's sandbox (worker/sandbox.py), and its
# tests. Installs it with apt when we may; without it, DLAAS_SANDBOX=auto runs unsandboxed.
set -euo pipefail
bwrap=/usr/bin/bwrap
if [ -x "$bwrap" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's bubblewrap (the runs' sandbox, worker/sandbox.py) ..."
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1 ||
     { apt-get update -qq >/dev/null 2>&1 &&
       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1; }; then
    exit 0
  fi
fi
echo "no bwrap at $bwrap and apt-get could not install it: runs are not sandboxed" >&2
exit 1
