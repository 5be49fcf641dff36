//! `write` and `edit`: the tools that write files, each within
//! [`MAX_TOOL_FILE`] — `edit` checks the size of its result before it
//! builds it, so a one-character match with a long replacement cannot grow
//! into gigabytes.

use super::{Args, Outcome, error, ok};
use crate::model::caps::MAX_TOOL_FILE;
use crate::sandbox::error::ErrorKind;
use crate::sandbox::session::{Session, format_bytes};

/// The `write` tool.
pub async fn write(session: &Session, args: Args<'_>) -> Outcome {
    let (Some(path), Some(content)) = (args.text("path"), args.text("content")) else {
        return args.missing("path and content");
    };
    if content.len() > MAX_TOOL_FILE {
        return error(format!(
            "write: {} of content is over the {} a tool may write: write the file in parts with bash",
            format_bytes(content.len()),
            format_bytes(MAX_TOOL_FILE)
        ));
    }
    match session.write_file(path, content.as_bytes()).await {
        Ok(()) => ok(format!("wrote {} bytes to {path}", content.len())),
        Err(err) => error(err.to_string()),
    }
}

/// The `edit` tool (the session reads at most [`MAX_TOOL_FILE`]).
pub async fn edit(session: &Session, args: Args<'_>) -> Outcome {
    let (Some(path), Some(old), Some(new)) = (args.text("path"), args.text("oldText"), args.text("newText")) else {
        return args.missing("path, oldText and newText");
    };
    let replace_all = args.flag("replaceAll");
    if old.is_empty() {
        return error("edit: oldText is empty");
    }
    let content = match session.read_text(path).await {
        Ok(content) => content,
        Err(err) if err.kind == ErrorKind::TooLarge => {
            return error(format!(
                "edit: {path} is larger than the {} edit works on: change it with bash (e.g. sed)",
                format_bytes(MAX_TOOL_FILE)
            ));
        }
        Err(err) => return error(err.to_string()),
    };
    let count = content.matches(old).count();
    match (count, replace_all) {
        (0, _) => return error(format!("edit: oldText was not found in {path}")),
        (1, _) | (_, true) => {}
        (n, false) => {
            return error(format!("edit: oldText occurs {n} times in {path}: give more context, or set replaceAll"));
        }
    }
    // The size of the result, before it is built.
    let size = (content.len() - count * old.len()).saturating_add(count.saturating_mul(new.len()));
    if size > MAX_TOOL_FILE {
        return error(format!(
            "edit: replacing {count} occurrence(s) would make {path} {}, over the {} a tool may write",
            format_bytes(size),
            format_bytes(MAX_TOOL_FILE)
        ));
    }
    let edited = content.replace(old, new);
    match session.write_file(path, edited.as_bytes()).await {
        Ok(()) => ok(format!("replaced {count} occurrence(s) in {path}")),
        Err(err) => error(err.to_string()),
    }
}
