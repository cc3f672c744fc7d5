#!/usr/bin/env bash
# Installs the Debian package on this machine, runs a cluster from the
# installed binaries, and removes (purges) the package, checking that it
# leaves none of its files behind. Run as root (dpkg). CI runs it from
# .ci/run; it refuses to touch a machine that has pgha installed already.
#
#   scripts/test-package.sh [target/debian/pgha_<version>_<arch>.deb]
#
# Without an argument it builds the package first (scripts/package.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if dpkg-query -W -f='${Status}' pgha 2>/dev/null | grep -q "ok installed"; then
  echo "test-package: pgha is installed on this machine already; not touching it" >&2
  exit 1
fi
deb=${1:-$(scripts/package.sh | tail -1)}
echo "== installing $deb"
dpkg -i "$deb"
files=$(dpkg -L pgha)
cleanup() { dpkg -P pgha >/dev/null 2>&1 || true; }
trap cleanup EXIT

fail() { echo "test-package: $*" >&2; exit 1; }
for f in /usr/bin/pgha /usr/bin/pg-fence-guard /usr/bin/pghactl \
         /lib/systemd/system/pgha.service /usr/share/doc/pgha/examples/pgha.yml \
         /usr/share/man/man1/pgha.1.gz; do
  [ -e "$f" ] || fail "$f is not installed"
done
pgha --version
pghactl --version
zcat /usr/share/man/man1/pgha.1.gz | grep -q -- "validate-config" || fail "pgha.1 lacks pgha's options"
# The example configuration is a valid node file for the installed agent,
# once its data directory's parent exists.
example=$(mktemp -d)
sed "s#/var/lib/pgha/#$example/#" /usr/share/doc/pgha/examples/pgha.yml >"$example/pgha.yml"
out=$(pgha --validate-config "$example/pgha.yml" 2>&1) || fail "validate-config of the example: $out"
rm -rf "$example"
grep -q "configuration is valid" <<<"$out" || fail "validate-config said: $out"
if command -v systemd-analyze >/dev/null; then
  v=$(systemd-analyze verify --man=no /lib/systemd/system/pgha.service 2>&1 || true)
  [ -z "$v" ] || fail "systemd-analyze verify: $v"
fi

echo "== a cluster from the installed binaries"
# The same workspace and features as scripts/test.sh: nothing is rebuilt.
PGHA_INSTALLED_DIR=/usr/bin cargo test --workspace --locked --features pgha-agent/kubernetes \
  --test package -- --ignored

echo "== removing the package"
dpkg -r pgha
dpkg -P pgha
trap - EXIT
left=""
while IFS= read -r f; do
  [ -z "$f" ] || [ -d "$f" ] && continue
  [ -e "$f" ] && left="$left $f"
done <<<"$files"
[ -z "$left" ] || fail "left behind after purge:$left"
dpkg-query -W pgha >/dev/null 2>&1 && fail "dpkg still knows pgha"
echo "== the package installed, ran a cluster and removed cleanly"
