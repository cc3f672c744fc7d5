//! `show-config` and `edit-config`: the dynamic configuration (the DCS
//! `config` key) as YAML, changed with `-s`/`-p`, `--apply`, `--replace` or
//! an editor, shown as a diff, and written back with compare-and-set on the
//! version that was read, so a concurrent change is never overwritten.

use std::path::{Path, PathBuf};
use std::process::Command;

use pgha_core::dcs::{DcsError, DcsExt};
use pgha_core::model::{ClusterKey, DynamicConfig, Expect};
use serde_json::{Map, Value};

use super::cli::{ClusterArg, EditConfigArgs};
use super::output::python_str;
use super::{Ctl, CtlError, diff, echo, note, yaml};

/// `show-config`: the configuration as YAML (nothing when there is none).
pub async fn show_config(ctl: &mut Ctl, args: ClusterArg) -> Result<(), CtlError> {
    let name = ctl.cluster_name(args.cluster_name)?;
    let c = ctl.load(&name).await?;
    if let Some(p) = c.problem(&ClusterKey::Config) {
        return Err(CtlError::failed(format!(
            "cannot read the configuration: {p}"
        )));
    }
    if let Some(config) = &c.config {
        echo(yaml::dump(&Value::Object(config.value.as_map().clone())));
    }
    Ok(())
}

/// `edit-config`.
pub async fn edit_config(ctl: &mut Ctl, args: EditConfigArgs) -> Result<(), CtlError> {
    let name = ctl.cluster_name(args.cluster_name.clone())?;
    let c = ctl.load(&name).await?;
    if let Some(p) = c.problem(&ClusterKey::Config) {
        return Err(CtlError::failed(format!(
            "cannot read the configuration: {p}; repair it with --replace FILE"
        )));
    }
    let Some(stored) = c.config.clone() else {
        return Err(CtlError::failed(format!(
            "The config key does not exist in the cluster {name}"
        )));
    };
    let data = stored.value.as_map().clone();
    let before = yaml::dump(&Value::Object(data.clone()));
    let (after_text, changed) = changes(ctl, &args, &name, &before, &data)?;
    if changed == data {
        if !args.quiet {
            echo("Not changed");
        }
        return Ok(());
    }
    // What pgha refuses is refused before anything is shown or asked, as
    // PATCH /config refuses it; a Patroni-only cluster gets what Patroni
    // makes of its configuration.
    let new = DynamicConfig::from_map(changed.clone());
    if !c.run_by_patroni_only() {
        match new.check_write(Some(&stored.value)) {
            Ok(review) => {
                for w in review.warnings {
                    note(format!("Warning: {w}"));
                }
            }
            Err(e) => return Err(CtlError::failed(e.to_string())),
        }
    }
    if !args.quiet {
        for line in diff::unified(&before, &after_text) {
            echo(line);
        }
    }
    let from_stdin = args.apply.as_deref() == Some("-") || args.replace.as_deref() == Some("-");
    if from_stdin && !args.force {
        // Standard input held the configuration: nothing is left to answer with.
        echo("Use --force option to apply changes");
        return Ok(());
    }
    if !args.force && !ctl.console.confirm("Apply these changes?", false)? {
        return Ok(());
    }
    let dcs = ctl.dcs(&name)?;
    match dcs
        .write_config(&new, Expect::Version(stored.version.clone()))
        .await
    {
        Ok(_) => {
            echo("Configuration changed");
            Ok(())
        }
        Err(DcsError::Conflict { .. }) => Err(CtlError::failed(
            "Config modification aborted due to concurrent changes: the configuration in the DCS \
             changed after it was read, and nothing was written. Run edit-config again to edit the \
             current version.",
        )),
        Err(e) => Err(CtlError::failed(format!(
            "cannot write the configuration: {e}"
        ))),
    }
}

/// The edited text and document: from `--replace`, `--apply`, `-s`/`-p`
/// (in that order, each on top of the previous), else from an editor.
fn changes(
    ctl: &mut Ctl,
    args: &EditConfigArgs,
    name: &str,
    before: &str,
    data: &Map<String, Value>,
) -> Result<(String, Map<String, Value>), CtlError> {
    let mut after: Option<String> = None;
    let mut changed = data.clone();
    if let Some(file) = &args.replace {
        changed = Map::new();
        patch(&mut changed, &read_yaml_mapping(ctl, file)?);
        after = Some(yaml::dump(&Value::Object(changed.clone())));
    }
    if let Some(file) = &args.apply {
        patch(&mut changed, &read_yaml_mapping(ctl, file)?);
        after = Some(yaml::dump(&Value::Object(changed.clone())));
    }
    if !args.set.is_empty() || !args.pg.is_empty() {
        let pairs = args.set.iter().cloned().chain(
            args.pg
                .iter()
                .map(|p| format!("postgresql.parameters.{}", p.trim_start())),
        );
        for pair in pairs {
            set_pair(&mut changed, &pair)?;
        }
        after = Some(yaml::dump(&Value::Object(changed.clone())));
    }
    match after {
        Some(text) => Ok((text, changed)),
        None => {
            let text = invoke_editor(before, name)?;
            let doc = yaml::load_document(&text).map_err(|e| {
                CtlError::failed(format!("the edited configuration is not valid YAML: {e}"))
            })?;
            match doc {
                Value::Object(m) => Ok((text, m)),
                Value::Null => Ok((text, Map::new())),
                other => Err(CtlError::failed(format!(
                    "the edited configuration must be a YAML mapping, not {}",
                    yaml::dump(&other).trim_end_matches("\n...\n").trim()
                ))),
            }
        }
    }
}

/// An `--apply`/`--replace` file (`-`: standard input) as a mapping.
fn read_yaml_mapping(ctl: &mut Ctl, file: &str) -> Result<Map<String, Value>, CtlError> {
    let text = if file == "-" {
        ctl.console.read_to_end()?
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CtlError::failed(format!("cannot read {file}: {e}")))?
    };
    match yaml::load_document(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(CtlError::failed(format!("{file}: expected a YAML mapping"))),
        Err(e) => Err(CtlError::failed(format!("{file}: not valid YAML: {e}"))),
    }
}

/// Patroni's `patch_config`: `null` deletes, mappings merge, other values
/// replace (a value whose text is unchanged, `"100"` for `100`, is kept).
fn patch(config: &mut Map<String, Value>, changes: &Map<String, Value>) {
    for (key, value) in changes {
        match (value, config.get_mut(key)) {
            (Value::Null, _) => {
                config.remove(key);
            }
            (Value::Object(sub), Some(Value::Object(existing))) => patch(existing, sub),
            (v, Some(existing)) if !v.is_object() && python_str(existing) == python_str(v) => {}
            (v, _) => {
                config.insert(key.clone(), v.clone());
            }
        }
    }
}

/// `-s key.path=value`: the value read as YAML; a null removes the key (and
/// parents it leaves empty). Under `postgresql.parameters` the rest of the
/// path is one name, since parameter names contain dots.
fn set_pair(config: &mut Map<String, Value>, pair: &str) -> Result<(), CtlError> {
    let Some((path, text)) = pair.split_once('=').filter(|_| !pair.is_empty()) else {
        return Err(CtlError::failed(format!(
            "Invalid parameter setting {pair}"
        )));
    };
    let value = yaml::load_value(text)
        .map_err(|e| CtlError::failed(format!("Invalid value in {pair}: {e}")))?;
    let keys: Vec<&str> = path.trim().split('.').collect();
    set_path(config, &keys, value, &[]);
    Ok(())
}

fn set_path(config: &mut Map<String, Value>, path: &[&str], value: Value, prefix: &[&str]) {
    if prefix == ["postgresql", "parameters"] && path.len() > 1 {
        let joined = path.join(".");
        return set_path(config, &[joined.as_str()], value, prefix);
    }
    let Some((&key, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        if value.is_null() {
            config.remove(key);
        } else {
            config.insert(key.to_string(), value);
        }
        return;
    }
    if !config.get(key).is_some_and(Value::is_object) {
        config.insert(key.to_string(), Value::Object(Map::new()));
    }
    let mut deeper: Vec<&str> = prefix.to_vec();
    deeper.push(key);
    let emptied = match config.get_mut(key) {
        Some(Value::Object(sub)) => {
            set_path(sub, rest, value, &deeper);
            sub.is_empty()
        }
        _ => false,
    };
    if emptied {
        config.remove(key);
    }
}

/// Opens the configuration in `$EDITOR` (else `editor`, else `vi`) and
/// returns the edited text.
fn invoke_editor(before: &str, cluster: &str) -> Result<String, CtlError> {
    let editor = std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .or_else(|| {
            ["editor", "vi"]
                .iter()
                .find(|e| in_path(e).is_some())
                .map(|e| e.to_string())
        })
        .ok_or_else(|| {
            CtlError::failed(
                "EDITOR environment variable is not set. editor or vi are not available",
            )
        })?;
    let file = TempFile::create(&format!("{}-config-", cluster.replace('/', "_")), before)?;
    // An EDITOR with arguments ("code --wait") runs through the shell.
    let status = if editor.contains(char::is_whitespace) {
        Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(&file.path)
            .status()
    } else {
        Command::new(&editor).arg(&file.path).status()
    }
    .map_err(|e| CtlError::failed(format!("cannot run the editor {editor}: {e}")))?;
    if !status.success() {
        return Err(CtlError::failed(format!(
            "Editor exited with return code {}",
            status.code().unwrap_or(-1)
        )));
    }
    std::fs::read_to_string(&file.path)
        .map_err(|e| CtlError::failed(format!("cannot read {}: {e}", file.path.display())))
}

fn in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A file in the temporary directory, removed on drop.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn create(prefix: &str, contents: &str) -> Result<Self, CtlError> {
        use std::io::Write;
        let dir = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for attempt in 0..100u32 {
            let path = dir.join(format!(
                "{prefix}{}-{nanos}-{attempt}.yaml",
                std::process::id()
            ));
            match std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(contents.as_bytes()).map_err(|e| {
                        CtlError::failed(format!("cannot write {}: {e}", path.display()))
                    })?;
                    return Ok(TempFile { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(CtlError::failed(format!(
                        "cannot create a file in {}: {e}",
                        dir.display()
                    )));
                }
            }
        }
        Err(CtlError::failed(format!(
            "cannot create a temporary file in {}",
            Path::new(&dir).display()
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn set_pairs_like_patronictl() {
        let mut c = map(
            json!({"ttl": 30, "postgresql": {"parameters": {"work_mem": "4MB"}, "use_slots": true}}),
        );
        for pair in [
            "ttl=20",
            "postgresql.use_slots=off",
            "postgresql.parameters.pg_stat_statements.max=1000",
            "postgresql.parameters.work_mem=",
            "synchronous_mode=on",
            "a.b.c=null",
            "tags=[x, y]",
        ] {
            set_pair(&mut c, pair).unwrap();
        }
        assert_eq!(
            Value::Object(c),
            json!({"ttl": 20, "postgresql": {"parameters": {"pg_stat_statements.max": 1000}, "use_slots": false},
                   "synchronous_mode": true, "tags": ["x", "y"]})
        );
        let mut c = map(json!({"postgresql": {"parameters": {"work_mem": "4MB"}}}));
        set_pair(&mut c, "postgresql.parameters.work_mem=null").unwrap();
        assert_eq!(Value::Object(c), json!({}), "emptied parents go too");
        assert!(
            set_pair(&mut Map::new(), "x")
                .unwrap_err()
                .to_string()
                .contains("Invalid parameter setting x")
        );
    }

    #[test]
    fn apply_merges_like_patronis_patch_config() {
        let mut c = map(
            json!({"ttl": 30, "loop_wait": "10", "postgresql": {"parameters": {"a": 1, "b": 2}}}),
        );
        patch(
            &mut c,
            &map(
                json!({"ttl": null, "loop_wait": 10, "postgresql": {"parameters": {"a": null, "c": 3}}, "new": {"x": 1}}),
            ),
        );
        assert_eq!(
            Value::Object(c),
            json!({"loop_wait": "10", "postgresql": {"parameters": {"b": 2, "c": 3}}, "new": {"x": 1}})
        );
    }
}
