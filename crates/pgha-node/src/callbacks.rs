//! User scripts called on events, as Patroni calls them: `script action
//! role scope` (`on_start`, `on_stop`, `on_restart`, `on_reload`,
//! `on_role_change`), and `pre_promote`, whose failure vetoes a promotion.
//!
//! Event callbacks run detached with a time limit: a failing or hanging
//! script is logged and killed, and never stalls the HA loop.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::process::Command;

/// How long an event callback may run before it is killed.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(60);

/// The configured callbacks of this node.
#[derive(Debug, Clone, Default)]
pub struct Callbacks {
    pub scripts: BTreeMap<String, String>,
    pub scope: String,
}

impl Callbacks {
    /// Runs the callback for `action` (e.g. `on_role_change`) in the
    /// background, if one is configured.
    pub fn fire(&self, action: &str, role: &str) {
        let Some(script) = self.scripts.get(action).cloned() else {
            return;
        };
        let (action, role, scope) = (action.to_string(), role.to_string(), self.scope.clone());
        tokio::spawn(async move {
            match run(&script, &[&action, &role, &scope], CALLBACK_TIMEOUT).await {
                Ok(()) => tracing::info!("callback {action} ({script}) finished"),
                Err(e) => tracing::warn!("callback {action} ({script}): {e}"),
            }
        });
    }
}

/// Why a script did not succeed. Any of them vetoes a `pre_promote`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("empty command")]
    Empty,
    #[error("cannot run it: {0}")]
    Spawn(String),
    #[error("still running after {0:?}; killed")]
    TimedOut(Duration),
    #[error("failed while waiting for it: {0}")]
    Wait(String),
    #[error("exited with {status}: {stderr}")]
    Exited { status: String, stderr: String },
}

/// Runs `script` (its own words split on whitespace, then `args`) within
/// `timeout`; kills it when the time is up.
pub async fn run(script: &str, args: &[&str], timeout: Duration) -> Result<(), CallbackError> {
    let mut words = script.split_whitespace();
    let program = words.next().ok_or(CallbackError::Empty)?;
    let mut cmd = Command::new(program);
    cmd.args(words)
        .args(args)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let child = cmd
        .spawn()
        .map_err(|e| CallbackError::Spawn(e.to_string()))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(CallbackError::TimedOut(timeout)),
        Ok(Err(e)) => Err(CallbackError::Wait(e.to_string())),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(CallbackError::Exited {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scripts_run_with_arguments_and_are_bounded() {
        assert!(
            run(
                "true",
                &["on_start", "primary", "demo"],
                Duration::from_secs(5)
            )
            .await
            .is_ok()
        );
        assert!(matches!(
            run("false", &[], Duration::from_secs(5)).await,
            Err(CallbackError::Exited { .. })
        ));
        assert_eq!(
            run("sleep 10", &[], Duration::from_millis(200)).await,
            Err(CallbackError::TimedOut(Duration::from_millis(200)))
        );
        assert!(matches!(
            run("/nonexistent/script", &[], Duration::from_secs(1)).await,
            Err(CallbackError::Spawn(_))
        ));
        assert_eq!(
            run("  ", &[], Duration::from_secs(1)).await,
            Err(CallbackError::Empty)
        );
    }
}
