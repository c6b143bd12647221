#!/usr/bin/env bash
# Install the machine-level programs the test suite runs for real:
#   prometheus, promtool  (Debian package "prometheus": the integration test scrapes /metrics)
#   chromium              (Debian package "chromium": dashboard tests in a real browser)
#   mosquitto, mosquitto_passwd (Debian package "mosquitto": MQTT source tests start their own
#                         brokers), openssl (a throwaway CA for the MQTT TLS test)
#   initdb, pg_ctl        (Debian package "postgresql": PostgreSQL CDC source and sink tests
#                         start private clusters with wal_level=logical)
# Idempotent: apt is used only when one of the binaries is missing. Fails loudly when it
# cannot install them, because the tests that need them would fail anyway.
set -euo pipefail

need=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
{ command -v mosquitto || [ -x /usr/sbin/mosquitto ]; } >/dev/null 2>&1 && command -v mosquitto_passwd >/dev/null 2>&1 || need+=(mosquitto)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: missing ${need[*]} and apt-get is not available; install them by hand" >&2
  exit 1
fi
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)

echo "install-test-deps: installing ${need[*]}" >&2
# Debian's prometheus package would start a service; policy-rc.d 101 keeps it from starting
# (the tests only need the binaries and start their own instances).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod +x "$policy"
  created_policy=1
fi
cleanup() { [ "$created_policy" -eq 0 ] || "${SUDO[@]}" rm -f "$policy"; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

for bin in prometheus promtool chromium mosquitto_passwd openssl; do
  command -v "$bin" >/dev/null 2>&1 || { echo "install-test-deps: $bin still missing after apt-get" >&2; exit 1; }
done
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || { echo "install-test-deps: initdb still missing after apt-get" >&2; exit 1; }
