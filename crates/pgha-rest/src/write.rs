//! The REST API's write side: Patroni's paths, bodies and status codes.
//!
//! Switchover, failover and configuration changes go straight to the DCS
//! (with compare-and-set where Patroni uses it); restart, reload and
//! reinitialize are handed to the HA loop, which does all changes to
//! PostgreSQL. Bad requests get a 4xx whose JSON body says what is wrong;
//! successful ones answer with Patroni's words, which patronictl prints.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pgha_core::dcs::{DcsError, DcsExt, SharedKey};
use pgha_core::ha::switchover::requested_candidate_problem;
use pgha_core::model::failover::{parse_iso8601, python_isoformat};
use pgha_core::model::{Cluster, DynamicConfig, Expect, Failover, lenient};
use serde_json::{Map, Value};

use super::ApiState;
use pgha_node::command::version_number;
use pgha_node::{AskError, ReinitializeAnswer, RestartAnswer, RestartRequest};

/// A JSON error response: `{"error": "..."}`.
pub fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        axum::Json(serde_json::json!({"error": message.into()})),
    )
        .into_response()
}

/// A refused request: its status and the reason, sent as a JSON error.
#[derive(Debug)]
pub struct Refusal {
    code: StatusCode,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.code, self.message)
    }
}

fn refuse(code: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// A plain-text answer, as Patroni gives for its write endpoints.
fn text(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        message.into(),
    )
        .into_response()
}

/// Patroni's status and message for the loop's answer to a restart.
fn restart_response(answer: RestartAnswer) -> Response {
    match answer {
        RestartAnswer::Restarted => text(StatusCode::OK, "restarted successfully"),
        RestartAnswer::Scheduled => text(StatusCode::ACCEPTED, "Restart scheduled"),
        RestartAnswer::AlreadyScheduled => {
            error(StatusCode::CONFLICT, "Another restart is already scheduled")
        }
        RestartAnswer::NotRunning => {
            error(StatusCode::SERVICE_UNAVAILABLE, "postgres is not running")
        }
        RestartAnswer::ConditionsNotMet(why) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("restart conditions are not satisfied: {why}"),
        ),
        RestartAnswer::Superseded => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "superseded by another restart request",
        ),
        RestartAnswer::Failed(why) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("restart failed: {why}"),
        ),
    }
}

/// Patroni's status and message for the loop's answer to a reinitialize.
fn reinitialize_response(answer: ReinitializeAnswer) -> Response {
    let unavailable = |message: String| error(StatusCode::SERVICE_UNAVAILABLE, message);
    match answer {
        ReinitializeAnswer::Started => text(StatusCode::OK, "reinitialize started"),
        ReinitializeAnswer::ClusterUnknown => {
            unavailable("the cluster has not been read from the DCS yet".into())
        }
        ReinitializeAnswer::NoLeader => {
            unavailable("Cluster has no leader, can not reinitialize".into())
        }
        ReinitializeAnswer::IsLeader => unavailable("I am the leader, can not reinitialize".into()),
        ReinitializeAnswer::Busy(job) => unavailable(format!("{job} already in progress")),
        ReinitializeAnswer::Impossible(why) => unavailable(why),
    }
}

/// Parses a request body that must be a JSON object (or may be empty).
pub fn object(body: &[u8], optional: bool) -> Result<Map<String, Value>, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if optional {
            Ok(Map::new())
        } else {
            Err(refuse(
                StatusCode::BAD_REQUEST,
                "the request needs a JSON object as its body",
            ))
        };
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "the body must be a JSON object, not {}",
                pgha_core::model::dynamic_config::json_kind(&other)
            ),
        )),
        Err(e) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

/// Rejects keys outside `allowed`, naming them (a typo should not pass silently).
fn only(body: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), Refusal> {
    let unknown: Vec<&str> = body
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown field(s) for {what}: {} (expected: {})",
                unknown.join(", "),
                allowed.join(", ")
            ),
        ))
    }
}

/// An optional string field; any other type is a 400 naming the field.
fn string_field(body: &Map<String, Value>, key: &str) -> Result<Option<String>, Refusal> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "{key} must be a string, not {}",
                pgha_core::model::dynamic_config::json_kind(other)
            ),
        )),
    }
}

/// A boolean field as Patroni reads it (`true`, `"yes"`, `1`, ...).
fn bool_field(body: &Map<String, Value>, key: &str) -> Result<bool, Refusal> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(v) => lenient::bool(v).ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("{key} must be true or false, not {v}"),
            )
        }),
    }
}

/// A future time with a timezone, as Patroni requires for schedules.
fn schedule(text: &str, action: &str) -> Result<jiff::Timestamp, Refusal> {
    let t = text.trim();
    let at = parse_iso8601(t).map_err(|_| {
        refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601",
        )
    })?;
    // Readable, but without an offset it would mean a different instant on each node.
    let has_zone = t.ends_with(['Z', 'z']) || t.rfind(['+', '-']).is_some_and(|i| i > 10);
    if !has_zone {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("Timezone information is mandatory for the scheduled {action}"),
        ));
    }
    if at < jiff::Timestamp::now() {
        return Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Cannot schedule {action} in the past"),
        ));
    }
    Ok(at)
}

async fn load(state: &ApiState) -> Result<Cluster, Refusal> {
    state.dcs.load().await.map_err(|e| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the cluster from the DCS: {e}"),
        )
    })
}

/// `POST /switchover` and `POST /failover`.
pub async fn switchover(state: &ApiState, body: &[u8], mut action: &'static str) -> Response {
    let body = match object(body, false) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = only(
        &body,
        &["leader", "candidate", "member", "scheduled_at"],
        action,
    ) {
        return r.into_response();
    }
    let (leader, candidate, scheduled) = match (
        string_field(&body, "leader"),
        string_field(&body, "candidate"),
        string_field(&body, "member"),
        string_field(&body, "scheduled_at"),
    ) {
        (Ok(l), Ok(c), Ok(m), Ok(s)) => (l, c.or(m), s),
        (Err(r), ..) | (_, Err(r), ..) | (_, _, Err(r), _) | (.., Err(r)) => {
            return r.into_response();
        }
    };
    let cluster = match load(state).await {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let paused = cluster.dynamic_config().pause();
    if action == "failover" && candidate.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "Failover could be performed only to a specific candidate",
        );
    }
    if action == "switchover" && leader.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "Switchover could be performed only from a specific leader",
        );
    }
    let scheduled_at = match scheduled.as_deref() {
        None => None,
        Some(_) if action == "failover" => {
            return error(StatusCode::BAD_REQUEST, "Failover can't be scheduled");
        }
        Some(_) if paused => {
            return error(
                StatusCode::BAD_REQUEST,
                "Can't schedule switchover in the paused state",
            );
        }
        Some(t) => match schedule(t, action) {
            Ok(at) => Some(at),
            Err(r) => return r.into_response(),
        },
    };
    if paused && candidate.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "Switchover is possible only to a specific candidate in a paused state",
        );
    }
    if action == "failover" && leader.is_some() {
        action = "switchover";
    }
    if leader.is_some() && leader == candidate {
        return error(
            StatusCode::BAD_REQUEST,
            "Switchover target and source are the same",
        );
    }
    if scheduled_at.is_none()
        && let Err(why) = failover_possible(
            state,
            &cluster,
            leader.as_deref(),
            candidate.as_deref(),
            action,
        )
        .await
    {
        return error(StatusCode::PRECONDITION_FAILED, why.to_string());
    }
    let request = Failover {
        leader: leader.clone(),
        member: candidate.clone(),
        // Stored as Patroni stores it (the given offset kept), so
        // patronictl shows the same string for pgha and Patroni.
        scheduled_at_text: scheduled_at.map(|t| {
            scheduled
                .as_deref()
                .and_then(|text| python_isoformat(text).ok())
                .unwrap_or_else(|| t.to_string())
        }),
        extra: Map::new(),
    };
    if let Err(e) = state.dcs.write_failover(&request, Expect::Any).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("failed to write failover key into DCS: {e}"),
        );
    }
    state.node.wake_up();
    if scheduled_at.is_some() {
        let title = if action == "failover" {
            "Failover"
        } else {
            "Switchover"
        };
        return text(StatusCode::ACCEPTED, format!("{title} scheduled"));
    }
    poll_result(
        state,
        cluster.leader_name().map(String::from),
        candidate,
        action,
    )
    .await
}

/// Why a switchover or failover cannot happen now (answered 412 with
/// Patroni's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Impossible {
    #[error("leader name does not match: {named} is not the leader, {actual} is")]
    NotTheLeader { named: String, actual: String },
    #[error("leader name does not match: the cluster has no leader, not {0}")]
    NoLeader(String),
    #[error("candidate does not exist: {candidate} is not a member (members: {})", members.join(", "))]
    NoSuchCandidate {
        candidate: String,
        members: Vec<String>,
    },
    #[error("{action} is not possible: cluster does not have members except leader")]
    NoOtherMember { action: String },
    /// Each candidate with its problem.
    #[error("{action} is not possible: no good candidates have been found: {}", problems.join("; "))]
    NoGoodCandidate {
        action: String,
        problems: Vec<String>,
    },
}

/// Whether some candidate can take over now; if not, why, naming each
/// member and its problem.
async fn failover_possible(
    state: &ApiState,
    cluster: &Cluster,
    leader: Option<&str>,
    candidate: Option<&str>,
    action: &str,
) -> Result<(), Impossible> {
    if let Some(l) = leader
        && cluster.leader_name() != Some(l)
    {
        return Err(match cluster.leader_name() {
            Some(actual) => Impossible::NotTheLeader {
                named: l.to_string(),
                actual: actual.to_string(),
            },
            None => Impossible::NoLeader(l.to_string()),
        });
    }
    if let Some(c) = candidate
        && cluster.member(c).is_none()
    {
        return Err(Impossible::NoSuchCandidate {
            candidate: c.to_string(),
            members: cluster.members.iter().map(|m| m.name.clone()).collect(),
        });
    }
    let statuses = pgha_node::peers::statuses(
        &state.peers,
        &cluster.members,
        cluster.leader_name().unwrap_or(""),
        Duration::from_secs(2),
    )
    .await;
    let candidates: Vec<_> = statuses
        .iter()
        .filter(|p| candidate.is_none_or(|c| p.name == c))
        .collect();
    if candidates.is_empty() {
        return Err(Impossible::NoOtherMember {
            action: action.to_string(),
        });
    }
    let mut problems = Vec::new();
    let named_without_leader = cluster.leader.is_none() && candidate.is_some();
    // In synchronous mode a switchover, or a failover naming no
    // candidate, goes to a synchronous standby only (as Patroni's); a
    // failover to a named member is the operator's explicit call.
    let sync_mode = cluster.dynamic_config().sync_settings().mode;
    let sync_only = action == "switchover" || candidate.is_none();
    for p in candidates {
        let problem = requested_candidate_problem(p, named_without_leader).or_else(|| {
            sync_only
                .then(|| pgha_core::ha::switchover::sync_problem(sync_mode, cluster, &p.name))
                .flatten()
        });
        match problem {
            None => return Ok(()),
            Some(why) => problems.push(format!("{} {why}", p.name)),
        }
    }
    Err(Impossible::NoGoodCandidate {
        action: action.to_string(),
        problems,
    })
}

/// Waits (bounded) for the lock to change hands after a request, as
/// Patroni's API does, and says how it went.
async fn poll_result(
    state: &ApiState,
    old: Option<String>,
    candidate: Option<String>,
    action: &str,
) -> Response {
    let rounds = state.node.status().timing.loop_wait.as_secs().max(10) * 2;
    let (verb, title) = if action == "failover" {
        ("failed", "Failed")
    } else {
        ("switched", "Switched")
    };
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(c) = state.dcs.load().await else {
            continue;
        };
        if let Some(new) = c.leader_name()
            && Some(new) != old.as_deref()
        {
            return match candidate.as_deref() {
                Some(want) if want != new => text(
                    StatusCode::OK,
                    format!("{title} over to \"{new}\" instead of \"{want}\""),
                ),
                _ => text(
                    StatusCode::OK,
                    format!("Successfully {verb} over to \"{new}\""),
                ),
            };
        }
        if c.failover.is_none() {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{} failed", capitalise(action)),
            );
        }
    }
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "{} status unknown after {rounds} seconds; operation may still be in progress",
            capitalise(action)
        ),
    )
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// `DELETE /switchover`: cancel a scheduled switchover.
pub async fn delete_switchover(state: &ApiState) -> Response {
    let cluster = match load(state).await {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    match cluster
        .failover
        .as_ref()
        .filter(|f| f.value.scheduled_at_text.is_some())
    {
        None => error(StatusCode::NOT_FOUND, "no switchover is scheduled"),
        Some(f) => match state
            .dcs
            .delete(SharedKey::Failover, Expect::Version(f.version.clone()))
            .await
        {
            Ok(()) => text(StatusCode::OK, "scheduled switchover deleted"),
            Err(DcsError::Conflict { .. }) => error(
                StatusCode::CONFLICT,
                "the switchover request changed meanwhile; read it again",
            ),
            Err(e) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot delete the switchover: {e}"),
            ),
        },
    }
}

/// `POST /restart`: now (answered when done) or at `schedule`.
pub async fn restart(state: &ApiState, body: &[u8]) -> Response {
    let body = match object(body, true) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let mut request = RestartRequest::default();
    for (k, v) in &body {
        match k.as_str() {
            "schedule" => {
                let Some(t) = v.as_str() else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("schedule must be a string, not {v}"),
                    );
                };
                match schedule(t, "restart") {
                    Ok(at) => {
                        request.schedule = Some(at);
                        request.schedule_text = python_isoformat(t).ok();
                    }
                    Err(r) => return r.into_response(),
                }
            }
            "role" => match v.as_str() {
                Some(r @ ("primary" | "master" | "replica" | "standby_leader")) => {
                    request.role = Some(r.to_string())
                }
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "PostgreSQL role should be either primary, standby_leader, or replica",
                    );
                }
            },
            "postgres_version" => match v.as_str().map(version_number) {
                Some(Ok(_)) => request.postgres_version = v.as_str().map(String::from),
                Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("postgres_version must be a string, not {v}"),
                    );
                }
            },
            "timeout" => {
                let secs = lenient::int(v).or_else(|| {
                    v.as_str()
                        .and_then(|s| s.trim().trim_end_matches('s').parse().ok())
                });
                match secs {
                    Some(s) if s > 0 => {
                        request.timeout = Some(Duration::from_secs(s.unsigned_abs()))
                    }
                    _ => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "Timeout should be a positive number of seconds",
                        );
                    }
                }
            }
            "restart_pending" => match bool_field(&body, k) {
                Ok(b) => request.restart_pending = b,
                Err(r) => return r.into_response(),
            },
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("Unknown filter for the scheduled restart: {other}"),
                );
            }
        }
    }
    if request.schedule.is_some() && state.node.status().paused {
        return error(
            StatusCode::CONFLICT,
            "Can't schedule restart in the paused state",
        );
    }
    let wait = request.timeout.unwrap_or(Duration::from_secs(60)) + Duration::from_secs(60);
    answer(state.node.restart(request, wait).await, restart_response)
}

/// The loop's answer as Patroni's response, or 503 saying why there is none.
fn answer<A>(answer: Result<A, AskError>, respond: fn(A) -> Response) -> Response {
    match answer {
        Ok(a) => respond(a),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `DELETE /restart`: cancel a scheduled restart.
pub async fn delete_restart(state: &ApiState) -> Response {
    answer(
        state.node.cancel_restart(Duration::from_secs(30)).await,
        |deleted| {
            if deleted {
                text(StatusCode::OK, "scheduled restart deleted")
            } else {
                error(StatusCode::NOT_FOUND, "no restarts are scheduled")
            }
        },
    )
}

/// `POST /reload`: re-read the configuration and apply it.
pub async fn reload(state: &ApiState) -> Response {
    use tokio::sync::mpsc::error::TrySendError;
    match state.reload.try_send(()) {
        // Full: a reload is already coming, which will read the same file.
        Ok(()) | Err(TrySendError::Full(())) => text(StatusCode::ACCEPTED, "reload scheduled"),
        Err(TrySendError::Closed(())) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "nobody reloads the configuration: the node is not running",
        ),
    }
}

/// `POST /failsafe`: a primary in failsafe mode (its DCS is unreachable)
/// asks this member to confirm it. Patroni's answers: 200 `Accepted`
/// (with this member's WAL position in the `lsn` header), 500 `Running as
/// a leader`, 502 when failsafe mode is off here. A confirmation is a
/// promise: this member takes no leader lock for the sender's window.
pub fn failsafe(state: &ApiState, body: &[u8]) -> Response {
    use pgha_node::failsafe::PingRefused;
    let ping: pgha_core::ha::failsafe::FailsafePing = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("POST /failsafe needs a JSON object with the primary's name: {e}"),
            );
        }
    };
    match state.node.confirm_failsafe(&ping) {
        Ok(()) => {
            let status = state.node.status();
            let lsn = status
                .observed
                .as_ref()
                .and_then(|o| o.db.as_ref())
                .and_then(|d| d.wal_position());
            let mut response = text(StatusCode::OK, "Accepted");
            if let Some(lsn) = lsn
                && let Ok(v) = axum::http::HeaderValue::from_str(&lsn.to_string())
            {
                response.headers_mut().insert("lsn", v);
            }
            tracing::debug!(leader = %ping.name, "confirmed a primary in failsafe mode");
            response
        }
        Err(PingRefused::Leader) => text(StatusCode::INTERNAL_SERVER_ERROR, "Running as a leader"),
        Err(PingRefused::Disabled) => {
            error(StatusCode::BAD_GATEWAY, "failsafe_mode is not enabled")
        }
    }
}

/// `POST /reinitialize`: wipe and reclone this replica.
pub async fn reinitialize(state: &ApiState, body: &[u8]) -> Response {
    let body = match object(body, true) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = only(&body, &["force", "from_leader"], "reinitialize") {
        return r.into_response();
    }
    let (force, from_leader) = match (bool_field(&body, "force"), bool_field(&body, "from_leader"))
    {
        (Ok(f), Ok(l)) => (f, l),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    answer(
        state
            .node
            .reinitialize(force, from_leader, Duration::from_secs(30))
            .await,
        reinitialize_response,
    )
}

/// `PATCH /config`: merge into the dynamic configuration (`null` deletes
/// a key), written with compare-and-set on the version read.
pub async fn patch_config(state: &ApiState, body: &[u8]) -> Response {
    let patch = match object(body, false) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let cluster = match load(state).await {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let Some(current) = cluster.config.as_ref() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster has no dynamic configuration to patch",
        );
    };
    let mut config = current.value.clone();
    config.merge_patch(&patch);
    if let Err(e) = config.check_write(Some(&current.value)) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    if config != current.value {
        match state
            .dcs
            .write_config(&config, Expect::Version(current.version.clone()))
            .await
        {
            Ok(_) => {}
            Err(DcsError::Conflict { .. }) => {
                return error(
                    StatusCode::CONFLICT,
                    "the configuration was changed by someone else meanwhile; read it and patch again",
                );
            }
            Err(e) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot write the configuration: {e}"),
                );
            }
        }
    }
    state.node.wake_up();
    (StatusCode::OK, axum::Json(config)).into_response()
}

/// `PUT /config`: replace the dynamic configuration.
pub async fn put_config(state: &ApiState, body: &[u8]) -> Response {
    let new = match object(body, false) {
        Ok(b) => DynamicConfig::from_map(b),
        Err(r) => return r.into_response(),
    };
    let cluster = match load(state).await {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = new.check_write(cluster.config.as_ref().map(|c| &c.value)) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    if cluster.config.as_ref().is_none_or(|c| c.value != new)
        && let Err(e) = state.dcs.write_config(&new, Expect::Any).await
    {
        return error(
            StatusCode::BAD_GATEWAY,
            format!("cannot write the configuration: {e}"),
        );
    }
    state.node.wake_up();
    (StatusCode::OK, axum::Json(new)).into_response()
}
