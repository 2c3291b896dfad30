#!/usr/bin/env bash
# Installs the Debian packages the interop tests and benchmarks use: postfix (smtpd, smtp-source,
# smtp-sink) and swaks. Idempotent; a machine without apt (or without root) just skips, and the
# tests that need these peers say so when they skip.
set -u
need=()
command -v postfix >/dev/null 2>&1 || need+=(postfix)
command -v smtp-source >/dev/null 2>&1 || need+=(postfix)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "install-peers: apt-get or root unavailable; tests needing ${need[*]} will skip" >&2
  exit 0
fi
echo "install-peers: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || echo "install-peers: apt-get install ${need[*]} failed; those tests will skip" >&2
exit 0
