//! Conversions between the generated WIT types of each world and the host's
//! native types in [`crate::backend`] and [`crate::error`].

use std::time::Duration;

use crate::backend::{ConfigKey, ConnectorInfo, CreateOptions, ExecOutput, FileStat, Resources, SandboxSummary};
use crate::error::{ErrorKind, SandboxError};

/// Both worlds generate their own copy of `flue:sandbox/types`; implement the
/// same conversions for each.
macro_rules! shared_type_conversions {
    ($types:path) => {
        const _: () = {
            use $types as wit;

            impl From<SandboxError> for wit::SandboxError {
                fn from(err: SandboxError) -> Self {
                    let m = err.message;
                    match err.kind {
                        ErrorKind::NotFound => wit::SandboxError::NotFound(m),
                        ErrorKind::PermissionDenied => wit::SandboxError::PermissionDenied(m),
                        ErrorKind::AlreadyExists => wit::SandboxError::AlreadyExists(m),
                        ErrorKind::NotADirectory => wit::SandboxError::NotADirectory(m),
                        ErrorKind::IsADirectory => wit::SandboxError::IsADirectory(m),
                        ErrorKind::Timeout => wit::SandboxError::Timeout(m),
                        ErrorKind::Unsupported => wit::SandboxError::Unsupported(m),
                        ErrorKind::Auth => wit::SandboxError::Auth(m),
                        ErrorKind::Unavailable => wit::SandboxError::Unavailable(m),
                        ErrorKind::SandboxDied => wit::SandboxError::SandboxDied(m),
                        ErrorKind::InvalidInput => wit::SandboxError::InvalidInput(m),
                        ErrorKind::Other => wit::SandboxError::Other(m),
                    }
                }
            }

            impl From<wit::SandboxError> for SandboxError {
                fn from(err: wit::SandboxError) -> Self {
                    let (kind, m) = match err {
                        wit::SandboxError::NotFound(m) => (ErrorKind::NotFound, m),
                        wit::SandboxError::PermissionDenied(m) => (ErrorKind::PermissionDenied, m),
                        wit::SandboxError::AlreadyExists(m) => (ErrorKind::AlreadyExists, m),
                        wit::SandboxError::NotADirectory(m) => (ErrorKind::NotADirectory, m),
                        wit::SandboxError::IsADirectory(m) => (ErrorKind::IsADirectory, m),
                        wit::SandboxError::Timeout(m) => (ErrorKind::Timeout, m),
                        wit::SandboxError::Unsupported(m) => (ErrorKind::Unsupported, m),
                        wit::SandboxError::Auth(m) => (ErrorKind::Auth, m),
                        wit::SandboxError::Unavailable(m) => (ErrorKind::Unavailable, m),
                        wit::SandboxError::SandboxDied(m) => (ErrorKind::SandboxDied, m),
                        wit::SandboxError::InvalidInput(m) => (ErrorKind::InvalidInput, m),
                        wit::SandboxError::Other(m) => (ErrorKind::Other, m),
                    };
                    SandboxError::new(kind, m)
                }
            }

            impl From<FileStat> for wit::FileStat {
                fn from(s: FileStat) -> Self {
                    wit::FileStat {
                        is_file: s.is_file,
                        is_directory: s.is_directory,
                        is_symlink: s.is_symlink,
                        size: s.size,
                        mtime_ms: s.mtime_ms,
                        mode: s.mode,
                    }
                }
            }

            impl From<wit::FileStat> for FileStat {
                fn from(s: wit::FileStat) -> Self {
                    FileStat {
                        is_file: s.is_file,
                        is_directory: s.is_directory,
                        is_symlink: s.is_symlink,
                        size: s.size,
                        mtime_ms: s.mtime_ms,
                        mode: s.mode,
                    }
                }
            }

            impl From<ExecOutput> for wit::ExecResult {
                fn from(o: ExecOutput) -> Self {
                    wit::ExecResult { stdout: o.stdout, stderr: o.stderr, exit_code: o.exit_code }
                }
            }

            impl From<wit::ExecResult> for ExecOutput {
                fn from(o: wit::ExecResult) -> Self {
                    ExecOutput { stdout: o.stdout, stderr: o.stderr, exit_code: o.exit_code }
                }
            }

            impl From<wit::CreateOptions> for CreateOptions {
                fn from(o: wit::CreateOptions) -> Self {
                    CreateOptions {
                        image: o.image,
                        snapshot: o.snapshot,
                        env: o.env,
                        labels: o.labels,
                        name: o.name,
                        auto_stop_minutes: o.auto_stop_minutes,
                        resources: o.resources.map(|r| Resources {
                            cpu: r.cpu,
                            memory_gib: r.memory_gib,
                            disk_gib: r.disk_gib,
                            gpu: r.gpu,
                        }),
                    }
                }
            }

            impl From<&CreateOptions> for wit::CreateOptions {
                fn from(o: &CreateOptions) -> Self {
                    wit::CreateOptions {
                        image: o.image.clone(),
                        snapshot: o.snapshot.clone(),
                        env: o.env.clone(),
                        labels: o.labels.clone(),
                        name: o.name.clone(),
                        auto_stop_minutes: o.auto_stop_minutes,
                        resources: o.resources.map(|r| wit::Resources {
                            cpu: r.cpu,
                            memory_gib: r.memory_gib,
                            disk_gib: r.disk_gib,
                            gpu: r.gpu,
                        }),
                    }
                }
            }

            impl From<wit::ExecOptions> for crate::session::ExecOptions {
                fn from(o: wit::ExecOptions) -> Self {
                    crate::session::ExecOptions {
                        cwd: o.cwd,
                        env: o.env,
                        timeout: o.timeout_ms.map(Duration::from_millis),
                    }
                }
            }
        };
    };
}

shared_type_conversions!(crate::bindings::agent::flue::sandbox::types);
shared_type_conversions!(crate::bindings::connector::flue::sandbox::types);

mod lifecycle {
    use super::*;
    use crate::bindings::connector::exports::flue::sandbox::lifecycle as wit;

    impl From<wit::ConnectorInfo> for ConnectorInfo {
        fn from(i: wit::ConnectorInfo) -> Self {
            ConnectorInfo {
                name: i.name,
                version: i.version,
                description: i.description,
                config: i
                    .config
                    .into_iter()
                    .map(|k| ConfigKey {
                        name: k.name,
                        description: k.description,
                        secret: k.secret,
                        required: k.required,
                        default_value: k.default_value,
                    })
                    .collect(),
                allowed_hosts: i.allowed_hosts,
                merges_output: i.merges_output,
            }
        }
    }

    impl From<wit::SandboxSummary> for SandboxSummary {
        fn from(s: wit::SandboxSummary) -> Self {
            SandboxSummary { id: s.id, name: s.name, state: s.state, labels: s.labels }
        }
    }
}
