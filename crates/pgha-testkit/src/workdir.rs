//! Scratch directories for servers started by tests.

use std::path::{Path, PathBuf};

/// A directory removed on drop, unless `PGHA_KEEP_TEST_DIRS` is set (then
/// its path is printed so logs can be read after a failure).
#[derive(Debug)]
pub struct WorkDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl WorkDir {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pgha-{prefix}-"))
            .tempdir()?;
        let path = dir.path().to_path_buf();
        Ok(WorkDir {
            dir: Some(dir),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os("PGHA_KEEP_TEST_DIRS").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("keeping test directory {}", dir.keep().display());
        }
    }
}
