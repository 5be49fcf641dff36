//! The run store's files are private to the user running the server: its
//! directory `0700`, the database and SQLite's `-wal` and `-shm` files
//! `0600`. They hold every run's payload, result and events.
//!
//! A directory that is a symbolic link, or that someone else owns or can
//! write to, is refused: whoever controls it could swap the database or
//! plant a `-wal` file that SQLite would replay into it.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the run store's directory or files cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to keep the run store in {path}: {reason}. Remove it, or pass --store FILE in a directory only you can write to"
)]
pub struct NotPrivate {
    /// The directory or file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

fn refuse(path: &Path, reason: impl Into<String>) -> NotPrivate {
    NotPrivate { path: path.to_path_buf(), reason: reason.into() }
}

/// Create `dir` (mode `0700`), or check that the existing one is ours and
/// nobody else can write to it. With `tighten`, an existing one of ours that
/// others can read is made `0700` (the default `.flue/`, which flue owns);
/// without, it is left as the user made it.
pub fn prepare_dir(dir: &Path, tighten: bool) -> Result<(), NotPrivate> {
    crate::private_dir::ensure_dir(dir, tighten).map_err(|why| refuse(dir, why.to_string()))
}

/// Create the database file `0600` before SQLite does (SQLite would make it
/// `0644`, and gives its `-wal` and `-shm` files the database's mode), or
/// make the existing one and its companions `0600`.
pub fn prepare_database(path: &Path) -> Result<(), NotPrivate> {
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let file = PathBuf::from(format!("{}{suffix}", path.display()));
                let meta = match std::fs::symlink_metadata(&file) {
                    Ok(meta) => meta,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(refuse(&file, format!("cannot inspect it: {err}"))),
                };
                if !meta.is_file() {
                    return Err(refuse(&file, "it is not a regular file"));
                }
                check_owner(&file, &meta)?;
                if meta.mode() & 0o077 != 0 {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                        .map_err(|err| refuse(&file, format!("cannot make it private: {err}")))?;
                }
            }
            Ok(())
        }
        Err(err) => Err(refuse(path, format!("cannot create it: {err}"))),
    }
}

fn check_owner(path: &Path, meta: &std::fs::Metadata) -> Result<(), NotPrivate> {
    crate::private_dir::check_owner(meta).map_err(|why| refuse(path, why.to_string()))
}
