//! Base backups and WAL archives for the restore tests: directories the
//! agents' OS user owns, and PostgreSQL's tools run as that user.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use pgha_testkit::cluster::{TestCluster, run_as_user};

/// A directory the agents' OS user owns.
pub fn owned_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
    if let Some((uid, gid)) = run_as_user().unwrap() {
        nix::unistd::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// Runs `program args` as the agents' OS user; panics on failure.
pub fn run_as_postgres(program: &Path, args: &[&str]) {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).env("PGPASSWORD", "rep-pass");
    if let Some((uid, gid)) = run_as_user().unwrap() {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{program:?} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A base backup of node `i` of `c` into `dir` (`pg_basebackup -X none`:
/// the WAL it needs comes from the archive).
pub fn base_backup(c: &TestCluster, i: usize, dir: &Path) {
    let port = c.nodes[i].pg_port.to_string();
    run_as_postgres(
        &c.options.bin_dir.join("pg_basebackup"),
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "replicator",
            "-D",
            dir.to_str().unwrap(),
            "-c",
            "fast",
            "-X",
            "none",
            "--no-password",
        ],
    );
}

/// A replica method's script (`command`, as Patroni calls it with
/// `--datadir=`) that copies the backup in `backup` there.
pub fn restore_script(dir: &Path, backup: &Path) -> std::path::PathBuf {
    let script = dir.join("restore.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do case $a in --datadir=*) d=${{a#--datadir=}};; esac; done\ncp -a {}/. \"$d\"/\n",
            backup.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// A work directory the agents' user can read, holding `archive` and
/// `backup` directories it owns.
pub struct BackupDirs {
    pub work: tempfile::TempDir,
    pub archive: std::path::PathBuf,
    pub backup: std::path::PathBuf,
}

pub fn backup_dirs() -> BackupDirs {
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (archive, backup) = (work.path().join("archive"), work.path().join("backup"));
    owned_dir(&archive);
    owned_dir(&backup);
    BackupDirs {
        work,
        archive,
        backup,
    }
}

/// The node file `yaml` with PostgreSQL archiving its WAL into `archive`,
/// and, with `restore`, replicas fetching WAL from there
/// (`postgresql.recovery_conf.restore_command`).
pub fn archiving(yaml: &str, archive: &Path, restore: bool) -> String {
    let anchor = "        wal_keep_size: 64MB\n";
    assert!(yaml.contains(anchor), "{yaml}");
    let a = archive.display();
    let yaml = yaml.replace(
        anchor,
        &format!("{anchor}        archive_mode: 'on'\n        archive_command: 'cp %p {a}/%f'\n"),
    );
    if restore {
        yaml.replacen(
            "\npostgresql:\n",
            &format!("\npostgresql:\n  recovery_conf:\n    restore_command: cp {a}/%f %p\n"),
            1,
        )
    } else {
        yaml
    }
}

/// Closes the WAL segment node `p` writes in and waits (bounded) until it
/// is in `archive`: every row committed before is then in the archive.
pub async fn switch_and_archive(c: &TestCluster, p: usize, archive: &Path) {
    let last = c
        .sql(p, "SELECT pg_walfile_name(pg_current_wal_lsn())")
        .await
        .unwrap()
        .remove(0);
    c.sql(p, "SELECT pg_switch_wal()").await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !archive.join(&last).exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{last} not archived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
