//! The rooms of `host/src/` depend one way, floor first; this test reads the
//! sources and fails when a room imports one at or above its own level, so
//! that the order README's code map states stays true.

use std::collections::BTreeSet;
use std::path::Path;

/// Each room with its level: a room may import only rooms of a lower level.
const LEVELS: &[(&str, u32)] = &[
    ("secrets", 0),
    ("terminal", 0),
    ("which", 0),
    ("private_dir", 0),
    ("events", 1),
    ("runtime", 2),
    ("journal", 2),
    ("sandbox", 3),
    ("model", 4),
    ("guest", 4),
    ("bindings", 5),
    ("config", 5),
    ("capability", 6),
    ("connector", 7),
    ("run", 8),
    ("host", 9),
    ("serve", 10),
    ("cli", 11),
];

fn level(room: &str) -> Option<u32> {
    LEVELS.iter().find(|(name, _)| *name == room).map(|(_, level)| *level)
}

/// The rooms a line of code names through `crate::…`, including every item
/// of a `crate::{a::…, b}` group.
fn rooms_named(line: &str) -> Vec<String> {
    let mut rooms = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item_start) = (0usize, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_lowercase() || c == '_') => {
                        let name: String =
                            group[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                        rooms.push(name);
                        item_start = false;
                    }
                    c if !c.is_whitespace() => item_start = false,
                    _ => {}
                }
            }
        } else {
            rooms.push(rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect());
        }
    }
    rooms
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("host/src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// `room file:line imports room` for every import against the order.
fn upward_imports(src: &Path) -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut found = BTreeSet::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("below src");
        let first = relative.components().next().expect("a path").as_os_str().to_string_lossy();
        let room = first.trim_end_matches(".rs").to_string();
        let Some(own) = level(&room) else { continue }; // lib.rs, main.rs, this file
        let text = std::fs::read_to_string(&file).expect("a readable source");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for named in rooms_named(code) {
                if named != room
                    && let Some(theirs) = level(&named)
                    && theirs >= own
                {
                    found.insert(format!("{room} ({}:{}) imports {named}", relative.display(), number + 1));
                }
            }
        }
    }
    found
}

#[test]
fn groups_and_paths_name_their_rooms() {
    assert_eq!(rooms_named("use crate::sandbox::error::{A, B};"), ["sandbox"]);
    assert_eq!(rooms_named("use crate::{events::{self, Event}, run::x, Host};"), ["events", "run"]);
    assert_eq!(rooms_named("crate::model::Message and crate::run::y"), ["model", "run"]);
}

#[test]
fn no_room_imports_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let upward = upward_imports(&src);
    assert!(upward.is_empty(), "imports against the order in layering.rs:\n{}", Vec::from_iter(upward).join("\n"));
}

#[test]
fn every_room_has_a_level() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut rooms = Vec::new();
    for entry in std::fs::read_dir(&src).expect("host/src is readable") {
        let name = entry.expect("an entry").file_name().to_string_lossy().trim_end_matches(".rs").to_string();
        if !["lib", "main", "layering"].contains(&name.as_str()) && level(&name).is_none() {
            rooms.push(name);
        }
    }
    assert!(rooms.is_empty(), "rooms with no level in layering.rs: {rooms:?}");
}
