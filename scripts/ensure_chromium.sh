#!/usr/bin/env bash
# Make sure a headless Chromium is installed (Debian's `chromium` package), for the report test that
# renders `vtag report` pages to a screenshot. Idempotent and quiet; needs root (or sudo) to install.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "ensure_chromium: chromium is missing and this user cannot install packages (no root, no sudo)" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null 2>&1 || { echo "ensure_chromium: chromium still missing after apt-get" >&2; exit 1; }
