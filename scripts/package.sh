#!/usr/bin/env bash
# Builds the Debian package: target/debian/pgha_<version>_<arch>.deb, with
#
#   /usr/bin/pgha, /usr/bin/pg-fence-guard (beside it: the agent starts it),
#   /usr/bin/pghactl                    built with the dist profile (for size)
#   /lib/systemd/system/pgha.service    packaging/systemd/pgha.service
#   /usr/share/doc/pgha/                README, fencing notes, copyright,
#                                       examples/pgha.yml (a node's file)
#   /usr/share/man/man1/                pgha.1, pghactl.1, pg-fence-guard.1
#                                       (their --help text)
#
# The unit is not enabled or started: it needs /etc/pgha/pgha.yml first
# (copy examples/pgha.yml there). Removing the package stops a running
# unit (and with it PostgreSQL, cleanly); purging removes nothing the
# administrator wrote (/etc/pgha, the data directories).
#
#   scripts/package.sh            build it
#   scripts/test-package.sh       install it here, run a cluster from it,
#                                 remove it (CI does)
#
# Needs only dpkg-deb and gzip (Debian has both); scripts/install-deps.sh
# installs what the build needs.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
[ -n "$version" ] || { echo "package: no version in Cargo.toml" >&2; exit 1; }

cargo build --profile dist --locked -p pgha-agent --bin pgha --bin pg-fence-guard --bin pghactl
bin=target/dist

out=target/debian
stage=$out/pgha_${version}_${arch}
rm -rf "$stage"
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" \
  "$stage/usr/share/doc/pgha/examples" "$stage/usr/share/man/man1"

for b in pgha pg-fence-guard pghactl; do
  install -m 0755 "$bin/$b" "$stage/usr/bin/$b"
done
install -m 0644 packaging/systemd/pgha.service "$stage/lib/systemd/system/pgha.service"
install -m 0644 docs/examples/patroni-node1.yml "$stage/usr/share/doc/pgha/examples/pgha.yml"
install -m 0644 docs/fencing.md "$stage/usr/share/doc/pgha/fencing.md"
gzip -9n -c README.md >"$stage/usr/share/doc/pgha/README.md.gz"
cat >"$stage/usr/share/doc/pgha/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pgha
Source: https://github.com/pgha/pgha

Files: *
License: MIT or Apache-2.0
EOF

# Man pages: each program's --help, as the reference it is.
man_page() { # man_page NAME SUMMARY HELP_TEXT
  local upper
  upper=$(tr '[:lower:]-' '[:upper:]_' <<<"$1")
  {
    printf '.TH %s 1 "" "pgha %s" "User Commands"\n' "$upper" "$version"
    printf '.SH NAME\n%s \\- %s\n.SH DESCRIPTION\n.nf\n' "$1" "$2"
    sed -e 's/\\/\\e/g' -e 's/^\./\\\&./' <<<"$3"
    printf '.fi\n.SH SEE ALSO\n/usr/share/doc/pgha/README.md.gz, /usr/share/doc/pgha/fencing.md\n'
  } | gzip -9n >"$stage/usr/share/man/man1/$1.1.gz"
}
man_page pgha "PostgreSQL high availability agent (Patroni-compatible)" "$("$bin/pgha" --help)"
man_page pghactl "control a pgha or Patroni cluster (patronictl's commands)" "$("$bin/pghactl" --help)"
man_page pg-fence-guard "the fence guard pgha starts beside itself" \
  "pg-fence-guard is started by the pgha agent, never by hand. It stops
PostgreSQL when the agent dies or stops renewing the leader lock, starts
the postmaster as its own child (so that it dies with the guard), holds
the Linux and systemd watchdogs, and hands a dead agent's leader lock over
by running pgha --hand-over-lock. See /usr/share/doc/pgha/fencing.md."

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: pgha
Version: $version
Architecture: $arch
Maintainer: pgha developers <pgha@example.org>
Installed-Size: $size
Depends: libc6 (>= 2.34), libgcc-s1
Recommends: postgresql (>= 15)
Suggests: etcd-server
Section: database
Priority: optional
Homepage: https://github.com/pgha/pgha
Description: PostgreSQL high availability agent, Patroni-compatible
 pgha runs beside each PostgreSQL server, elects one primary through a
 distributed configuration store (etcd, ZooKeeper, Consul or Kubernetes),
 fails over when it dies and rejoins old primaries with pg_rewind. It
 reads Patroni's configuration files and keys and serves Patroni's REST
 API, so patronictl and HAProxy configurations keep working.
EOF

cat >"$stage/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
EOF
cat >"$stage/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
# On removal only: an upgrade leaves the running agent (and PostgreSQL)
# alone; the new binaries are used at the next restart.
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop pgha.service >/dev/null 2>&1 || true
fi
EOF
cat >"$stage/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
EOF
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

deb=$out/pgha_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
