//! The compiled-component cache: a second start does not recompile, and only
//! entries the host wrote itself are trusted.

use std::os::unix::fs::PermissionsExt;

use flue::runtime::ComponentBytes;
use flue::runtime::cache::{CacheOutcome, ComponentCache};

use crate::support::{example, scratch};

#[test]
fn a_second_load_is_served_from_the_cache() {
    let dir = scratch();
    let (engine, _) = flue::runtime::engine::new_engine(None).unwrap();
    let cache = ComponentCache::new(&engine, Some(dir.path().to_path_buf()));
    let bytes = ComponentBytes::new(std::fs::read(example("hello")).unwrap());

    let mut compiled = 0;
    let (_, first) = cache.load(&engine, &bytes, || compiled += 1).unwrap();
    let (_, second) = cache.load(&engine, &bytes, || compiled += 1).unwrap();
    assert_eq!((first, second, compiled), (CacheOutcome::Compiled, CacheOutcome::Hit, 1));

    let entries = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(entries, 1);
    let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the cache directory must be private");
}

#[test]
fn entries_writable_by_others_are_not_trusted() {
    let dir = scratch();
    let (engine, _) = flue::runtime::engine::new_engine(None).unwrap();
    let cache = ComponentCache::new(&engine, Some(dir.path().to_path_buf()));
    let bytes = ComponentBytes::new(std::fs::read(example("hello")).unwrap());
    cache.load(&engine, &bytes, || ()).unwrap();

    let entry = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (_, outcome) = cache.load(&engine, &bytes, || ()).unwrap();
    assert_eq!(outcome, CacheOutcome::Compiled, "a world-writable entry was loaded");

    // Garbage in an entry is never fatal: it is recompiled and replaced.
    std::fs::write(&entry, b"not a compiled component").unwrap();
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, outcome) = cache.load(&engine, &bytes, || ()).unwrap();
    assert_eq!(outcome, CacheOutcome::Compiled);
    let (_, outcome) = cache.load(&engine, &bytes, || ()).unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
}
