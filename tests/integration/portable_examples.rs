//! Example agents build wherever they are copied: a Rust example carries
//! flue's WIT in its own `wit/` (checked here to equal the repository's) and
//! is a workspace of its own; Python and JavaScript agents get flue's WIT
//! from the builder.

use std::path::Path;

use crate::support::{flue, output, repo_root, run_agent, scratch};

/// The `.wit` files of `dir`, by name, with their text.
fn wit_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn every_rust_example_and_the_daytona_connector_carry_the_current_wit() {
    let wit = wit_files(&repo_root().join("wit"));
    let examples = repo_root().join("guest-examples/rust");
    let mut checked = 0;
    for example in std::fs::read_dir(&examples).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
        let own = wit_files(&example.join("wit"));
        assert!(own == wit, "{}/wit differs from wit/: copy wit/*.wit into it", example.display());
        checked += 1;
    }
    assert!(checked >= 3, "no Rust examples found in {}", examples.display());
    // The shipped connector, too (flue add writes flue's own WIT there).
    let daytona = repo_root().join("connectors/daytona/wit");
    assert!(wit_files(&daytona) == wit, "{} differs from wit/: copy wit/*.wit into it", daytona.display());
}

/// Copy the directory `from` to `to`, leaving out build output.
fn copy_example(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (path, name) = (entry.path(), entry.file_name());
        if name == "target" {
            continue;
        }
        if path.is_dir() {
            copy_example(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

#[test]
fn an_example_copied_into_a_project_builds_and_runs_there() {
    for lang in ["rust", "python", "js"] {
        let project = scratch();
        let agent = project.path().join("agents/hello");
        copy_example(&repo_root().join("guest-examples").join(lang).join("hello"), &agent);
        let built = output(flue().arg("build").arg(&agent).current_dir(project.path()));
        assert_eq!(built.code, 0, "{lang}: {}", built.stderr);
        let result = run_agent(&agent, &["--payload", r#"{"name":"Ada"}"#], project.path()).ok();
        assert!(result["readBack"].as_str().unwrap().starts_with("Hello, Ada!"), "{lang}: {result}");
    }
}
