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

/// Write the WIT into `dir` (created), replacing what is there.
pub(crate) fn write_into(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    for (name, content) in FILES {
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
}
