//! `remove`: deletes every key of a cluster from the DCS, after the same
//! three checks as patronictl: the cluster's name typed again, the words
//! "Yes I am aware", and, while a leader holds the lock, the leader's name.

use super::cli::RemoveArgs;
use super::output::Format;
use super::{Ctl, CtlError, echo_raw, list};

/// What must be typed to confirm.
const AWARE: &str = "Yes I am aware";

pub async fn run(ctl: &mut Ctl, a: RemoveArgs) -> Result<(), CtlError> {
    let name = a.cluster_name;
    let c = ctl.load(&name).await?;
    let format = if a.format == Format::Topology {
        Format::Pretty
    } else {
        a.format
    };
    echo_raw(list::render(&c, &name, false, format));
    let typed = ctl
        .console
        .prompt("Please confirm the cluster name to remove", None)?;
    if typed != name {
        return Err(CtlError::failed("Cluster names specified do not match"));
    }
    let typed = ctl.console.prompt(
        &format!(
            "You are about to remove all information in DCS for {name}, please type: \"{AWARE}\""
        ),
        None,
    )?;
    if typed != AWARE {
        return Err(CtlError::failed(format!(
            "You did not exactly type \"{AWARE}\""
        )));
    }
    if let Some(leader) = c.leader_name().filter(|l| !l.is_empty()) {
        let typed = ctl.console.prompt(
            "This cluster currently is healthy. Please specify the leader name to continue",
            None,
        )?;
        if typed != leader {
            return Err(CtlError::failed(
                "You did not specify the current leader of the cluster",
            ));
        }
    }
    let dcs = ctl.dcs(&name)?;
    dcs.delete_cluster()
        .await
        .map_err(|e| CtlError::failed(format!("cannot remove cluster {name}: {e}")))
}
