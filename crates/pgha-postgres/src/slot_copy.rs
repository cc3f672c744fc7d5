//! Copying a logical replication slot from the leader to a replica, as
//! Patroni does: PostgreSQL 15 cannot create a logical slot on a standby,
//! and one created on a later standby would start at its own position,
//! not at its consumer's. The slot's state file is read from the leader
//! with `pg_read_binary_file`, written into this node's `pg_replslot`
//! while PostgreSQL is stopped, and loaded when it starts again; from then
//! on the copy is advanced like a physical one.
//!
//! What holds: a copy is installed only if this replica still has the WAL
//! from the copy's `restart_lsn` on ([`SlotState::fits`]): a copy whose WAL
//! is gone could never be advanced, and installing it would cost a
//! restart for nothing.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use super::{PgError, Postgres, command, files};
use crate::files::Upstream;

/// `SLOT_MAGIC` of PostgreSQL's `ReplicationSlotOnDisk`.
const SLOT_MAGIC: u32 = 0x0105_1CA1;
/// Where the slot's name starts in the state file (after magic, checksum,
/// version and length), and how long it is (`NAMEDATALEN`).
const NAME_AT: usize = 16;
const NAME_LEN: usize = 64;
/// `restart_lsn` after the name, the database oid, the persistency, xmin
/// and catalog_xmin (4 bytes each). The same in PostgreSQL 11 to 18.
const RESTART_LSN_AT: usize = NAME_AT + NAME_LEN + 16;

const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A slot's state file as read from the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl SlotState {
    /// The `restart_lsn` written in the file: decoding a copy starts there.
    /// `None` when the file does not look like `name`'s slot state.
    pub fn restart_lsn(&self) -> Option<u64> {
        let b = &self.bytes;
        let magic = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?);
        let name = b.get(NAME_AT..NAME_AT + NAME_LEN)?;
        let name_end = name.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        let lsn = b.get(RESTART_LSN_AT..RESTART_LSN_AT + 8)?;
        (magic == SLOT_MAGIC && name[..name_end] == *self.name.as_bytes())
            .then(|| u64::from_le_bytes(lsn.try_into().unwrap_or_default()))
    }

    /// Whether a replica whose oldest WAL starts at `oldest_wal` can use
    /// this copy: it still has the WAL from the copy's `restart_lsn` on.
    pub fn fits(&self, oldest_wal: u64) -> bool {
        self.restart_lsn().is_some_and(|lsn| lsn >= oldest_wal)
    }
}

impl Postgres {
    /// Reads slot `name`'s state file from `source` (the leader), with the
    /// rewind credentials (granted `pg_read_binary_file`) or the superuser's.
    pub async fn read_slot_state(
        &self,
        source: &Upstream,
        name: &str,
    ) -> Result<SlotState, PgError> {
        let pg = &*self.settings;
        self.write_pgpass()?;
        let conninfo = self.rewind_conninfo(source);
        let sql = format!(
            "SELECT encode(pg_catalog.pg_read_binary_file('pg_replslot/{}/state'), 'hex')",
            name.replace('\'', "''")
        );
        let mut cmd = tokio::process::Command::new(pg.binary("psql"));
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", &sql])
            .arg(format!("--dbname={conninfo}"))
            .env("PGPASSFILE", &pg.pgpass)
            .env("PGCONNECT_TIMEOUT", "5");
        let hex = command::run(&mut cmd, READ_TIMEOUT).await?;
        let bytes = decode_hex(hex.trim()).ok_or_else(|| {
            PgError::Unexpected(format!(
                "{}: pg_read_binary_file of slot {name} returned no hex",
                source.name
            ))
        })?;
        Ok(SlotState {
            name: name.to_string(),
            bytes,
        })
    }

    /// Where this node's oldest WAL segment in `pg_wal` starts.
    pub async fn oldest_wal(&self) -> Result<u64, PgError> {
        let rows = self
            .query_texts(
                "SELECT coalesce(min(name), '') || ' ' || \
                 (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size') \
                 FROM pg_catalog.pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'",
            )
            .await?;
        let row = rows.first().map(String::as_str).unwrap_or_default();
        parse_oldest_wal(row).ok_or_else(|| {
            PgError::Unexpected(format!("cannot read the oldest WAL segment from {row:?}"))
        })
    }

    /// Writes `state` into `pg_replslot` (replacing a copy of the same
    /// name), durably. PostgreSQL must be stopped: it reads slots only
    /// when it starts, and would overwrite the file at its next checkpoint.
    pub fn install_slot_state(&self, state: &SlotState) -> Result<(), PgError> {
        let replslot = self.data_dir().join("pg_replslot");
        let dir = replslot.join(&state.name);
        let tmp = replslot.join(format!("{}.pgha-tmp", state.name));
        let io = files::io;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(|e| io(&tmp, e))?;
        let file = tmp.join("state");
        write_synced(&file, &state.bytes).map_err(|e| io(&file, e))?;
        sync_dir(&tmp).map_err(|e| io(&tmp, e))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
        }
        std::fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))?;
        sync_dir(&replslot).map_err(|e| io(&replslot, e))
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// "000000010000000A000000F3 16777216" (segment name, segment size in
/// bytes) -> where that segment starts.
fn parse_oldest_wal(row: &str) -> Option<u64> {
    let (name, size) = row.split_once(' ')?;
    let size: u64 = size.trim().parse().ok()?;
    if name.len() != 24 || size == 0 {
        return None;
    }
    let log = u64::from_str_radix(name.get(8..16)?, 16).ok()?;
    let seg = u64::from_str_radix(name.get(16..24)?, 16).ok()?;
    let per_log = 0x1_0000_0000 / size;
    Some((log * per_log + seg) * size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_file(name: &str, restart_lsn: u64) -> Vec<u8> {
        let mut b = vec![0u8; 200];
        b[0..4].copy_from_slice(&SLOT_MAGIC.to_le_bytes());
        b[NAME_AT..NAME_AT + name.len()].copy_from_slice(name.as_bytes());
        b[RESTART_LSN_AT..RESTART_LSN_AT + 8].copy_from_slice(&restart_lsn.to_le_bytes());
        b
    }

    #[test]
    fn the_restart_lsn_is_read_only_from_the_named_slots_file() {
        let s = SlotState {
            name: "cdc".into(),
            bytes: state_file("cdc", 0x3_0000_03C0),
        };
        assert_eq!(s.restart_lsn(), Some(0x3_0000_03C0));
        assert!(s.fits(0x3_0000_0000));
        assert!(!s.fits(0x4_0000_0000), "its WAL is gone here");
        let other = SlotState {
            name: "cd".into(),
            bytes: s.bytes.clone(),
        };
        assert_eq!(other.restart_lsn(), None, "another slot's file");
        let short = SlotState {
            name: "cdc".into(),
            bytes: s.bytes[..50].to_vec(),
        };
        assert!(!short.fits(0), "a truncated file is never installed");
    }

    #[test]
    fn the_oldest_segment_name_gives_its_start() {
        assert_eq!(
            parse_oldest_wal("000000010000000000000003 16777216"),
            Some(3 * 16 * 1024 * 1024)
        );
        assert_eq!(
            parse_oldest_wal("00000002000000010000000A 16777216"),
            Some(0x1_0000_0000 + 10 * 16 * 1024 * 1024)
        );
        assert_eq!(parse_oldest_wal(" 16777216"), None, "no segment at all");
    }

    #[test]
    fn hex_from_psql_decodes() {
        assert_eq!(decode_hex("a1051c"), Some(vec![0xa1, 0x05, 0x1c]));
        assert_eq!(decode_hex(""), None);
        assert_eq!(decode_hex("abc"), None);
    }
}
