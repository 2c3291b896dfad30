#!/usr/bin/env bash
# Installs the Debian packages the interop tests and benchmarks use: postfix (smtpd, smtp-source,
# smtp-sink), swaks with the Perl TLS modules it only recommends, fetchmail (POP3 client), isync
# (mbsync, IMAP client), Dovecot (the IMAP/POP3 benchmark peer; never started as a service) and
# OpenDKIM (its filter's test mode, `opendkim -t`, verifies our DKIM signatures; never started
# as a service either) and rspamd (the spam scorer the MX can consult; the tests start their own
# on loopback, never the service). Idempotent; a machine without apt (or without root) just skips, and the
# tests that need these peers say so when they skip.
set -u
need=()
command -v postfix >/dev/null 2>&1 || need+=(postfix)
command -v smtp-source >/dev/null 2>&1 || need+=(postfix)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
perl -MNet::SSLeay -MIO::Socket::SSL -e1 >/dev/null 2>&1 || need+=(libnet-ssleay-perl libio-socket-ssl-perl)
command -v fetchmail >/dev/null 2>&1 || need+=(fetchmail)
command -v mbsync >/dev/null 2>&1 || need+=(isync)
[ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd dovecot-pop3d)
[ -x /usr/sbin/opendkim ] || need+=(opendkim opendkim-tools)
[ -x /usr/bin/rspamd ] || need+=(rspamd)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "install-peers: apt-get or root unavailable; tests needing ${need[*]} will skip" >&2
  exit 0
fi
echo "install-peers: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
apt-get update -qq >/dev/null 2>&1 || true
# Packages must not start their daemons (Dovecot would take ports 110/143): the tests and the
# benchmark start their own instances on loopback. policy-rc.d 101 = "action forbidden".
had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
[ $had_policy = 1 ] || printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || echo "install-peers: apt-get install ${need[*]} failed; those tests will skip" >&2
[ $had_policy = 1 ] || rm -f /usr/sbin/policy-rc.d
exit 0
