//! A Rust build's dependencies: fetched with network by cargo alone, then
//! read-only to a build that has no network.
//!
//! An isolated Rust build has two phases:
//!
//! 1. **fetch** — `cargo fetch`, with the host's network, run by the Rust
//!    toolchain flue chose on the host ([`super::toolchains::trusted_rust_toolchain`],
//!    forced with `RUSTUP_TOOLCHAIN`, so the agent's `rust-toolchain.toml`
//!    cannot name a cargo of its own), from `/` with `--manifest-path` (so
//!    the agent's `.cargo/config.toml` — a `rustc`, a credential provider —
//!    is never read). No code of the agent runs: cargo resolves, downloads
//!    and unpacks crates into flue's fetch home, `<cache>/cargo-fetch`,
//!    which only this phase writes.
//! 2. **build** — `cargo build --offline`, without any network, with a
//!    cargo home of its own made afresh for every build
//!    (`<cache>/builds/<key>/cargo-home`): its configuration written by
//!    flue, the fetched `registry/` and `git/` read-only. Whatever a build
//!    script plants there (a `config`, a `bin/rustc`) is gone before the
//!    next build, and nothing it can write is read by another.
//!
//! Both homes get only the parts of the user's cargo configuration that say
//! where crates come from (`[source]` mirrors, `[registries]` indexes, the
//! default registry) and, for the fetch, how to reach them (`[net]`,
//! `[http]`): never a token, a credential provider or a credentials file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::build::{AgentSourceError, readable_log};
use super::cache_dirs;
use super::isolate::BuildSpace;
use crate::events::EventLog;

/// flue's fetch home, under its cache.
const FETCH_HOME: &str = "cargo-fetch";
/// The cargo home older flue builds could write to: never read again.
const LEGACY_HOME: &str = "cargo";
/// A build's own cargo home, in its directory.
const BUILD_HOME: &str = "cargo-home";
/// What cargo reads from a cargo home besides its caches: its configuration
/// and credentials, and the programs in `bin/` it puts on the `PATH`.
const CARGO_HOME_FILES: [&str; 6] = ["config", "config.toml", "credentials", "credentials.toml", "env", "bin"];

/// The cargo to run: `$CARGO` when absolute, else the one on the `PATH`.
pub(crate) fn cargo() -> Result<PathBuf, AgentSourceError> {
    match std::env::var_os("CARGO").map(PathBuf::from) {
        Some(cargo) if cargo.is_absolute() => Ok(cargo),
        _ => crate::which::find_on_path("cargo")
            .ok_or_else(|| AgentSourceError::Toolchain("cannot run cargo: install Rust from https://rustup.rs".into())),
    }
}

/// Fetch the dependencies of the crate at `manifest` (as `space` sees it)
/// into flue's fetch home, with network and no agent code. `Ok(None)` when
/// it worked; `Ok(Some(log))` when cargo failed (the build may still
/// succeed offline, from what earlier fetches left).
pub(crate) fn fetch(
    space: &BuildSpace,
    manifest: &Path,
    events: &EventLog,
) -> Result<Option<String>, AgentSourceError> {
    let cache = cache_dirs::cache_root().map_err(AgentSourceError::Cache)?;
    let _lock = cache_dirs::lock(&cache.join(format!("{FETCH_HOME}.lock"))).map_err(AgentSourceError::Cache)?;
    let home = prepare_fetch_home(&cache)?;
    let mut fetching = space.clone();
    fetching.set_network(true);
    fetching.writable(home.clone(), home.clone());
    fetching.set_env("CARGO_HOME", &home);
    fetching.set_env("CARGO_CACHE_AUTO_CLEAN_FREQUENCY", "never");
    match super::toolchains::trusted_rust_toolchain() {
        Some(toolchain) => fetching.set_env("RUSTUP_TOOLCHAIN", toolchain),
        None => fetching.remove_env("RUSTUP_TOOLCHAIN"),
    }
    let args: Vec<OsString> = vec![
        "fetch".into(),
        "--manifest-path".into(),
        manifest.into(),
        "--target".into(),
        super::toolchains::WASM_TARGET.into(),
    ];
    let _progress = events.progress(format!("fetching the dependencies of {}", manifest.display()));
    // From `/`: cargo reads configuration from its working directory up,
    // and rustup its `rust-toolchain.toml`; neither may be the agent's.
    let ran = super::isolate::run(fetching.command(&cargo()?, &args, Path::new("/"))?, "cargo fetch")?;
    Ok((!ran.success).then(|| readable_log(&ran.stderr)))
}

/// flue's fetch home, private, with flue's configuration and nothing else
/// of cargo's that runs or authenticates.
fn prepare_fetch_home(cache: &Path) -> Result<PathBuf, AgentSourceError> {
    let fail = |path: &Path, err: std::io::Error| AgentSourceError::Cache(format!("{}: {err}", path.display()));
    let legacy = cache.join(LEGACY_HOME);
    if std::fs::symlink_metadata(&legacy).is_ok() {
        // Builds could write it; its crates are fetched again, cleanly.
        std::fs::remove_dir_all(&legacy).map_err(|err| fail(&legacy, err))?;
    }
    let home = cache_dirs::private_subdir(cache, FETCH_HOME).map_err(AgentSourceError::Cache)?;
    for name in CARGO_HOME_FILES {
        remove(&home.join(name)).map_err(|err| fail(&home.join(name), err))?;
    }
    let config = home.join("config.toml");
    std::fs::write(&config, carried_config(Purpose::Fetch)).map_err(|err| fail(&config, err))?;
    for cache_dir in ["registry", "git"] {
        cache_dirs::private_subdir(&home, cache_dir).map_err(AgentSourceError::Cache)?;
    }
    Ok(home)
}

/// Give `space` (the build phase) a fresh cargo home of its own in `work`,
/// the fetched crates read-only in it, and no network.
pub(crate) fn offline_home(space: &mut BuildSpace, work: &Path) -> Result<(), AgentSourceError> {
    let fail = |path: &Path, err: std::io::Error| AgentSourceError::Cache(format!("{}: {err}", path.display()));
    let cache = cache_dirs::cache_root().map_err(AgentSourceError::Cache)?;
    let fetched = cache_dirs::private_subdir(&cache, FETCH_HOME).map_err(AgentSourceError::Cache)?;
    let home = work.join(BUILD_HOME);
    // The previous build could have left anything here.
    remove(&home).map_err(|err| fail(&home, err))?;
    cache_dirs::private_subdir(work, BUILD_HOME).map_err(AgentSourceError::Cache)?;
    let config = home.join("config.toml");
    std::fs::write(&config, carried_config(Purpose::Build)).map_err(|err| fail(&config, err))?;
    for cache_dir in ["registry", "git"] {
        let shared = cache_dirs::private_subdir(&fetched, cache_dir).map_err(AgentSourceError::Cache)?;
        let mount_point = home.join(cache_dir);
        std::fs::create_dir(&mount_point).map_err(|err| fail(&mount_point, err))?;
        space.read_only_within(shared, mount_point);
    }
    space.set_network(false);
    space.set_env("CARGO_HOME", &home);
    space.set_env("CARGO_NET_OFFLINE", "true");
    space.set_env("CARGO_CACHE_AUTO_CLEAN_FREQUENCY", "never");
    Ok(())
}

/// Remove `path` — a file, a link (not what it points to) or a directory
/// tree — if it is there.
fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    }
}

/// Which phase a cargo configuration is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Purpose {
    /// With network: where crates come from and how to reach them.
    Fetch,
    /// Offline: where crates come from (the fetched ones are stored by it).
    Build,
}

/// The user's cargo configuration (`$CARGO_HOME/config.toml`, else
/// `~/.cargo/config.toml`, or `config`), as much of it as `purpose` needs.
fn carried_config(purpose: Purpose) -> String {
    const MAX_CONFIG: u64 = 1 << 20;
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let text = home.and_then(|home| {
        // cargo prefers `config` when both exist.
        ["config", "config.toml"].iter().find_map(|name| {
            use std::io::Read;
            let file = std::fs::File::open(home.join(name)).ok()?;
            let mut text = String::new();
            file.take(MAX_CONFIG).read_to_string(&mut text).ok()?;
            Some(text)
        })
    });
    let user: toml::Table = text.and_then(|text| toml::from_str(&text).ok()).unwrap_or_default();
    toml::to_string(&carry(&user, purpose)).unwrap_or_default()
}

/// What of the configuration `user` a phase gets: mirrors (`[source]`),
/// registries' `index` and `protocol`, the default registry; for the fetch
/// also `[net]` and `[http]` (proxies, CA bundle, timeouts), for the build
/// `net.offline`. Tokens, credential providers and everything that names a
/// program (`build.rustc`, `target.*.runner`, aliases) stay behind.
fn carry(user: &toml::Table, purpose: Purpose) -> toml::Table {
    use toml::Value;
    let mut carried = toml::Table::new();
    if let Some(Value::Table(source)) = user.get("source") {
        carried.insert("source".into(), Value::Table(source.clone()));
    }
    if let Some(Value::Table(registries)) = user.get("registries") {
        let kept: toml::Table = registries
            .iter()
            .filter_map(|(name, registry)| {
                let registry = registry.as_table()?;
                let located: toml::Table = registry
                    .iter()
                    .filter(|(key, _)| matches!(key.as_str(), "index" | "protocol"))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect();
                Some((name.clone(), Value::Table(located)))
            })
            .collect();
        carried.insert("registries".into(), Value::Table(kept));
    }
    if let Some(default) = user.get("registry").and_then(|registry| registry.get("default")) {
        carried.insert("registry".into(), Value::Table(toml::Table::from_iter([("default".into(), default.clone())])));
    }
    match purpose {
        Purpose::Fetch => {
            for section in ["net", "http"] {
                if let Some(Value::Table(table)) = user.get(section) {
                    carried.insert(section.into(), Value::Table(table.clone()));
                }
            }
        }
        Purpose::Build => {
            carried
                .insert("net".into(), Value::Table(toml::Table::from_iter([("offline".into(), Value::Boolean(true))])));
        }
    }
    carried
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_credential_providers_and_programs_stay_behind() {
        let user: toml::Table = toml::from_str(
            r#"
            [registry]
            token = "cio-secret"
            default = "mine"
            global-credential-providers = ["cargo:token"]
            [registries.mine]
            index = "sparse+https://example.com/index/"
            token = "mine-secret"
            credential-provider = "/bin/evil"
            [source.crates-io]
            replace-with = "mirror"
            [source.mirror]
            registry = "sparse+https://mirror.example.com/"
            [net]
            git-fetch-with-cli = true
            [http]
            proxy = "http://proxy:3128"
            [build]
            rustc-wrapper = "/bin/evil"
            [credential-alias]
            evil = "/bin/evil"
            "#,
        )
        .unwrap();
        let fetch = toml::to_string(&carry(&user, Purpose::Fetch)).unwrap();
        for gone in ["secret", "evil", "credential", "rustc"] {
            assert!(!fetch.contains(gone), "{gone} in {fetch}");
        }
        for kept in ["mirror.example.com", "example.com/index", "default = \"mine\"", "proxy:3128"] {
            assert!(fetch.contains(kept), "{kept} missing from {fetch}");
        }
        let build = toml::to_string(&carry(&user, Purpose::Build)).unwrap();
        assert!(build.contains("offline = true") && build.contains("mirror.example.com"), "{build}");
        assert!(!build.contains("proxy") && !build.contains("git-fetch-with-cli"), "{build}");
    }
}
