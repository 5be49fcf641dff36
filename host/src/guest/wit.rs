//! flue's WIT (`wit/` of this repository), compiled into the binary: `flue
//! new` writes it into each new agent, and the builder hands it to an agent
//! that carries none of its own, so that an agent builds wherever it is.

use std::path::Path;

/// Every file of `wit/`, by name; a unit test checks that none is missing.
pub(crate) const FILES: &[(&str, &str)] = &[
    ("agent.wit", include_str!("../../../wit/agent.wit")),
    ("connector.wit", include_str!("../../../wit/connector.wit")),
    ("log.wit", include_str!("../../../wit/log.wit")),
    ("model.wit", include_str!("../../../wit/model.wit")),
    ("sandbox-api.wit", include_str!("../../../wit/sandbox-api.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("worlds.wit", include_str!("../../../wit/worlds.wit")),
];

/// `flue:sandbox@0.2.0`, frozen (`host/wit-compat/v0_2_0`): a JavaScript
/// agent names the version in its imports (`flue:sandbox/harness@0.2.0`),
/// so one written for 0.2.0 builds against 0.2.0 and runs on this host,
/// which serves 0.2.0 agents as 0.2.1 ones (semver-compatible).
pub(crate) const FILES_0_2_0: &[(&str, &str)] = &[
    ("agent.wit", include_str!("../../wit-compat/v0_2_0/agent.wit")),
    ("connector.wit", include_str!("../../wit-compat/v0_2_0/connector.wit")),
    ("log.wit", include_str!("../../wit-compat/v0_2_0/log.wit")),
    ("model.wit", include_str!("../../wit-compat/v0_2_0/model.wit")),
    ("sandbox-api.wit", include_str!("../../wit-compat/v0_2_0/sandbox-api.wit")),
    ("types.wit", include_str!("../../wit-compat/v0_2_0/types.wit")),
    ("worlds.wit", include_str!("../../wit-compat/v0_2_0/worlds.wit")),
];

/// The WIT a JavaScript agent's `source` imports: 0.2.0's when it names
/// that version, else the current one.
pub(crate) fn for_javascript(source: &str) -> &'static [(&'static str, &'static str)] {
    let names_0_2_0 = source.match_indices("flue:sandbox/").any(|(at, _)| {
        let rest = &source[at..];
        let end = rest.find(['"', '\'', '`']).unwrap_or(rest.len());
        rest[..end].ends_with("@0.2.0")
    });
    if names_0_2_0 { FILES_0_2_0 } else { FILES }
}

/// Write the WIT `files` into `dir` (created), replacing what is there.
pub(crate) fn write_into(dir: &Path, files: &[(&str, &str)]) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    for (name, content) in files {
        std::fs::write(dir.join(name), content)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded list is the directory: a file added to `wit/` and not
    /// here would be missing from every new agent and every build.
    #[test]
    fn every_wit_file_is_embedded() {
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut on_disk: Vec<String> = std::fs::read_dir(&wit)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = FILES.iter().map(|(name, _)| name.to_string()).collect();
        assert_eq!(embedded, on_disk, "host/src/guest/wit.rs must list every file of wit/");
        for (name, content) in FILES {
            assert_eq!(std::fs::read_to_string(wit.join(name)).unwrap(), *content, "{name}");
        }
    }

    #[test]
    fn a_javascript_agent_builds_against_the_version_it_imports() {
        let old = "import { init } from \"flue:sandbox/harness@0.2.0\";";
        assert_eq!(for_javascript(old), FILES_0_2_0);
        let new = "import { init } from 'flue:sandbox/harness@0.2.1';\n// flue:sandbox/x@0.2.0 in a comment";
        assert_eq!(for_javascript(new), FILES);
        assert!(FILES_0_2_0.iter().all(|(_, text)| text.starts_with("package flue:sandbox@0.2.0;")));
    }
}
