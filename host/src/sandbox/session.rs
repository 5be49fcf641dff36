//! Session semantics, applied in one place for every backend.
//!
//! A [`Session`] is a sandbox plus a working directory, like Flue's
//! `createSandboxSessionEnv`: relative paths resolve against the cwd (`..`
//! clamped at `/`), `exec` runs in the cwd unless told otherwise, `write_file`
//! creates missing parent directories, `exists` is `false` for a missing path,
//! `readdir` is sorted, and every operation is recorded as an event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::{EventLog, one_line};
use crate::sandbox::error::{ErrorKind, SandboxError, SandboxResult};
use crate::sandbox::paths;
use crate::sandbox::{ExecOutput, ExecRequest, FileReader, FileStat, FileWriter, Sandbox};

/// Options of one `exec`, before resolution.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// Working directory (relative to the session's cwd), default the cwd.
    pub cwd: Option<String>,
    /// Variables for this command only.
    pub env: Vec<(String, String)>,
    /// Kill the command after this long (exit code 124).
    pub timeout: Option<Duration>,
}

/// A sandbox plus a working directory: where agents' calls go.
#[derive(Clone)]
pub struct Session {
    sandbox: Arc<dyn Sandbox>,
    cwd: String,
    events: EventLog,
    max_read: u64,
}

/// The most `read-file` returns at once unless a run sets its own cap.
pub const DEFAULT_MAX_READ: u64 = 256 * 1024 * 1024;

impl Session {
    /// A session in `cwd` (resolved against the sandbox's workdir).
    pub fn new(sandbox: Arc<dyn Sandbox>, cwd: Option<&str>, events: EventLog) -> SandboxResult<Self> {
        let cwd = paths::resolve(sandbox.workdir(), cwd.unwrap_or("."))?;
        Ok(Session { sandbox, cwd, events, max_read: DEFAULT_MAX_READ })
    }

    /// The same session, reading files of at most `bytes` at once.
    pub fn with_max_read(mut self, bytes: u64) -> Self {
        self.max_read = bytes;
        self
    }

    /// The working directory (absolute).
    pub fn cwd(&self) -> &str {
        &self.cwd
    }

    /// The sandbox.
    pub fn sandbox(&self) -> &Arc<dyn Sandbox> {
        &self.sandbox
    }

    /// Where its operations are recorded.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// The absolute path `path` refers to.
    pub fn resolve(&self, path: &str) -> SandboxResult<String> {
        paths::resolve(&self.cwd, path)
    }

    /// Resolve `path`, or record the failure as an event of `op`.
    fn resolve_for(&self, op: &'static str, path: &str) -> SandboxResult<String> {
        let resolved = self.resolve(path);
        if let Err(err) = &resolved {
            self.events.operation(self.sandbox.id(), op, path, Instant::now(), &Err::<(), _>(err.clone()), |_| None);
        }
        resolved
    }

    /// Run a command (in the cwd unless told otherwise).
    pub async fn exec(&self, command: &str, options: ExecOptions) -> SandboxResult<ExecOutput> {
        let started = Instant::now();
        let result = async {
            if command.trim().is_empty() {
                return Err(SandboxError::invalid_input("empty command"));
            }
            if command.contains('\0') {
                return Err(SandboxError::invalid_input("the command contains a NUL byte, which no shell can run"));
            }
            check_env(&options.env)?;
            let cwd = match &options.cwd {
                Some(cwd) => self.resolve(cwd)?,
                None => self.cwd.clone(),
            };
            let request = ExecRequest {
                command: command.to_string(),
                cwd,
                env: options.env.clone(),
                // No run lasts longer; a connector need not add to a
                // number near u64::MAX.
                timeout: options.timeout.map(|t| t.min(MAX_EXEC_TIMEOUT)),
            };
            self.sandbox.exec(&request).await
        }
        .await;
        // Redacted before it is cut: a cut secret would no longer be found.
        let target = one_line(&self.events.redact(command), 200);
        self.events.operation(self.sandbox.id(), "exec", &target, started, &result, |out| {
            Some(format!("exit {}", out.exit_code))
        });
        result
    }

    /// Read a whole file.
    pub async fn read_file(&self, path: &str) -> SandboxResult<Vec<u8>> {
        let path = self.resolve_for("read", path)?;
        let started = Instant::now();
        let result = self.sandbox.read_file(&path, self.max_read).await;
        self.events
            .operation(self.sandbox.id(), "read", &path, started, &result, |data| Some(format_bytes(data.len())));
        result
    }

    /// Read a file as UTF-8 text.
    pub async fn read_text(&self, path: &str) -> SandboxResult<String> {
        let bytes = self.read_file(path).await?;
        String::from_utf8(bytes).map_err(|err| {
            SandboxError::invalid_input(format!(
                "{path} is not UTF-8 text (invalid byte at offset {}); read it as bytes with read-file",
                err.utf8_error().valid_up_to()
            ))
        })
    }

    /// Create or replace a file, creating missing parent directories.
    pub async fn write_file(&self, path: &str, data: &[u8]) -> SandboxResult<()> {
        let path = self.resolve_for("write", path)?;
        let started = Instant::now();
        let result = async {
            match self.sandbox.write_file(&path, data).await {
                Err(err) if err.kind == ErrorKind::NotFound => {
                    // Flue semantics: a missing parent is created, then one retry.
                    if let Some((parent, _)) = paths::split_parent(&path) {
                        self.sandbox.mkdir(parent, true).await?;
                    }
                    self.sandbox.write_file(&path, data).await
                }
                other => other,
            }
        }
        .await;
        self.events.operation(self.sandbox.id(), "write", &path, started, &result, |_| Some(format_bytes(data.len())));
        result
    }

    /// What is known about a path.
    pub async fn stat(&self, path: &str) -> SandboxResult<FileStat> {
        let path = self.resolve_for("stat", path)?;
        let started = Instant::now();
        let result = self.sandbox.stat(&path).await;
        self.events.operation(self.sandbox.id(), "stat", &path, started, &result, |stat| {
            Some(if stat.is_directory {
                "dir".into()
            } else {
                stat.size.map(|s| format_bytes(s as usize)).unwrap_or_default()
            })
        });
        result
    }

    /// Entry names of a directory, sorted.
    pub async fn readdir(&self, path: &str) -> SandboxResult<Vec<String>> {
        let path = self.resolve_for("readdir", path)?;
        let started = Instant::now();
        let mut result = self.sandbox.readdir(&path).await;
        if let Ok(names) = &mut result {
            names.retain(|name| name != "." && name != "..");
            names.sort();
        }
        self.events.operation(self.sandbox.id(), "readdir", &path, started, &result, |names| {
            Some(match names.len() {
                1 => "1 entry".to_string(),
                n => format!("{n} entries"),
            })
        });
        result
    }

    /// Whether a path exists (`false` for a missing one, an error for a dead sandbox).
    pub async fn exists(&self, path: &str) -> SandboxResult<bool> {
        let path = self.resolve_for("exists", path)?;
        let started = Instant::now();
        let result = match self.sandbox.exists(&path).await {
            // A missing path is an answer, never an error; a dead sandbox is.
            Err(err) if matches!(err.kind, ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(false),
            other => other,
        };
        self.events.operation(self.sandbox.id(), "exists", &path, started, &result, |found| Some(found.to_string()));
        result
    }

    /// Create a directory.
    pub async fn mkdir(&self, path: &str, recursive: bool) -> SandboxResult<()> {
        let path = self.resolve_for("mkdir", path)?;
        let started = Instant::now();
        let result = self.sandbox.mkdir(&path, recursive).await;
        self.events.operation(self.sandbox.id(), "mkdir", &path, started, &result, |_| {
            recursive.then(|| "recursive".to_string())
        });
        result
    }

    /// Open a file to read in parts from byte `offset`.
    pub async fn open_read(&self, path: &str, offset: u64) -> SandboxResult<SessionReader> {
        let path = self.resolve_for("open-read", path)?;
        let started = Instant::now();
        let result = self.sandbox.open_read(&path, offset).await;
        self.events.operation(self.sandbox.id(), "open-read", &path, started, &result, |_| {
            (offset > 0).then(|| format!("from byte {offset}"))
        });
        result.map(|reader| SessionReader { reader })
    }

    /// Open a file to write in parts, creating missing parent directories.
    pub async fn open_write(&self, path: &str) -> SandboxResult<SessionWriter> {
        let path = self.resolve_for("open-write", path)?;
        let started = Instant::now();
        let result = match self.sandbox.open_write(&path).await {
            Err(err) if err.kind == ErrorKind::NotFound => {
                if let Some((parent, _)) = paths::split_parent(&path) {
                    self.sandbox.mkdir(parent, true).await?;
                }
                self.sandbox.open_write(&path).await
            }
            other => other,
        };
        match result {
            Ok(writer) => Ok(SessionWriter {
                writer,
                sandbox: self.sandbox.id().to_string(),
                path,
                events: self.events.clone(),
                started,
                written: 0,
            }),
            Err(err) => {
                self.events.operation(
                    self.sandbox.id(),
                    "open-write",
                    &path,
                    started,
                    &Err::<(), _>(err.clone()),
                    |_| None,
                );
                Err(err)
            }
        }
    }

    /// Remove a path (never `/`).
    pub async fn rm(&self, path: &str, recursive: bool, force: bool) -> SandboxResult<()> {
        let path = self.resolve_for("rm", path)?;
        let started = Instant::now();
        let result = if path == "/" {
            Err(SandboxError::permission_denied("refusing to remove /"))
        } else {
            self.sandbox.rm(&path, recursive, force).await
        };
        self.events.operation(self.sandbox.id(), "rm", &path, started, &result, |_| {
            let flags: Vec<&str> = [(recursive, "recursive"), (force, "force")]
                .into_iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| f)
                .collect();
            (!flags.is_empty()).then(|| flags.join(","))
        });
        result
    }
}

/// The most one read of a file returns, whatever the agent asks for.
pub const MAX_PART: usize = 8 * 1024 * 1024;

/// A file read in parts through a session.
pub struct SessionReader {
    reader: Box<dyn FileReader>,
}

impl SessionReader {
    /// At most `max` next bytes (and never more than [`MAX_PART`]); empty at
    /// the end.
    pub async fn read(&mut self, max: usize) -> SandboxResult<Vec<u8>> {
        self.reader.read(max.clamp(1, MAX_PART)).await
    }
}

/// A file written in parts through a session; recorded as one `write` event
/// when finished.
pub struct SessionWriter {
    writer: Box<dyn FileWriter>,
    sandbox: String,
    path: String,
    events: EventLog,
    started: Instant,
    written: usize,
}

impl SessionWriter {
    /// Append `data`.
    pub async fn write(&mut self, data: &[u8]) -> SandboxResult<()> {
        let result = self.writer.write(data).await;
        if result.is_ok() {
            self.written += data.len();
        }
        result
    }

    /// Complete the file.
    pub async fn finish(&mut self) -> SandboxResult<()> {
        let result = self.writer.finish().await;
        let written = self.written;
        self.events.operation(&self.sandbox, "write", &self.path, self.started, &result, |_| {
            Some(format!("{} in parts", format_bytes(written)))
        });
        result
    }
}

/// The longest timeout a command is given: seven days, the longest a run
/// may last (`runtime::limits::DEADLINE_SECS`).
const MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

/// Refuse variables a command could not be given as they are: a bad name,
/// or a NUL byte (which would end the value early wherever it is passed).
pub fn check_env(env: &[(String, String)]) -> SandboxResult<()> {
    if let Some((key, _)) = env.iter().find(|(k, _)| !valid_env_name(k)) {
        return Err(SandboxError::invalid_input(format!(
            "invalid environment variable name {key:?}: use letters, digits and _, not starting with a digit"
        )));
    }
    if let Some((key, _)) = env.iter().find(|(_, v)| v.contains('\0')) {
        return Err(SandboxError::invalid_input(format!("the value of {key} contains a NUL byte")));
    }
    Ok(())
}

/// POSIX-portable environment variable name.
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `1.5 KiB`, `3.0 MiB`: a size for people.
pub fn format_bytes(len: usize) -> String {
    const KIB: f64 = 1024.0;
    match len as f64 {
        n if n < KIB => format!("{len} B"),
        n if n < KIB * KIB => format!("{:.1} KiB", n / KIB),
        n if n < KIB * KIB * KIB => format!("{:.1} MiB", n / (KIB * KIB)),
        n => format!("{:.1} GiB", n / (KIB * KIB * KIB)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert!(valid_env_name("FOO_1"));
        assert!(valid_env_name("_x"));
        assert!(!valid_env_name("1X"));
        assert!(!valid_env_name("A-B"));
        assert!(!valid_env_name(""));
    }
}
