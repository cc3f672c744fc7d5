//! The DCS conformance suite against the in-repo kube-apiserver emulator
//! (one per case); each node reaches it through its own cuttable link and
//! has its Pod created first. `restart_server` restarts the emulator on the
//! same port, keeping its objects.
//!
//! Against a real cluster: `PGHA_K8S_TEST_KUBECONFIG=<file>` (and optionally
//! `PGHA_K8S_TEST_NAMESPACE`, default `default`), with `--test-threads=1`
//! (member names, hence Pod names, repeat between cases). Not plain
//! `KUBECONFIG`, so a developer's cluster is never written to by accident.
//! Nodes then reach the API server through their links with the
//! kubeconfig's credentials, and `restart_server` cuts every link for two
//! seconds instead (a real API server cannot be restarted from here).
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Pod};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use pgha_core::model::Timing;
use pgha_dcs_k8s::{ApiServer, K8sConfig, K8sDcs};
use pgha_k8s_emulator::Emulator;
use pgha_testkit::conformance::{Backend, Capabilities, LinkMode, TestNode, layout};
use pgha_testkit::proxy::FaultProxy;
use serde_json::{Value, json};

enum Target {
    Emulator(Emulator),
    Real {
        kubeconfig: PathBuf,
        server: SocketAddr,
    },
}

struct K8sBackend {
    target: Target,
    namespace: String,
    use_endpoints: bool,
    links: Mutex<Vec<Arc<FaultProxy>>>,
}

impl std::fmt::Debug for K8sBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("K8sBackend")
    }
}

impl K8sBackend {
    async fn start(use_endpoints: bool) -> anyhow::Result<Self> {
        let links = Mutex::new(Vec::new());
        if let Some(path) = std::env::var_os("PGHA_K8S_TEST_KUBECONFIG") {
            let kubeconfig = PathBuf::from(path);
            let cfg = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(&kubeconfig)?,
                &Default::default(),
            )
            .await?;
            let host = cfg.cluster_url.host().unwrap_or("localhost").to_string();
            let port = cfg.cluster_url.port_u16().unwrap_or(443);
            let server = (host.as_str(), port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| anyhow::anyhow!("cannot resolve {host}"))?;
            return Ok(K8sBackend {
                target: Target::Real { kubeconfig, server },
                namespace: std::env::var("PGHA_K8S_TEST_NAMESPACE")
                    .unwrap_or_else(|_| "default".into()),
                use_endpoints,
                links,
            });
        }
        Ok(K8sBackend {
            target: Target::Emulator(Emulator::start_local().await?),
            namespace: "pgha".into(),
            use_endpoints,
            links,
        })
    }

    /// A client straight to the API server, as an operator's tool.
    async fn direct(&self) -> anyhow::Result<kube::Client> {
        let cfg = match &self.target {
            Target::Emulator(e) => kube::Config::new(e.url().parse()?),
            Target::Real { kubeconfig, .. } => {
                kube::Config::from_custom_kubeconfig(
                    kube::config::Kubeconfig::read_from(kubeconfig)?,
                    &Default::default(),
                )
                .await?
            }
        };
        Ok(kube::Client::try_from(cfg)?)
    }

    fn addr(&self) -> SocketAddr {
        match &self.target {
            Target::Emulator(e) => e.addr(),
            Target::Real { server, .. } => *server,
        }
    }

    fn kind(&self) -> ApiResource {
        if self.use_endpoints {
            ApiResource::erase::<Endpoints>(&())
        } else {
            ApiResource::erase::<ConfigMap>(&())
        }
    }

    /// Creates (or relabels) the Pod of member `name` in cluster `scope`.
    async fn ensure_pod(&self, scope: &str, name: &str) -> anyhow::Result<()> {
        let pods: Api<DynamicObject> = Api::namespaced_with(
            self.direct().await?,
            &self.namespace,
            &ApiResource::erase::<Pod>(&()),
        );
        let pod: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"cluster-name": scope}},
            "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]},
        }))?;
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                pods.patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {
                        "labels": {"cluster-name": scope},
                        "annotations": {"status": null, "pgha/heartbeat": null},
                    }})),
                )
                .await?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Sets annotations on one object of the cluster, creating it if needed.
    async fn annotate(
        &self,
        res: ApiResource,
        scope: &str,
        name: &str,
        ann: Value,
    ) -> anyhow::Result<()> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.direct().await?, &self.namespace, &res);
        let body = json!({"metadata": {"labels": {"cluster-name": scope}, "annotations": ann}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let mut obj = body.clone();
                obj["apiVersion"] = json!(res.api_version);
                obj["kind"] = json!(res.kind);
                obj["metadata"]["name"] = json!(name);
                api.create(&PostParams::default(), &serde_json::from_value(obj)?)
                    .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl Backend for K8sBackend {
    async fn node(&self, scope: &str, name: &str, timing: Timing) -> anyhow::Result<TestNode> {
        self.ensure_pod(scope, name).await?;
        let proxy = Arc::new(FaultProxy::start(self.addr()).await?);
        let mut config = match &self.target {
            Target::Emulator(_) => K8sConfig::with_url(format!("http://{}", proxy.addr())),
            Target::Real { kubeconfig, .. } => {
                let mut c = K8sConfig::default();
                c.api = ApiServer::kubeconfig(kubeconfig.clone());
                c.connect_via = Some(format!("https://{}", proxy.addr()));
                c
            }
        };
        config.namespace = self.namespace.clone();
        config.use_endpoints = self.use_endpoints;
        let dcs = K8sDcs::new(config, layout(scope), name, timing)?;
        self.links.lock().unwrap().push(proxy.clone());
        Ok(TestNode {
            dcs: Arc::new(dcs),
            link: proxy,
        })
    }

    /// Plants `value` where Kubernetes keeps `key`. The field-per-annotation
    /// values (`failover`, `sync`, `status`) cannot hold a non-object at
    /// all: such a value is planted in the annotation that must parse
    /// (`scheduled_at`, `quorum`, `optime`), where a person's typo would land.
    async fn write_raw(&self, scope: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let text = String::from_utf8_lossy(value).into_owned();
        let leader = if self.use_endpoints {
            scope.to_string()
        } else {
            format!("{scope}-leader")
        };
        let config = format!("{scope}-config");
        if let Some(member) = key.strip_prefix("members/") {
            self.ensure_pod(scope, member).await?;
            return self
                .annotate(
                    ApiResource::erase::<Pod>(&()),
                    scope,
                    member,
                    json!({"status": text}),
                )
                .await;
        }
        let fields = |typed: &str| -> Value {
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => Value::Object(
                    m.into_iter()
                        .map(|(k, v)| {
                            let v = match v {
                                Value::String(s) => Value::String(s),
                                Value::Null => Value::Null,
                                other => Value::String(other.to_string()),
                            };
                            (k, v)
                        })
                        .collect(),
                ),
                _ => json!({ typed: format!("garbage {text}") }),
            }
        };
        let (name, ann) = match key {
            "initialize" | "config" | "history" => (config, json!({ key: text })),
            "leader" | "failsafe" => (leader, json!({ key: text })),
            "status" => (leader, fields("optime")),
            "failover" => (format!("{scope}-failover"), fields("scheduled_at")),
            "sync" => (format!("{scope}-sync"), fields("quorum")),
            other => anyhow::bail!("not a cluster key: {other}"),
        };
        self.annotate(self.kind(), scope, &name, ann).await
    }

    async fn restart_server(&self) -> anyhow::Result<()> {
        match &self.target {
            Target::Emulator(e) => Ok(e.restart().await?),
            Target::Real { .. } => {
                let links: Vec<_> = self.links.lock().unwrap().clone();
                for l in &links {
                    l.set(LinkMode::Refuse);
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                for l in &links {
                    l.set(LinkMode::Open);
                }
                Ok(())
            }
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            every_write_changes_version: false,
            per_key_versions: false,
            ..Capabilities::default()
        }
    }
}

pgha_testkit::dcs_conformance_suite!(K8sBackend::start(false));

/// The cases whose requests depend on the layout, again with
/// `use_endpoints: true` (Endpoints instead of ConfigMaps). The cases left
/// out (renewal over time, expiry, watch timeout, unreachable server) run
/// the same code paths on other object names and take most of the time.
mod endpoints {
    use super::*;
    pgha_testkit::dcs_conformance_suite!(@cases K8sBackend::start(true);
        exactly_one_leader_among_contenders,
        non_owner_cannot_renew_or_release,
        compare_and_set_conflicts,
        watch_wakes_on_leader_change,
        unreadable_values_are_reported_by_key,
        server_restart_is_survived,
        initialize_race_has_one_winner,
        take_leader_from_replaces_a_hand_written_key,
        take_leader_from_refuses_a_changed_key,
        remove_leader_at_removes_only_the_version_read,
        member_status_round_trips,
        shared_values_round_trip_and_cluster_deletes,
    );
}
