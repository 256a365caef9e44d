#!/usr/bin/env bash
# Brings a fresh Debian / Raspberry Pi OS machine to the point where the demo and the suite run:
# the Debian packages Fieldproof needs (only those missing), then .venv with the project and its extras.
# Idempotent: a second run installs nothing and takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: what the tests start for real (broker), the outside judges (openssl,
# systemd-analyze for the device units, Chromium and a CJK font for the page tests and screenshots) and what the build needs.
DEB_PACKAGES=(mosquitto mosquitto-clients openssl systemd ffmpeg gpsd gpsd-clients socat postgresql python3-venv python3-dev ca-certificates chromium fonts-wqy-microhei nginx)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The packaged broker must not hold port 1883 or run as a service we did not ask for: tests start
# their own instances on free ports.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
  systemctl stop mosquitto || true
fi

PY="${PYTHON:-python3}"
stamp=.venv/.fieldproof-installed
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Reinstall only when the project's dependency list changed.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[edge,server,dev]'
  touch "$stamp"
fi
