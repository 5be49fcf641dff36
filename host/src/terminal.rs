//! Text made safe for a terminal. Text from guests (log lines, error
//! messages, a connector's description, labels) is escaped before it reaches
//! one: control characters (ESC, CR, backspace, C1 controls) and
//! bidirectional overrides are shown as escapes, so a guest can neither
//! recolour the terminal nor rewrite or forge a line of flue's own.

/// Characters that could steer a terminal or reorder what it shows.
fn is_dangerous(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    if (c as u32) < 0x80 {
        out.push_str(&format!("\\x{:02x}", c as u32));
    } else {
        out.push_str(&format!("\\u{{{:x}}}", c as u32));
    }
}

/// `text` on one line, every control character (newlines included) escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_dangerous(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// A multi-line message (an error) made safe to print: control characters
/// escaped, and every line after the first indented, so that nothing inside
/// can pass for a line of flue's own.
pub fn escape_block(text: &str) -> String {
    text.lines().map(escape).collect::<Vec<_>>().join("\n  ")
}

/// A JSON line with the characters serde leaves raw (DEL, C1 controls,
/// bidirectional overrides) written as `\u` escapes: the same JSON value,
/// but inert on a terminal.
pub fn escape_json(line: String) -> String {
    if !line.chars().any(is_dangerous) {
        return line;
    }
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if is_dangerous(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_steer_the_terminal() {
        assert_eq!(escape("red \x1b[31mtext\r\x08"), "red \\x1b[31mtext\\x0d\\x08");
        assert_eq!(escape("a\nb\u{9b}c\u{202e}d"), "a\\x0ab\\u{9b}c\\u{202e}d");
        assert_eq!(escape("plain ünicode ✓\ttab"), "plain ünicode ✓\\x09tab");
        assert_eq!(escape_block("first\nerror: forged\x1b[2K"), "first\n  error: forged\\x1b[2K");
        let json = escape_json(serde_json::to_string("x\u{7f}\u{9b}\u{202e}\x1b").unwrap());
        assert_eq!(json, "\"x\\u007f\\u009b\\u202e\\u001b\"");
        assert_eq!(serde_json::from_str::<String>(&json).unwrap(), "x\u{7f}\u{9b}\u{202e}\x1b");
    }
}
