#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the browser tests
# (Playwright cannot download its own browser here, so it drives this one).
#
# This script never fails the build. When Chromium is missing and cannot be
# installed, it prints why, writes the reason to
# test-artifacts/browser/chromium-missing.txt and exits 0; the browser tests
# then skip and show that reason.
set -uo pipefail

CHROMIUM=/usr/bin/chromium
cd "$(dirname "$0")/.."
REASON_FILE=test-artifacts/browser/chromium-missing.txt

give_up() {
    mkdir -p "$(dirname "$REASON_FILE")"
    printf '%s\n' "$1" >"$REASON_FILE"
    echo "ensure-chromium: NOT installed: $1" >&2
    echo "ensure-chromium: the browser tests will be skipped." >&2
    exit 0
}

if [ -x "$CHROMIUM" ]; then
    rm -f "$REASON_FILE"
    echo "ensure-chromium: found $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi

[ "$(uname -s)" = Linux ] || give_up "$CHROMIUM is missing and this is not Linux ($(uname -s)); install Chromium there by hand."
command -v apt-get >/dev/null 2>&1 || give_up "$CHROMIUM is missing and apt-get is not available to install Debian's chromium."
[ "$(id -u)" = 0 ] || give_up "$CHROMIUM is missing and we are not root; run: sudo apt-get install chromium"

echo "ensure-chromium: $CHROMIUM is missing; installing Debian's chromium with apt-get..."
export DEBIAN_FRONTEND=noninteractive
LOG=$(mktemp)
# Wait (up to 5 minutes) rather than fail if another apt/dpkg holds the lock.
APT_OPTS=(-q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
# No "recommends": they pull in printer and desktop services we do not need;
# fonts-liberation is the one recommendation that matters (readable text in
# screenshots).
if apt-get "${APT_OPTS[@]}" update >"$LOG" 2>&1 &&
    apt-get "${APT_OPTS[@]}" install --no-install-recommends chromium fonts-liberation >>"$LOG" 2>&1; then
    :
else
    tail -n 15 "$LOG" >&2
    rm -f "$LOG"
    give_up "apt-get could not install chromium (see the apt output above)."
fi
rm -f "$LOG"

[ -x "$CHROMIUM" ] || give_up "apt-get finished but $CHROMIUM is still missing."
rm -f "$REASON_FILE"
echo "ensure-chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
