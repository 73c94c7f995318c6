#!/usr/bin/env bash
# Install Debian's Chromium and chromedriver for the browser tests (tests/ui), if missing.
# Playwright drives this system browser (executable_path=/usr/bin/chromium); it never downloads
# its own, so `playwright install` is not needed. Needs root (or sudo) and an apt source.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown)"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install_browser.sh: need root or sudo to apt-get install chromium" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q chromium chromium-driver
/usr/bin/chromium --version
