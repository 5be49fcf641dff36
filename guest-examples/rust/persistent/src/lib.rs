//! `persistent`: the second Flue example as a wasm component.
//!
//! A setup harness prepares a project directory in the sandbox (files and a
//! command's output); a second harness on the same sandbox, with its working
//! directory set to that project, then works in it — proving the state
//! persisted between harnesses. Then a volume carries a file from one new
//! sandbox to the next (volumes outlive sandboxes, and runs).

wit_bindgen::generate!({ path: "wit", world: "flue:sandbox/agent" });

use exports::flue::sandbox::run::{Context, Guest};
use flue::sandbox::harness::{self, CreateRequest, InitOptions, SandboxSource};
use flue::sandbox::log::{Level, log};
use flue::sandbox::types::{CreateOptions, ExecOptions, MkdirOptions, SandboxError, VolumeMount};
use serde_json::json;

struct Persistent;

const PROJECT: &str = "project";
/// The volume step 3 uses (created on first use, kept afterwards).
const VOLUME: &str = "flue-persistent-example";

impl Guest for Persistent {
    fn run(_ctx: Context) -> Result<String, String> {
        let sandbox = harness::open_sandbox(&SandboxSource::RunDefault).map_err(describe)?;

        // 1. Setup, from the sandbox's workdir.
        let setup = harness::init(&sandbox, &InitOptions { cwd: None, model: None, id: Some("setup".into()) })
            .map_err(describe)?
            .session(Some("setup"))
            .map_err(describe)?;
        setup.mkdir(PROJECT, MkdirOptions { recursive: true }).map_err(describe)?;
        setup.write_text(&format!("{PROJECT}/README.md"), "# Demo project\n").map_err(describe)?;
        setup.write_text(&format!("{PROJECT}/src/app.txt"), "alpha\nbeta\ngamma\n").map_err(describe)?;
        let prepared = setup
            .shell("sort -r src/app.txt > sorted.txt && echo prepared", &in_dir(Some(PROJECT)))
            .map_err(describe)?;
        log(Level::Info, &format!("setup done in {}", setup.resolve_path(PROJECT)));

        // 2. Work, in a second harness whose cwd is the project.
        let work = harness::init(
            &sandbox,
            &InitOptions { cwd: Some(PROJECT.into()), model: None, id: Some("project".into()) },
        )
        .map_err(describe)?
        .session(Some("work"))
        .map_err(describe)?;
        let pwd = work.shell("pwd", &in_dir(None)).map_err(describe)?;
        let files = work.readdir(".").map_err(describe)?;
        let readme = work.read_text("README.md").map_err(describe)?;
        let sorted = work.read_text("sorted.txt").map_err(describe)?;
        let lines = work.shell("wc -l < src/app.txt", &in_dir(None)).map_err(describe)?;
        work.write_text("notes/summary.txt", &format!("{} lines\n", lines.stdout.trim())).map_err(describe)?;

        // 3. A volume: one new sandbox writes to it, the next reads it back.
        let mount = format!("{}/shared", sandbox.workdir());
        let with_volume = || {
            let volume =
                VolumeMount { volume: VOLUME.into(), mount_path: mount.clone(), subpath: None, create: true };
            let options = CreateOptions {
                image: None,
                snapshot: None,
                env: Vec::new(),
                labels: Vec::new(),
                name: None,
                auto_stop_minutes: None,
                resources: None,
                volumes: vec![volume],
            };
            harness::open_sandbox(&SandboxSource::Create(CreateRequest { connector: None, options, keep: false }))
        };
        let writer = with_volume().map_err(describe)?;
        harness::init(&writer, &InitOptions { cwd: None, model: None, id: None })
            .map_err(describe)?
            .session(Some("volume"))
            .map_err(describe)?
            .write_text(&format!("{mount}/handoff.txt"), "written by the first sandbox\n")
            .map_err(describe)?;
        let reader = with_volume().map_err(describe)?;
        let handed_over = harness::init(&reader, &InitOptions { cwd: None, model: None, id: None })
            .map_err(describe)?
            .session(Some("volume"))
            .map_err(describe)?
            .read_text(&format!("{mount}/handoff.txt"))
            .map_err(describe)?;

        let result = json!({
            "sandbox": sandbox.id(),
            "setupCwd": setup.cwd(),
            "workCwd": work.cwd(),
            "prepared": prepared.stdout.trim(),
            "pwd": pwd.stdout.trim(),
            "files": files,
            "readme": readme,
            "sorted": sorted.lines().collect::<Vec<_>>(),
            "lineCount": lines.stdout.trim().parse::<u64>().ok(),
            "summaryExists": setup.exists(&format!("{PROJECT}/notes/summary.txt")).map_err(describe)?,
            "volume": { "handedOver": handed_over, "twoSandboxes": writer.id() != reader.id() },
        });
        Ok(result.to_string())
    }
}

fn in_dir(cwd: Option<&str>) -> ExecOptions {
    ExecOptions { cwd: cwd.map(str::to_string), env: Vec::new(), timeout_ms: None }
}

fn describe(err: SandboxError) -> String {
    let (kind, message) = match err {
        SandboxError::NotFound(m) => ("not-found", m),
        SandboxError::PermissionDenied(m) => ("permission-denied", m),
        SandboxError::AlreadyExists(m) => ("already-exists", m),
        SandboxError::NotADirectory(m) => ("not-a-directory", m),
        SandboxError::IsADirectory(m) => ("is-a-directory", m),
        SandboxError::Timeout(m) => ("timeout", m),
        SandboxError::TooLarge(m) => ("too-large", m),
        SandboxError::Unsupported(m) => ("unsupported", m),
        SandboxError::Auth(m) => ("auth", m),
        SandboxError::Unavailable(m) => ("unavailable", m),
        SandboxError::SandboxDied(m) => ("sandbox-died", m),
        SandboxError::InvalidInput(m) => ("invalid-input", m),
        SandboxError::Other(m) => ("other", m),
    };
    format!("{kind}: {message}")
}

export!(Persistent);
