//! The run store in a real PostgreSQL: a throwaway server each test starts
//! itself (`initdb` and `pg_ctl` from Debian's `postgresql` package, in a
//! temporary directory, on a loopback port; stopped and removed at the
//! end). Where PostgreSQL is absent the tests say so and skip, unless
//! FLUE_TEST_REQUIRE_POSTGRES=1 (CI) makes its absence a failure.
//!
//! PostgreSQL refuses to run as root: as root the server runs as
//! FLUE_TEST_UNPRIVILEGED_USER (CI creates one).

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::durable::{process_running, wait_until};
use crate::serve::{BodyJson, Server, project};
use crate::support::{flue, output, runtime, scratch};

/// A PostgreSQL server of a test's own.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    user: Option<(u32, u32)>,
    _dir: tempfile::TempDir,
    /// `postgres://flue@127.0.0.1:PORT/postgres`.
    pub url: String,
}

/// Where PostgreSQL's server programs are: on the PATH, or Debian's
/// `/usr/lib/postgresql/<version>/bin`.
fn server_programs() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file());
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        versions.sort();
        versions.pop()
    })
}

impl Postgres {
    /// The rows `sql` selects, through a connection of its own (on a thread
    /// of its own: the synchronous client refuses to run inside a tokio
    /// runtime, which some callers are in).
    pub fn rows(&self, sql: &str) -> Vec<postgres::Row> {
        let (url, sql) = (self.url.clone(), sql.to_string());
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client.query(&sql, &[]).unwrap()
        })
        .join()
        .unwrap()
    }

    /// Start one, or say why not and return `None` (the test skips).
    pub fn start(test: &str) -> Option<Postgres> {
        let skip = |why: &str| {
            assert!(
                std::env::var("FLUE_TEST_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "{test} needs PostgreSQL: {why}"
            );
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "skipped {test}: it needs PostgreSQL ({why})");
            None
        };
        let Some(bin) = server_programs() else {
            return skip("no initdb/pg_ctl: install Debian's postgresql package");
        };
        let user = if rustix::process::geteuid().is_root() {
            let Ok(name) = std::env::var("FLUE_TEST_UNPRIVILEGED_USER") else {
                return skip("PostgreSQL does not run as root, and FLUE_TEST_UNPRIVILEGED_USER names no other user");
            };
            let id = |flag: &str| -> Option<u32> {
                let out = Command::new("id").args([flag, &name]).output().ok()?;
                String::from_utf8_lossy(&out.stdout).trim().parse().ok()
            };
            Some((id("-u")?, id("-g")?))
        } else {
            None
        };
        // Not under /tmp's sticky scratch of another user: a directory the
        // server's user can enter.
        let dir = tempfile::Builder::new().prefix("flue-pg-").tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        let sockets = dir.path().join("sockets");
        std::fs::create_dir(&sockets).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&sockets, Some(uid), Some(gid)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = Postgres { bin, data, user, url: format!("postgres://flue@127.0.0.1:{port}/postgres"), _dir: dir };
        let init = pg
            .command("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args(["-U", "flue", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(init.status.success(), "initdb failed: {}", String::from_utf8_lossy(&init.stderr));
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", sockets.display());
        let started = pg
            .command("pg_ctl")
            .arg("-D")
            .arg(&pg.data)
            .args(["-o", &options, "-w", "-t", "60", "-l"])
            .arg(pg.data.join("server.log"))
            .arg("start")
            .output()
            .unwrap();
        assert!(started.status.success(), "pg_ctl start failed: {}", String::from_utf8_lossy(&started.stderr));
        Some(pg)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.stdin(Stdio::null()).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        command
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]).output();
    }
}

/// Everything the store keeps, kept in PostgreSQL: runs through their
/// states, journals, conversations, id sandboxes' use, a claim for resume
/// taken once; the schema applied once, and `flue store migrate` then says
/// it is up to date.
#[test]
fn the_run_store_keeps_everything_in_postgres() {
    let Some(pg) = Postgres::start("postgres::the_run_store_keeps_everything_in_postgres") else { return };
    use flue::journal::JournalStore as _;
    use flue::run::IdSandboxLedger as _;
    use flue::run::conversations::{ConversationKey, ConversationStore as _};
    use flue::serve::store::{CancelRequest, RunStore, StoreLocation};
    let location = StoreLocation::parse(&pg.url);
    let store = RunStore::open(location.clone(), 10, false).unwrap();
    assert_eq!(store.engine(), "PostgreSQL");
    store.insert("run_a", "triage", "issue-1", &json!({"n": 1}));
    assert_eq!(store.status("run_a").as_deref(), Some("queued"));
    store.running("run_a", true);
    assert_eq!(store.get("run_a").unwrap()["status"], "running");
    assert_eq!(store.claim(&["triage".into()], 1, std::time::Duration::from_secs(5)).len(), 0, "held by this server");
    store.append("run_a", &flue::journal::Entry { seq: 0, key: "component".into(), value: "\"abc\"".into() }).unwrap();
    assert_eq!(store.entries("run_a").unwrap().len(), 1);
    assert_eq!(store.get("run_a").unwrap()["journalEntries"], 1);
    assert_eq!(store.request_cancel("run_a"), CancelRequest::Requested);
    assert!(store.cancel_requested("run_a"));
    store.finish("run_a", Ok(&json!({"ok": true})), &[json!({"type": "log"})]);
    let record = store.get("run_a").unwrap();
    assert_eq!((&record["status"], &record["result"]["ok"]), (&json!("succeeded"), &json!(true)), "{record}");
    assert!(store.entries("run_a").unwrap().is_empty(), "an ended run's journal stays");
    assert_eq!(store.request_cancel("run_a"), CancelRequest::AlreadyEnded("succeeded".into()));

    let key =
        ConversationKey { agent: "triage".into(), id: "issue-1".into(), harness: "h".into(), session: "s".into() };
    let messages = vec![flue::model::Message::User("hello".into())];
    store.save(&key, &messages).unwrap();
    store.save(&key, &messages).unwrap();
    assert_eq!(store.load(&key).unwrap(), messages);
    assert_eq!(store.conversations("triage", "issue-1").len(), 1);

    let sandbox = flue::run::IdSandbox {
        agent: "triage".into(),
        id: "issue-1".into(),
        connector: "local".into(),
        sandbox_id: "local-1".into(),
        idle: Some(Duration::from_secs(1)),
    };
    store.used(&sandbox, false);
    let later = flue::events::unix_millis() + 2_000;
    assert_eq!(store.idle_id_sandboxes(later), vec![sandbox.clone()]);
    store.forget_id_sandbox(&sandbox, later);
    assert!(store.idle_id_sandboxes(later).is_empty());

    // Retention: 10 finished runs.
    for i in 0..15 {
        store.insert(&format!("run_{i:02}"), "triage", "x", &Value::Null);
        store.finish(&format!("run_{i:02}"), Ok(&Value::Null), &[]);
    }
    assert_eq!(store.list(100).len(), 10);

    // Opened again (another server): nothing migrated twice.
    drop(store);
    RunStore::open(location, 10, false).unwrap();
    let migrated = output(flue().args(["store", "migrate", "--store", &pg.url]));
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    assert!(migrated.stdout.contains("up to date"), "{}", migrated.stdout);
}

/// Two servers on one PostgreSQL store: a run one accepted is read from
/// the other, listed by `flue runs --store`, and cancelled through the
/// other (the server running it sees the flag); a server killed with a run
/// going resumes it from its journal when it starts again.
#[test]
fn two_servers_share_one_postgres_store() {
    let Some(pg) = Postgres::start("postgres::two_servers_share_one_postgres_store") else { return };
    let (project, tmp) = (project(), scratch());
    let store = ["--store", pg.url.as_str()];
    let first = Server::start("serve", project.path(), tmp.path(), &store);
    let second = Server::start("serve", project.path(), tmp.path(), &store);
    let client = reqwest::Client::new();
    let rt = runtime();
    let post = |url: &str, body: Value, background: bool| {
        let mut request = client.post(format!("{url}/agents/probe/shared")).body(body.to_string());
        if background {
            request = request.header("x-webhook", "true");
        }
        rt.block_on(async move { request.send().await.unwrap().body_json().await })
    };
    let record = |url: &str, run_id: &str| {
        let request = client.get(format!("{url}/runs/{run_id}"));
        rt.block_on(async move { request.send().await.unwrap().body_json().await })
    };
    let answer = post(&first.url, json!({"mode": "exec", "command": "echo shared"}), false);
    let run_id = answer["runId"].as_str().unwrap().to_string();
    let seen = record(&second.url, &run_id);
    assert_eq!((&seen["status"], &seen["result"]["stdout"]), (&json!("succeeded"), &json!("shared\n")), "{seen}");
    let listed = output(flue().args(["runs", "ls", "--store", &pg.url]));
    assert!(listed.stdout.contains(&run_id), "{}", listed.stdout);

    let started = post(&first.url, json!({"mode": "exec", "command": "sleep 34.5"}), true);
    let sleeping = started["runId"].as_str().unwrap().to_string();
    wait_until("the command started", Duration::from_secs(60), || process_running(&["sleep", "34.5"]));
    let cancel = client.post(format!("{}/runs/{sleeping}/cancel", second.url));
    assert_eq!(rt.block_on(async { cancel.send().await.unwrap().status() }), 202);
    wait_until("the run was cancelled", Duration::from_secs(20), || {
        record(&second.url, &sleeping)["status"] == "cancelled"
    });
    wait_until("the command was killed", Duration::from_secs(10), || !process_running(&["sleep", "34.5"]));

    // A run going when its server is killed: resumed at the next start.
    let started =
        post(&first.url, json!({"mode": "execs", "commands": ["echo one >> log", "sleep 2.25", "cat log"]}), true);
    let resumed = started["runId"].as_str().unwrap().to_string();
    wait_until("the second command started", Duration::from_secs(60), || process_running(&["sleep", "2.25"]));
    drop(first); // SIGKILL
    wait_until("the run reads as interrupted", Duration::from_secs(10), || {
        record(&second.url, &resumed)["status"] == "interrupted"
    });
    let _first = Server::start("serve", project.path(), tmp.path(), &store);
    wait_until("the resumed run ended", Duration::from_secs(60), || {
        !matches!(record(&second.url, &resumed)["status"].as_str(), Some("queued" | "running" | "interrupted"))
    });
    let ended = record(&second.url, &resumed);
    assert_eq!(ended["status"], "succeeded", "{ended}");
    assert_eq!(ended["result"][2]["stdout"], "one\n", "the first command ran again: {ended}");
}

/// The store's URL never shows its password: not in `--help`, errors or
/// the server's output.
#[test]
fn a_store_urls_password_is_never_shown() {
    let url = "postgres://flue:pg-secret-0123@127.0.0.1:1/none";
    let refused = output(flue().args(["runs", "ls", "--store", url]));
    assert_ne!(refused.code, 0);
    assert!(!refused.stderr.contains("pg-secret-0123"), "{}", refused.stderr);
    assert!(refused.stderr.contains("flue:***@127.0.0.1:1"), "{}", refused.stderr);
}
