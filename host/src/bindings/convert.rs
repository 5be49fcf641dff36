//! Conversions between the generated WIT types and the host's native types
//! ([`crate::sandbox`], [`crate::model`], the events), each written once.

use std::time::Duration;

use super::agent::flue::sandbox::{harness, model as model_wit};
use super::connector::exports::flue::sandbox::lifecycle;
use super::types as wit;
use crate::model::{ModelError, PromptAnswer, PromptOptions, PromptRequest, TaskRequest, Thinking, Usage};
use crate::sandbox::SandboxSource;
use crate::sandbox::error::{ErrorKind, SandboxError};
use crate::sandbox::session::ExecOptions;
use crate::sandbox::{
    ConfigKey, ConnectorInfo, CreateOptions, ExecOutput, ExecRequest, FileStat, Resources, SandboxSummary, VolumeInfo,
    VolumeMount,
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

/// What an agent asks for in every WIT version — a command's options, where
/// its sandbox comes from — read into flue's types, for the version whose
/// `types` and `harness` modules are given.
macro_rules! agent_requests {
    ($types:ident, $harness:ident) => {
        impl From<$types::ExecOptions> for ExecOptions {
            fn from(o: $types::ExecOptions) -> Self {
                ExecOptions { cwd: o.cwd, env: o.env, timeout: o.timeout_ms.map(Duration::from_millis) }
            }
        }

        impl From<$harness::SandboxSource> for SandboxSource {
            fn from(source: $harness::SandboxSource) -> Self {
                match source {
                    $harness::SandboxSource::RunDefault => SandboxSource::RunDefault,
                    $harness::SandboxSource::Create(request) => SandboxSource::Create {
                        connector: request.connector,
                        options: request.options.into(),
                        keep: request.keep,
                    },
                    $harness::SandboxSource::Connect(request) => {
                        SandboxSource::Connect { connector: request.connector, id: request.id }
                    }
                }
            }
        }
    };
}

pub(crate) use agent_requests;

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

impl From<super::agent::flue::sandbox::log::Level> for crate::events::LogLevel {
    fn from(level: super::agent::flue::sandbox::log::Level) -> Self {
        use super::agent::flue::sandbox::log::Level;
        match level {
            Level::Trace => Self::Trace,
            Level::Debug => Self::Debug,
            Level::Info => Self::Info,
            Level::Warn => Self::Warn,
            Level::Error => Self::Error,
        }
    }
}

impl From<SandboxError> for wit::SandboxError {
    fn from(err: SandboxError) -> Self {
        let m = err.message;
        match err.kind {
            ErrorKind::NotFound => Self::NotFound(m),
            ErrorKind::PermissionDenied => Self::PermissionDenied(m),
            ErrorKind::AlreadyExists => Self::AlreadyExists(m),
            ErrorKind::NotADirectory => Self::NotADirectory(m),
            ErrorKind::IsADirectory => Self::IsADirectory(m),
            ErrorKind::Timeout => Self::Timeout(m),
            ErrorKind::TooLarge => Self::TooLarge(m),
            ErrorKind::Unsupported => Self::Unsupported(m),
            ErrorKind::Auth => Self::Auth(m),
            ErrorKind::Unavailable => Self::Unavailable(m),
            ErrorKind::SandboxDied => Self::SandboxDied(m),
            ErrorKind::InvalidInput => Self::InvalidInput(m),
            ErrorKind::Other => Self::Other(m),
        }
    }
}

impl From<wit::SandboxError> for SandboxError {
    fn from(err: wit::SandboxError) -> Self {
        use wit::SandboxError as W;
        let (kind, message) = match err {
            W::NotFound(m) => (ErrorKind::NotFound, m),
            W::PermissionDenied(m) => (ErrorKind::PermissionDenied, m),
            W::AlreadyExists(m) => (ErrorKind::AlreadyExists, m),
            W::NotADirectory(m) => (ErrorKind::NotADirectory, m),
            W::IsADirectory(m) => (ErrorKind::IsADirectory, m),
            W::Timeout(m) => (ErrorKind::Timeout, m),
            W::TooLarge(m) => (ErrorKind::TooLarge, m),
            W::Unsupported(m) => (ErrorKind::Unsupported, m),
            W::Auth(m) => (ErrorKind::Auth, m),
            W::Unavailable(m) => (ErrorKind::Unavailable, m),
            W::SandboxDied(m) => (ErrorKind::SandboxDied, m),
            W::InvalidInput(m) => (ErrorKind::InvalidInput, m),
            W::Other(m) => (ErrorKind::Other, m),
        };
        SandboxError::new(kind, message)
    }
}

impl From<&ExecRequest> for wit::ExecOptions {
    fn from(request: &ExecRequest) -> Self {
        wit::ExecOptions {
            cwd: Some(request.cwd.clone()),
            env: request.env.clone(),
            timeout_ms: request.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

agent_requests!(wit, harness);

impl PromptRequest {
    /// `session.prompt`'s text and options, as a request.
    pub fn from_options(text: String, o: model_wit::PromptOptions) -> Self {
        let options = PromptOptions {
            system: o.system,
            max_turns: o.max_turns,
            tools: o.tools,
            result_schema: o.result_schema,
            ..PromptOptions::default()
        };
        PromptRequest { text, model: None, options, tool_definitions: Vec::new() }
    }
}

fn thinking(level: Option<model_wit::Thinking>) -> Option<Thinking> {
    match level? {
        model_wit::Thinking::Off => None,
        model_wit::Thinking::Minimal => Some(Thinking::Minimal),
        model_wit::Thinking::Low => Some(Thinking::Low),
        model_wit::Thinking::Medium => Some(Thinking::Medium),
        model_wit::Thinking::High => Some(Thinking::High),
    }
}

impl From<model_wit::PromptRequest> for PromptRequest {
    fn from(r: model_wit::PromptRequest) -> Self {
        let options = PromptOptions {
            system: r.system,
            max_turns: r.max_turns,
            tools: r.tools,
            result_schema: r.result_schema,
            thinking: thinking(r.thinking),
            agent_tools: Vec::new(),
        };
        let tool_definitions = r.agent_tools.into_iter().map(|t| (t.name, t.description, t.input_schema)).collect();
        PromptRequest { text: r.text, model: r.model, options, tool_definitions }
    }
}

impl From<model_wit::TaskRequest> for TaskRequest {
    fn from(r: model_wit::TaskRequest) -> Self {
        let options = PromptOptions {
            system: r.system,
            max_turns: r.max_turns,
            tools: r.tools,
            thinking: thinking(r.thinking),
            ..PromptOptions::default()
        };
        TaskRequest { prompt: r.prompt, agent: r.agent, cwd: r.cwd, model: r.model, options }
    }
}

fn usage(usage: &Usage) -> model_wit::Usage {
    model_wit::Usage { input_tokens: usage.input, output_tokens: usage.output, cache_read_tokens: usage.cache_read }
}

impl From<PromptAnswer> for model_wit::PromptResult {
    fn from(answer: PromptAnswer) -> Self {
        model_wit::PromptResult {
            usage: usage(&answer.usage),
            text: answer.text,
            json: answer.json,
            model: answer.model,
            turns: answer.turns,
        }
    }
}

impl From<PromptAnswer> for model_wit::PromptReply {
    fn from(answer: PromptAnswer) -> Self {
        model_wit::PromptReply {
            usage: usage(&answer.usage),
            cost: answer.cost.map(|c| model_wit::Cost {
                input: c.input,
                output: c.output,
                cache_read: c.cache_read,
                total: c.total,
            }),
            text: answer.text,
            json: answer.json,
            model: answer.model,
            turns: answer.turns,
        }
    }
}

impl From<ModelError> for model_wit::PromptError {
    fn from(err: ModelError) -> Self {
        match err {
            ModelError::Auth(m) => Self::Auth(m),
            ModelError::RateLimited(m) => Self::RateLimited(m),
            ModelError::ContextOverflow(m) => Self::ContextOverflow(m),
            ModelError::MaxTurns(m) => Self::MaxTurns(m),
            ModelError::Provider(m) => Self::Provider(m),
            ModelError::InvalidInput(m) => Self::InvalidInput(m),
        }
    }
}
