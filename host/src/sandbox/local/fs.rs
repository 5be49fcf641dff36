//! File operations confined to one directory, safe against symlink escapes.
//!
//! The local sandbox's file API runs in the host process, so a command that
//! plants `ln -s / escape` must not let `read-file escape/etc/shadow` read the
//! host. Every path is opened with `openat2(RESOLVE_BENEATH)` relative to a
//! directory fd of the root: the kernel refuses (EXDEV) any resolution that
//! would leave the root, whatever symlinks or races the sandbox sets up.
//!
//! Paths here are relative to the root, normalised, and contain no `..`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat};

use crate::sandbox::FileStat;

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

pub struct ConfinedRoot {
    root: OwnedFd,
}

impl ConfinedRoot {
    pub fn open(root: &Path) -> io::Result<Self> {
        let root = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(ConfinedRoot { root })
    }

    /// Confined to the directory `dir` is open on (its own descriptor).
    pub fn from_dir(dir: &OwnedFd) -> io::Result<Self> {
        Ok(ConfinedRoot { root: dir.try_clone()? })
    }

    fn open_beneath(&self, rel: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let rel = if rel.is_empty() { "." } else { rel };
        Ok(rustix::fs::openat2(&self.root, rel, flags | OFlags::CLOEXEC, mode, RESOLVE)?)
    }

    /// The directory containing `rel`'s last component, and that component.
    fn parent_of<'a>(&self, rel: &'a str) -> io::Result<(OwnedFd, &'a str)> {
        let (parent, name) = match rel.rfind('/') {
            Some(at) => (&rel[..at], &rel[at + 1..]),
            None => ("", rel),
        };
        if name.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the sandbox root itself"));
        }
        let dir = self.open_beneath(parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        Ok((dir, name))
    }

    /// Open `rel` for reading or writing, refusing at once anything that is
    /// not a regular file: opening a FIFO would block until someone opens
    /// its other end (`O_NONBLOCK` keeps the open itself from blocking).
    fn open_regular(&self, rel: &str, flags: OFlags, mode: Mode) -> io::Result<File> {
        let fd = match self.open_beneath(rel, flags | OFlags::NONBLOCK, mode) {
            // Opening a FIFO (or a device) for writing, non-blocking, with
            // nobody at the other end.
            Err(err) if err.raw_os_error() == Some(libc::ENXIO) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a regular file (a FIFO or a device): only regular files can be read and written",
                ));
            }
            other => other?,
        };
        let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
        match kind {
            FileType::RegularFile => {
                // Back to blocking I/O for the file itself.
                rustix::fs::fcntl_setfl(&fd, rustix::fs::fcntl_getfl(&fd)? - OFlags::NONBLOCK)?;
                Ok(File::from(fd))
            }
            FileType::Directory => Err(io::Error::from(io::ErrorKind::IsADirectory)),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a regular file (a {}): only regular files can be read and written", describe(other)),
            )),
        }
    }

    /// Read `rel`, refusing (before reading anything) a file larger than
    /// `max_bytes`.
    pub fn read(&self, rel: &str, max_bytes: u64) -> io::Result<Vec<u8>> {
        let file = self.open_regular(rel, OFlags::RDONLY, Mode::empty())?;
        let size = file.metadata()?.len();
        if size > max_bytes {
            return Err(too_large(size, max_bytes));
        }
        let mut data = Vec::with_capacity(size as usize);
        // The file may grow while it is read: never read past the cap.
        file.take(max_bytes.saturating_add(1)).read_to_end(&mut data)?;
        if data.len() as u64 > max_bytes {
            return Err(too_large(data.len() as u64, max_bytes));
        }
        Ok(data)
    }

    /// Create or truncate `rel` and write `data`. The parent must exist.
    pub fn write(&self, rel: &str, data: &[u8]) -> io::Result<()> {
        let mut file = self.create(rel)?;
        file.write_all(data)?;
        file.flush()
    }

    /// `rel` opened for reading from byte `offset` on.
    pub fn open_read(&self, rel: &str, offset: u64) -> io::Result<File> {
        let mut file = self.open_regular(rel, OFlags::RDONLY, Mode::empty())?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))?;
        Ok(file)
    }

    /// `rel` created, or truncated, for writing. The parent must exist.
    pub fn create(&self, rel: &str) -> io::Result<File> {
        let file = self.open_regular(rel, OFlags::WRONLY | OFlags::CREATE, Mode::from_raw_mode(0o644))?;
        // Truncate only once it is known to be a regular file.
        file.set_len(0)?;
        Ok(file)
    }

    pub fn mkdir(&self, rel: &str, recursive: bool) -> io::Result<()> {
        if !recursive {
            let (parent, name) = self.parent_of(rel)?;
            return Ok(rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))?);
        }
        // Create each missing component, resolving its parent afresh beneath
        // the root every time so that no symlink can redirect the walk.
        let mut end = 0;
        while end < rel.len() {
            end = rel[end..].find('/').map(|i| end + i).unwrap_or(rel.len());
            let prefix = &rel[..end];
            end += 1;
            let (parent, name) = self.parent_of(prefix)?;
            match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => {
                    // Exists: fine if it is (or leads, within the root, to) a directory.
                    self.open_beneath(prefix, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// Make `rel` a symbolic link to `target`, creating its parents: an
    /// earlier link there is replaced, and so is an empty directory (the
    /// mount point an older flue left); anything else is refused.
    pub fn place_link(&self, rel: &str, target: &str) -> io::Result<()> {
        if let Some(at) = rel.rfind('/') {
            self.mkdir(&rel[..at], true)?;
        }
        let (parent, name) = self.parent_of(rel)?;
        match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => {
                let kind = FileType::from_raw_mode(stat.st_mode);
                let removed = match kind {
                    FileType::Symlink => rustix::fs::unlinkat(&parent, name, AtFlags::empty()),
                    FileType::Directory => rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR),
                    _ => Err(rustix::io::Errno::EXIST),
                };
                removed.map_err(|err| match err {
                    rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST => io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{rel} exists already in the sandbox (a {}): move it away first", describe(kind)),
                    ),
                    other => other.into(),
                })?;
            }
            Err(rustix::io::Errno::NOENT) => {}
            Err(err) => return Err(err.into()),
        }
        Ok(rustix::fs::symlinkat(target, &parent, name)?)
    }

    /// `lstat` semantics for `is_symlink`; for a link, the other fields
    /// describe its target when that lies inside the root.
    pub fn stat(&self, rel: &str) -> io::Result<FileStat> {
        if rel.is_empty() {
            return Ok(to_file_stat(&rustix::fs::fstat(&self.root)?, false));
        }
        let (parent, name) = self.parent_of(rel)?;
        let lstat = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(lstat.st_mode) != FileType::Symlink {
            return Ok(to_file_stat(&lstat, false));
        }
        match self.open_beneath(rel, OFlags::PATH, Mode::empty()).and_then(|fd| Ok(rustix::fs::fstat(&fd)?)) {
            Ok(target) => Ok(to_file_stat(&target, true)),
            // Dangling, or pointing outside the sandbox: say only what we know.
            Err(_) => Ok(FileStat { is_symlink: Some(true), ..to_file_stat(&lstat, true) }),
        }
    }

    pub fn readdir(&self, rel: &str) -> io::Result<Vec<String>> {
        let fd = self.open_beneath(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let mut names = Vec::new();
        for entry in Dir::new(fd)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        Ok(names)
    }

    pub fn rm(&self, rel: &str, recursive: bool) -> io::Result<()> {
        let (parent, name) = self.parent_of(rel)?;
        let lstat = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(lstat.st_mode) != FileType::Directory {
            return Ok(rustix::fs::unlinkat(&parent, name, AtFlags::empty())?);
        }
        if !recursive {
            return match rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR) {
                Err(rustix::io::Errno::NOTEMPTY) => Err(io::Error::new(
                    io::ErrorKind::DirectoryNotEmpty,
                    "directory not empty (pass recursive to remove it with its contents)",
                )),
                other => Ok(other?),
            };
        }
        // std's remove_dir_all never follows symlinks inside the tree; the
        // /proc/self/fd path pins the already-confined parent directory.
        std::fs::remove_dir_all(format!("/proc/self/fd/{}/{name}", parent.as_fd().as_raw_fd()))
    }
}

/// A read refused by its size cap.
fn too_large(size: u64, max: u64) -> io::Error {
    io::Error::new(io::ErrorKind::FileTooLarge, TooLarge { size, max })
}

/// The detail of a read refused by its size cap (found by the caller, which
/// knows what the cap is called).
#[derive(Debug, thiserror::Error)]
#[error(
    "it is {}; at most {} can be read at once (read large files in parts, with open-read)",
    crate::sandbox::session::format_bytes(*size as usize),
    crate::sandbox::session::format_bytes(*max as usize)
)]
pub struct TooLarge {
    /// The file's size.
    pub size: u64,
    /// The cap.
    pub max: u64,
}

fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "file",
        FileType::Directory => "directory",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Symlink => "symbolic link",
        _ => "special file",
    }
}

fn to_file_stat(stat: &Stat, is_symlink: bool) -> FileStat {
    let file_type = FileType::from_raw_mode(stat.st_mode);
    FileStat {
        is_file: file_type == FileType::RegularFile,
        is_directory: file_type == FileType::Directory,
        is_symlink: Some(is_symlink),
        size: Some(stat.st_size as u64),
        mtime_ms: Some(stat.st_mtime * 1000 + stat.st_mtime_nsec as i64 / 1_000_000),
        mode: Some(stat.st_mode & 0o7777),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_are_refused_at_once_and_reads_are_capped() {
        let root = tempfile::tempdir().unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, root.path().join("fifo"), FileType::Fifo, Mode::from_raw_mode(0o644), 0)
            .unwrap();
        let confined = ConfinedRoot::open(root.path()).unwrap();
        // Would block forever (no writer) if the FIFO were opened plainly.
        let err = confined.read("fifo", u64::MAX).unwrap_err();
        assert!(err.to_string().contains("not a regular file (a FIFO)"), "{err}");
        assert!(confined.write("fifo", b"x").unwrap_err().to_string().contains("FIFO"));

        // A sparse 1 GiB file: refused by size, nothing read.
        let big = std::fs::File::create(root.path().join("big")).unwrap();
        big.set_len(1 << 30).unwrap();
        let err = confined.read("big", 1 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        confined.write("small", b"12345").unwrap();
        assert_eq!(confined.read("small", 5).unwrap(), b"12345");
        assert_eq!(confined.read("small", 4).unwrap_err().kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("/", root.path().join("slash")).unwrap();
        let confined = ConfinedRoot::open(root.path()).unwrap();

        let err = confined.read("escape/secret", u64::MAX).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{err}");
        assert!(confined.write("escape/planted", b"x").is_err());
        assert!(!outside.path().join("planted").exists());
        assert!(confined.readdir("slash").is_err());
        assert!(confined.mkdir("escape/sub", true).is_err());
        // Removing the link removes the link, never what it points to.
        confined.rm("escape", true).unwrap();
        assert!(outside.path().join("secret").exists());
    }

    #[test]
    fn symlinks_inside_the_root_work() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", root.path().join("link")).unwrap();
        let confined = ConfinedRoot::open(root.path()).unwrap();
        confined.write("link/f.txt", b"hi").unwrap();
        assert_eq!(confined.read("real/f.txt", u64::MAX).unwrap(), b"hi");
        let stat = confined.stat("link").unwrap();
        assert_eq!(stat.is_symlink, Some(true));
        assert!(stat.is_directory);
    }
}
