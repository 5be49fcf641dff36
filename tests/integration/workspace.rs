//! The workspace itself: README's two commands share one build.
//!
//! `cargo run -p flue` builds the host's dependencies with the features flue
//! asks for; `cargo test` builds the whole workspace, dev-dependencies
//! included. Where the two disagree on a crate's features, cargo builds that
//! crate (and everything above it, wasmtime included) twice.

use std::collections::{BTreeMap, BTreeSet};

/// Each package's features in `cargo tree` with `args`.
fn features(args: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = crate::support::output(
        std::process::Command::new(cargo)
            .args(["tree", "--offline", "--prefix", "none", "--format", "{p}|{f}"])
            .args(args)
            .current_dir(crate::support::repo_root()),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut features: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in out.stdout.lines() {
        // `(*)` marks a package shown before; `(proc-macro)`, `(/path)` follow names.
        let Some((package, enabled)) = line.trim_end_matches(" (*)").split_once('|') else { continue };
        let package = package.split(" (").next().unwrap_or(package).to_string();
        let entry = features.entry(package).or_default();
        entry.extend(enabled.split(',').filter(|f| !f.is_empty()).map(str::to_string));
    }
    features
}

#[test]
fn cargo_run_and_cargo_test_resolve_the_same_features() {
    let run = features(&["-p", "flue", "-e", "normal,build"]);
    let test = features(&["--workspace", "-e", "normal,build,dev"]);
    assert!(run.contains_key("wasmtime v48.0.8"), "{:?}", run.keys().collect::<Vec<_>>());
    let differing: Vec<String> = run
        .iter()
        .filter_map(|(package, features)| {
            let in_test = test.get(package)?;
            (in_test != features).then(|| {
                let extra: Vec<_> = in_test.difference(features).collect();
                format!("{package}: `cargo test` adds {extra:?}")
            })
        })
        .collect();
    assert!(
        differing.is_empty(),
        "these crates would be built twice (enable the same features in host/Cargo.toml):\n{}",
        differing.join("\n")
    );
}
