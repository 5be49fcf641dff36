//! Compiled components, cached on disk.
//!
//! Compiling a component costs ~50 ms (Rust) to ~10 s (Python, JavaScript);
//! loading a precompiled one costs milliseconds. Entries are keyed by the
//! SHA-256 of the component bytes **and** of the engine's
//! `precompile_compatibility_hash` (which covers wasmtime's version and the
//! engine's configuration), fed through a stable hasher so the key is the same
//! in every process: a changed engine never loads a stale artifact.
//!
//! Deserializing is `unsafe` in wasmtime: the bytes become machine code. The
//! cache therefore only loads files it wrote itself, in a directory it owns:
//! the directory is created `0700`, and an entry is loaded only if it and its
//! directory are owned by this user and writable by nobody else. Anything
//! else is ignored and recompiled.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine::wasm_error;

/// Whether a component came from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded a precompiled artifact.
    Hit,
    /// Compiled (and stored, when the cache is writable).
    Compiled,
}

/// A directory of compiled components, keyed by component and engine.
pub struct ComponentCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

/// A [`Hasher`] that feeds SHA-256: unlike `DefaultHasher`, its result is the
/// same in every process and every Rust version.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        unreachable!("read the digest, not a u64")
    }
}

/// The engine half of every cache key.
fn engine_key(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("engine-{}", &hex::encode(hasher.0.finalize())[..16])
}

impl ComponentCache {
    /// A cache in `dir`, or no caching at all with `None`.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let engine_key = engine_key(engine);
        let dir = dir.and_then(|dir| match prepare_dir(&dir) {
            Ok(()) => Some(dir),
            Err(err) => {
                tracing::warn!("compiled-component cache disabled: {}: {err}", dir.display());
                None
            }
        });
        ComponentCache { dir, engine_key }
    }

    /// The default location: `$FLUE_CACHE_DIR`, else `$XDG_CACHE_HOME/flue`,
    /// else `~/.cache/flue`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("FLUE_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(dir).join("flue"));
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("flue"))
    }

    /// Load `bytes` as a component, from the cache when possible.
    /// `on_compile` is called before a (slow) compilation starts.
    pub fn load(
        &self,
        engine: &Engine,
        component: &super::ComponentBytes,
        on_compile: impl FnOnce(),
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        let bytes = component.bytes();
        let entry = self
            .dir
            .as_ref()
            .map(|dir| dir.join(format!("{}-{}.cwasm", hex::encode(component.sha256()), self.engine_key)));
        if let Some(entry) = &entry
            && trusted_entry(entry)
        {
            // SAFETY: the file was written by `Component::serialize` in this
            // cache, in a directory only this user can write (checked above),
            // and its name binds it to these exact bytes and this engine.
            match unsafe { Component::deserialize_file(engine, entry) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(err) => tracing::debug!("ignoring unusable cache entry {}: {err}", entry.display()),
            }
        }
        on_compile();
        let started = Instant::now();
        let component = Component::new(engine, bytes).map_err(wasm_error)?;
        tracing::debug!("compiled component in {:?}", started.elapsed());
        if let Some(entry) = &entry
            && let Err(err) = store_entry(&component, entry)
        {
            tracing::warn!("could not cache compiled component at {}: {err}", entry.display());
        }
        Ok((component, CacheOutcome::Compiled))
    }
}

fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    crate::private_dir::ensure_dir(dir, true).map_err(std::io::Error::other)
}

fn owned_and_private(meta: &std::fs::Metadata) -> bool {
    crate::private_dir::check_owner_and_mode(meta).is_ok()
}

fn trusted_entry(entry: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(entry) else { return false };
    let dir_ok = entry.parent().and_then(|d| std::fs::metadata(d).ok()).is_some_and(|m| owned_and_private(&m));
    meta.is_file() && owned_and_private(&meta) && dir_ok
}

/// Write atomically: a temporary file in the same directory, then rename.
fn store_entry(component: &Component, entry: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize().map_err(wasm_error)?;
    let dir = entry.parent().expect("cache entries live in a directory");
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
    tmp.write_all(&bytes)?;
    tmp.persist(entry)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_key_is_stable_and_follows_the_configuration() {
        let engine = Engine::default();
        assert_eq!(engine_key(&engine), engine_key(&Engine::default()));
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        assert_ne!(engine_key(&engine), engine_key(&Engine::new(&config).unwrap()));
    }
}
