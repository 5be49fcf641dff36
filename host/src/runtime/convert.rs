//! Conversions between the generated WIT types and the host's native types
//! in [`crate::sandbox`], each written once.

use std::time::Duration;

use super::bindings::connector::exports::flue::sandbox::lifecycle;
use super::bindings::types as wit;
use crate::sandbox::session::ExecOptions;
use crate::sandbox::{
    ConfigKey, ConnectorInfo, CreateOptions, ExecOutput, FileStat, Resources, SandboxSummary, VolumeInfo, VolumeMount,
};

/// Records whose fields are the same on both sides: map both ways.
macro_rules! same_fields {
    ($native:ty, $wit:ty, { $($field:ident),* $(,)? }) => {
        impl From<$native> for $wit {
            fn from(v: $native) -> Self {
                Self { $($field: v.$field),* }
            }
        }

        impl From<$wit> for $native {
            fn from(v: $wit) -> Self {
                Self { $($field: v.$field),* }
            }
        }
    };
}

pub(crate) use same_fields;

same_fields!(FileStat, wit::FileStat, { is_file, is_directory, is_symlink, size, mtime_ms, mode });
same_fields!(Resources, wit::Resources, { cpu, memory_gib, disk_gib, gpu });

same_fields!(ExecOutput, wit::ExecResult, { stdout, stderr, exit_code, timed_out });
same_fields!(VolumeMount, wit::VolumeMount, { volume, mount_path, subpath, create });

impl From<wit::CreateOptions> for CreateOptions {
    fn from(o: wit::CreateOptions) -> Self {
        CreateOptions {
            image: o.image,
            snapshot: o.snapshot,
            env: o.env,
            labels: o.labels,
            name: o.name,
            auto_stop_minutes: o.auto_stop_minutes,
            resources: o.resources.map(Into::into),
            volumes: o.volumes.into_iter().map(Into::into).collect(),
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
            resources: o.resources.map(Into::into),
            volumes: o.volumes.iter().cloned().map(Into::into).collect(),
        }
    }
}

impl From<wit::ExecOptions> for ExecOptions {
    fn from(o: wit::ExecOptions) -> Self {
        ExecOptions { cwd: o.cwd, env: o.env, timeout: o.timeout_ms.map(Duration::from_millis) }
    }
}

impl From<lifecycle::ConnectorInfo> for ConnectorInfo {
    fn from(i: lifecycle::ConnectorInfo) -> Self {
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

same_fields!(SandboxSummary, lifecycle::SandboxSummary, { id, name, state, labels, created_ms });
same_fields!(VolumeInfo, lifecycle::VolumeInfo, { name, state, created_ms });

impl From<super::bindings::agent::flue::sandbox::log::Level> for crate::events::LogLevel {
    fn from(level: super::bindings::agent::flue::sandbox::log::Level) -> Self {
        use super::bindings::agent::flue::sandbox::log::Level;
        match level {
            Level::Trace => Self::Trace,
            Level::Debug => Self::Debug,
            Level::Info => Self::Info,
            Level::Warn => Self::Warn,
            Level::Error => Self::Error,
        }
    }
}
