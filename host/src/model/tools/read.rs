//! `read`: lines of a text file, paged with `offset` and `limit`, read in
//! parts so that neither a huge file nor a huge line is ever held whole.

use super::{Args, Outcome, error, ok};
use crate::model::caps::MAX_RESULT_BYTES;
use crate::sandbox::session::Session;

/// The most lines `read` returns at once.
const MAX_READ_LINES: usize = 2000;
/// What `read` asks the sandbox for at a time.
const READ_PART: usize = 256 * 1024;

/// The `read` tool.
pub async fn read(session: &Session, args: Args<'_>) -> Outcome {
    let Some(path) = args.text("path") else { return args.missing("path") };
    let offset = args.number("offset").unwrap_or(1).max(1);
    let limit = args.number("limit").map_or(MAX_READ_LINES, |l| l.clamp(1, MAX_READ_LINES));
    read_lines(session, path, offset, limit).await
}

/// `read`: lines `offset`.. of a text file, at most `limit` lines and
/// [`MAX_RESULT_BYTES`], read in parts: neither the file nor one long line
/// is ever held whole.
async fn read_lines(session: &Session, path: &str, offset: usize, limit: usize) -> Outcome {
    let mut reader = match session.open_read(path, 0).await {
        Ok(reader) => reader,
        Err(err) => return error(err.to_string()),
    };
    let mut page = Page { path, offset, limit, out: String::new(), shown: 0, full: false, left_out: false };
    // The line being read: its first bytes (only for lines shown) and its length.
    let (mut line, mut line_len, mut number) = (Vec::new(), 0usize, 0usize);
    loop {
        let part = match reader.read(READ_PART).await {
            Ok(part) => part,
            Err(err) => return error(err.to_string()),
        };
        if part.is_empty() {
            break;
        }
        let mut rest = part.as_slice();
        while !rest.is_empty() {
            let (piece, newline) = match memchr::memchr(b'\n', rest) {
                Some(at) => (&rest[..at], true),
                None => (rest, false),
            };
            rest = &rest[piece.len() + usize::from(newline)..];
            if number + 1 >= offset {
                let room = (MAX_RESULT_BYTES + 1).saturating_sub(line.len());
                line.extend_from_slice(&piece[..piece.len().min(room)]);
            }
            line_len += piece.len();
            if !newline {
                continue;
            }
            number += 1;
            if number >= offset
                && let Err(outcome) = page.show(number, &line, line_len)
            {
                return outcome;
            }
            line.clear();
            line_len = 0;
            if page.full {
                // Whether anything follows what was shown.
                let more = !rest.is_empty() || reader.read(1).await.is_ok_and(|p| !p.is_empty());
                return ok(page.finish(number, more));
            }
        }
    }
    // A last line without a newline.
    if line_len > 0 {
        number += 1;
        if number >= offset
            && let Err(outcome) = page.show(number, &line, line_len)
        {
            return outcome;
        }
    }
    ok(page.finish(number, false))
}

/// What `read` returns, line by line.
struct Page<'a> {
    path: &'a str,
    offset: usize,
    limit: usize,
    out: String,
    shown: usize,
    /// No more lines fit (or `limit` were shown).
    full: bool,
    /// A line did not fit.
    left_out: bool,
}

impl Page<'_> {
    /// Show line `number` (its first bytes `start` of `len`), if it fits;
    /// an error outcome when it is not text.
    fn show(&mut self, number: usize, start: &[u8], len: usize) -> Result<(), Outcome> {
        if self.full {
            return Ok(());
        }
        let mut text = match std::str::from_utf8(start) {
            Ok(text) => text,
            // Cut inside a character: keep the whole ones.
            Err(err) if err.error_len().is_none() && len > start.len() => {
                std::str::from_utf8(&start[..err.valid_up_to()]).unwrap_or_default()
            }
            Err(_) => {
                return Err(error(format!(
                    "read: {} is not UTF-8 text (line {number}): inspect it with bash (e.g. file, xxd)",
                    self.path
                )));
            }
        };
        if len == text.len() {
            text = text.strip_suffix('\r').unwrap_or(text);
        }
        let prefix = format!("{number:>6}\t");
        let room = MAX_RESULT_BYTES.saturating_sub(self.out.len() + prefix.len() + 1);
        if text.len() > room {
            if self.shown > 0 {
                // The next read starts with this line.
                (self.full, self.left_out) = (true, true);
                return Ok(());
            }
            // A line longer than a whole result: its start, and a note.
            let note_room = room.saturating_sub(64);
            let mut end = note_room.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text = &text[..end];
        }
        self.out.push_str(&prefix);
        self.out.push_str(text);
        if text.len() < len {
            self.out.push_str(&format!(" [line cut: {} more bytes]", len - text.len()));
        }
        self.out.push('\n');
        self.shown += 1;
        self.full = self.shown >= self.limit;
        Ok(())
    }

    /// The result, with a note on how to read on when `more` follows.
    fn finish(mut self, lines_seen: usize, more: bool) -> String {
        let last = self.offset + self.shown - 1;
        if more || self.left_out {
            self.out.push_str(&format!(
                "[lines {}-{last} shown; the file goes on: read on with offset={}]\n",
                self.offset,
                last + 1
            ));
        } else if lines_seen == 0 {
            self.out.push_str("[the file is empty]\n");
        } else if self.shown == 0 {
            self.out.push_str(&format!("[the file has {lines_seen} lines: offset {} is past its end]\n", self.offset));
        }
        self.out
    }
}
