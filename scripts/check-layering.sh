#!/usr/bin/env bash
# The layering rules of ARCHITECTURE.md, checked on the dependency graph:
# a library crate must not pull in what belongs to a layer above it (the
# REST server, the CLI parser, Patroni's YAML, the agent), so that a Rust
# service can embed it without them. Fails naming the crate and what it
# must not depend on.
set -euo pipefail
cd "$(dirname "$0")/.."

# crate: the packages it must not depend on (normal dependencies only).
rules=(
  "pgha-core: axum clap serde-saphyr tokio-postgres hyper pgha-postgres pgha-agent"
  "pgha-postgres: axum clap serde-saphyr hyper tracing-subscriber pgha-agent pgha-dcs-etcd pgha-dcs-zk pgha-dcs-consul pgha-dcs-k8s"
  "pgha-dcs: axum clap serde-saphyr tokio-postgres tracing-subscriber pgha-postgres pgha-agent"
  "pgha-rest-client: axum clap serde-saphyr tokio-postgres tracing-subscriber pgha-postgres pgha-node pgha-agent"
  "pgha-node: axum clap serde-saphyr tracing-subscriber pgha-config pgha-rest pgha-agent pgha-dcs pgha-dcs-etcd pgha-dcs-zk pgha-dcs-consul pgha-dcs-k8s"
  "pgha-config: clap tracing-subscriber pgha-agent pgha-dcs-etcd pgha-dcs-zk pgha-dcs-consul pgha-dcs-k8s"
  "pgha-ctl: tracing-subscriber pgha-agent"
  "pgha-rest: clap serde-saphyr tracing-subscriber pgha-config pgha-agent pgha-dcs pgha-dcs-etcd pgha-dcs-zk pgha-dcs-consul pgha-dcs-k8s"
  "pgha-sim: axum clap serde-saphyr tokio-postgres hyper pgha-postgres pgha-node pgha-rest pgha-config pgha-agent pgha-dcs"
)

failed=0
for rule in "${rules[@]}"; do
  crate=${rule%%:*}
  deps=$(cargo tree --locked -e normal -p "$crate" --prefix none --format '{p}' | awk '{print $1}' | sort -u)
  for banned in ${rule#*:}; do
    if grep -qx "$banned" <<<"$deps"; then
      echo "layering: $crate depends on $banned (cargo tree -e normal -p $crate -i $banned)" >&2
      failed=1
    fi
  done
done
[ "$failed" = 0 ] && echo "layering: ok (${#rules[@]} crates checked)"
exit "$failed"
