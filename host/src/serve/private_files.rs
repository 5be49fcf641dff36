//! The run store's files are private to the user running the server: its
//! directory `0700`, the database and SQLite's `-wal` and `-shm` files
//! `0600`. They hold every run's payload, result and events.
//!
//! A directory that is a symbolic link, or that someone else owns or can
//! write to, is refused: whoever controls it could swap the database or
//! plant a `-wal` file that SQLite would replay into it.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|err| refuse(parent, format!("cannot create it: {err}")))?;
            }
            return match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => Ok(()),
                // Created meanwhile: check what is there now.
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => prepare_dir(dir, tighten),
                Err(err) => Err(refuse(dir, format!("cannot create it: {err}"))),
            };
        }
        Err(err) => return Err(refuse(dir, format!("cannot inspect it: {err}"))),
    };
    if meta.file_type().is_symlink() {
        return Err(refuse(dir, "it is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(refuse(dir, "it is not a directory"));
    }
    check_owner(dir, &meta)?;
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(dir, format!("others can write to it (mode {:o})", meta.mode() & 0o777)));
    }
    if tighten && meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|err| refuse(dir, format!("cannot make it private: {err}")))?;
    }
    Ok(())
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
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refuse(path, format!("it belongs to uid {}, not to you (uid {me})", meta.uid())));
    }
    Ok(())
}
