//! `grep` and `glob`: fixed scripts that get the model's text as
//! environment variables, never as part of the shell line, so no pattern
//! can run a command.

use std::time::Duration;

use super::{Args, Outcome, error, head, ok};
use crate::model::caps::{MAX_GLOB_PATTERNS, MAX_RESULT_BYTES};
use crate::sandbox::session::{ExecOptions, Session};

/// The `grep` tool.
pub async fn grep(session: &Session, args: Args<'_>) -> Outcome {
    let Some(pattern) = args.text("pattern") else { return args.missing("pattern") };
    let literal = args.flag("literal");
    let mut env = vec![
        ("FLUE_GREP_PATTERN".to_string(), pattern.to_string()),
        ("FLUE_GREP_PATH".to_string(), args.text("path").unwrap_or(".").to_string()),
    ];
    if let Some(include) = args.text("include") {
        env.push(("FLUE_GREP_INCLUDE".to_string(), include.to_string()));
    }
    // Fixed text only: the model's reaches grep as whole arguments.
    let command = format!(
        "grep -rnI --color=never {} ${{FLUE_GREP_INCLUDE:+\"--include=$FLUE_GREP_INCLUDE\"}} \
         -e \"$FLUE_GREP_PATTERN\" -- \"$FLUE_GREP_PATH\" | head -c {}",
        if literal { "-F" } else { "-E" },
        MAX_RESULT_BYTES + 1
    );
    run_listing(session, &command, env, "grep").await
}

/// The `glob` tool.
pub async fn glob(session: &Session, args: Args<'_>) -> Outcome {
    let Some(pattern) = args.text("pattern") else { return args.missing("pattern") };
    if pattern.contains('\n') {
        return error("glob: the pattern contains a line break");
    }
    let patterns = match expand_braces(pattern) {
        Ok(patterns) => patterns,
        Err(err) => return error(format!("glob: {err}")),
    };
    let env = vec![
        ("FLUE_GLOB_PATTERNS".to_string(), patterns.join("\n")),
        ("FLUE_GLOB_PATH".to_string(), args.text("path").unwrap_or(".").to_string()),
    ];
    // An unquoted expansion with IFS a newline is split into the
    // patterns and each is matched against file names: pathname
    // expansion only, never a command substitution.
    let command = format!(
        "cd -- \"$FLUE_GLOB_PATH\" || exit 2\n\
         shopt -s globstar nullglob extglob\n\
         IFS=$'\\n'\n\
         for f in $FLUE_GLOB_PATTERNS; do printf '%s\\n' \"$f\"; done | head -c {}",
        MAX_RESULT_BYTES + 1
    );
    run_listing(session, &command, env, "glob").await
}

/// `pattern` with its brace alternatives expanded, as bash would before
/// matching (`**/*.{ts,tsx}` is two patterns), in bash's order; at most
/// [`MAX_GLOB_PATTERNS`].
fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let mut patterns = vec![pattern.to_string()];
    loop {
        let mut expanded = false;
        let mut next = Vec::new();
        for pattern in patterns {
            match brace_group(&pattern) {
                Some((open, close, alternatives)) => {
                    expanded = true;
                    for alternative in alternatives {
                        next.push(format!("{}{alternative}{}", &pattern[..open], &pattern[close + 1..]));
                    }
                }
                None => next.push(pattern),
            }
            if next.len() > MAX_GLOB_PATTERNS {
                return Err(format!("the pattern's braces make more than {MAX_GLOB_PATTERNS} patterns: narrow it"));
            }
        }
        patterns = next;
        if !expanded {
            return Ok(patterns);
        }
    }
}

/// The first `{…,…}` of `pattern` (not escaped, with a comma at its top
/// level): where it opens and closes, and its alternatives.
fn brace_group(pattern: &str) -> Option<(usize, usize, Vec<&str>)> {
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'{' => {
                let (mut depth, mut j, mut commas) = (0usize, i + 1, Vec::new());
                while j < bytes.len() {
                    match bytes[j] {
                        b'\\' => j += 1,
                        b'{' => depth += 1,
                        b'}' if depth == 0 => break,
                        b'}' => depth -= 1,
                        b',' if depth == 0 => commas.push(j),
                        _ => {}
                    }
                    j += 1;
                }
                if j < bytes.len() && !commas.is_empty() {
                    let bounds: Vec<usize> = std::iter::once(i).chain(commas).chain(std::iter::once(j)).collect();
                    let alternatives = bounds.windows(2).map(|w| &pattern[w[0] + 1..w[1]]).collect();
                    return Some((i, j, alternatives));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Run a listing script with the model's text in `env`.
async fn run_listing(session: &Session, command: &str, env: Vec<(String, String)>, what: &str) -> Outcome {
    if env.iter().any(|(_, value)| value.contains('\0')) {
        return error(format!("{what}: a parameter contains a NUL byte"));
    }
    let options = ExecOptions { cwd: None, env, timeout: Some(Duration::from_secs(60)) };
    match session.exec(command, options).await {
        // grep exits 1 for "no match": not an error.
        Ok(out) if out.exit_code == 0 || (out.exit_code == 1 && out.stderr.is_empty()) => {
            if out.stdout.is_empty() {
                ok(format!("[{what}: no matches]"))
            } else {
                ok(head(&out.stdout, what))
            }
        }
        Ok(out) => error(format!("{what} failed (exit {}): {}", out.exit_code, out.stderr.trim())),
        Err(err) => error(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_as_bash_does_within_a_cap() {
        assert_eq!(expand_braces("**/*.{ts,tsx}").unwrap(), ["**/*.ts", "**/*.tsx"]);
        assert_eq!(expand_braces("{a,b}{c,d}").unwrap(), ["ac", "ad", "bc", "bd"]);
        assert_eq!(expand_braces("{src,lib/{x,y}}/*.rs").unwrap(), ["src/*.rs", "lib/x/*.rs", "lib/y/*.rs"]);
        // Not alternatives: left as they are.
        for literal in ["{a}", "\\{a,b}", "{a,b", "*.rs", "$(touch x)"] {
            assert_eq!(expand_braces(literal).unwrap(), [literal]);
        }
        assert!(expand_braces(&"{a,b}".repeat(7)).unwrap_err().contains("more than 64"));
        assert!(expand_braces(&"{a,b}".repeat(10_000)).is_err());
    }
}
