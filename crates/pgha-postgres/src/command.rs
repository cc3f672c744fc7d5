//! Running PostgreSQL's programs: bounded in time, output kept for errors.

use std::process::Stdio;
use std::time::Duration;

use super::PgError;

/// Runs `cmd` to completion within `timeout`; returns stdout. A non-zero
/// exit is an error carrying the program's own words (stderr, else stdout).
pub async fn run(cmd: &mut tokio::process::Command, timeout: Duration) -> Result<String, PgError> {
    let program = format!("{:?}", cmd.as_std().get_program());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| PgError::Spawn {
        program: program.clone(),
        reason: e.to_string(),
    })?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(|e| PgError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?,
        Err(_) => {
            return Err(PgError::Timeout {
                what: program,
                after: timeout,
            });
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = if stderr.trim().is_empty() {
            stdout.trim().to_string()
        } else {
            stderr.trim().to_string()
        };
        Err(PgError::Failed {
            program,
            status: out.status.to_string(),
            output: said,
        })
    }
}
