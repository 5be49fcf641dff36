//! Secrets: the values a connector may name but never hold, and a model
//! provider's key; one of the floor's rooms (it knows nothing of sandboxes).
//!
//! A connector writes `{{NAME}}` in a header value; the host fills it in on
//! the way out ([`Secrets::substitute`]) and redacts every secret from
//! whatever comes back or is logged ([`Secrets::redact`]). This is the one
//! place both happen.
//!
//! Redaction replaces a secret's value *and its common encodings* — base64
//! (standard and URL-safe, at every alignment, as inside `Basic` credentials
//! or a JSON web token) and percent-encoding — with `[redacted NAME]`.
//! Secrets shorter than [`MIN_SECRET_LEN`] are refused before they are ever
//! used: redacting a two-letter value would mangle unrelated output, and not
//! redacting it would leak it.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// The shortest secret flue accepts.
pub const MIN_SECRET_LEN: usize = 8;

/// One secret and the byte strings that give it away.
#[derive(Clone, Debug)]
struct Secret {
    name: String,
    value: String,
    /// The value and its encodings, longest first.
    needles: Vec<Vec<u8>>,
}

impl Secret {
    fn new(name: String, value: String) -> Self {
        let mut needles = vec![value.as_bytes().to_vec()];
        for encoded in [percent_encode(&value, false), percent_encode(&value, true)] {
            needles.push(encoded.into_bytes());
        }
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            needles.extend(base64_needles(engine, value.as_bytes()));
        }
        // Only what is long enough to be specific, once each.
        needles.retain(|n| n.len() >= MIN_SECRET_LEN);
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        needles.dedup();
        Secret { name, value, needles }
    }
}

/// The part of base64(`value`) that is the same wherever `value` starts in a
/// longer base64 stream: for each of the three alignments, encode `value`
/// after 0, 1 or 2 filler bytes and keep only the characters that depend on
/// `value` alone.
fn base64_needles(engine: &impl base64::Engine, value: &[u8]) -> Vec<Vec<u8>> {
    (0..3)
        .filter_map(|offset: usize| {
            let mut padded = vec![0u8; offset];
            padded.extend_from_slice(value);
            let encoded = engine.encode(&padded).into_bytes();
            // Characters carrying filler bits, and a last one that would carry
            // bits of whatever follows the secret.
            let skip = [0, 2, 3][offset];
            let tail = usize::from(!padded.len().is_multiple_of(3));
            (encoded.len() > skip + tail).then(|| encoded[skip..encoded.len() - tail].to_vec())
        })
        .collect()
}

/// `value` with everything but unreserved characters percent-encoded.
fn percent_encode(value: &str, lowercase: bool) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            other if lowercase => out.push_str(&format!("%{other:02x}")),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// The secrets one connector declared and the user set.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    secrets: Vec<Secret>,
    /// Every needle of every secret, found in one pass; `None` without secrets.
    matcher: Option<AhoCorasick>,
    /// For each of the matcher's patterns, the index of its secret.
    owners: Vec<usize>,
    /// The longest needle's length.
    longest: usize,
}

impl Secrets {
    /// Secrets from (name, value) pairs.
    pub fn from_pairs(values: Vec<(String, String)>) -> Self {
        let secrets: Vec<Secret> = values.into_iter().map(|(name, value)| Secret::new(name, value)).collect();
        let (owners, needles): (Vec<usize>, Vec<&[u8]>) =
            secrets.iter().enumerate().flat_map(|(i, s)| s.needles.iter().map(move |n| (i, n.as_slice()))).unzip();
        let longest = needles.iter().map(|n| n.len()).max().unwrap_or(0);
        // At one offset the longest needle wins, as a whole secret beats the
        // base64 of its prefix.
        let matcher = (!needles.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&needles)
                .expect("a handful of short literal needles always builds")
        });
        Secrets { secrets, matcher, owners, longest }
    }

    /// The first secret shorter than [`MIN_SECRET_LEN`], with its length.
    pub fn too_short(&self) -> Option<(String, usize)> {
        self.secrets
            .iter()
            .find(|s| s.value.chars().count() < MIN_SECRET_LEN)
            .map(|s| (s.name.clone(), s.value.chars().count()))
    }

    /// Whether there are no secrets.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Whether `bytes` contain any secret, as is or encoded: whether
    /// [`Secrets::redact`] would change them.
    pub fn appear_in_any_form(&self, bytes: &[u8]) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.is_match(bytes))
    }

    /// Whether `bytes` contain any secret value.
    pub fn appear_in(&self, bytes: &[u8]) -> bool {
        self.secrets.iter().any(|s| !s.value.is_empty() && memchr::memmem::find(bytes, s.value.as_bytes()).is_some())
    }

    /// Fill `{{NAME}}` placeholders of declared secrets in a header value.
    pub fn substitute(&self, value: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = value;
        while let Some(start) = rest.find("{{") {
            let end = rest[start..].find("}}").ok_or("unterminated {{ placeholder")? + start;
            let name = rest[start + 2..end].trim();
            let secret =
                self.secrets.iter().find(|s| s.name == name).ok_or_else(|| {
                    format!("{{{{{name}}}}} is not a secret this connector declared, or it is not set")
                })?;
            out.push_str(&rest[..start]);
            out.push_str(&secret.value);
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Replace every secret, and its encodings, in `text` with `[redacted NAME]`.
    pub fn redact(&self, text: &str) -> String {
        // Whole UTF-8 secrets replaced by ASCII leave valid UTF-8; encodings
        // are ASCII.
        String::from_utf8_lossy(&self.redact_bytes(text.as_bytes().to_vec())).into_owned()
    }

    /// [`Secrets::redact`] for bytes.
    pub fn redact_bytes(&self, body: Vec<u8>) -> Vec<u8> {
        let mut pending = body;
        self.redact_stream(&mut pending, true)
    }

    /// Redact the part of a stream read so far: returns what can be passed
    /// on and leaves in `pending` the tail that could still be the start of
    /// a secret (nothing at the end of the stream, `eof`).
    pub fn redact_stream(&self, pending: &mut Vec<u8>, eof: bool) -> Vec<u8> {
        let end = self.redact_tail(pending, 0, eof);
        let held = pending.split_off(end);
        std::mem::replace(pending, held)
    }

    /// Redact, in place, what follows `buf[..done]` (already final) as far
    /// as it can be told, and return where the final part now ends: past it
    /// lies at most a secret's length less one byte that could still be the
    /// start of one (nothing at the end of the stream, `eof`). Without a
    /// match, nothing is copied.
    pub fn redact_tail(&self, buf: &mut Vec<u8>, done: usize, eof: bool) -> usize {
        let Some(matcher) = &self.matcher else { return buf.len() };
        let hold = if eof { 0 } else { self.longest.saturating_sub(1) };
        // A match that starts before `safe` lies wholly in `buf`.
        let safe = buf.len().saturating_sub(hold).max(done);
        let mut found = matcher.find_iter(&buf[done..]).take_while(|m| done + m.start() < safe).peekable();
        if found.peek().is_none() {
            return safe;
        }
        let mut tail = Vec::with_capacity(buf.len() - done);
        let mut at = done;
        for hit in found {
            tail.extend_from_slice(&buf[at..done + hit.start()]);
            let name = &self.secrets[self.owners[hit.pattern().as_usize()]].name;
            tail.extend_from_slice(format!("[redacted {name}]").as_bytes());
            at = done + hit.end();
        }
        // Past the last match, the final part ends where it would have.
        let end = done + tail.len() + safe.saturating_sub(at);
        tail.extend_from_slice(&buf[at..]);
        buf.truncate(done);
        buf.extend_from_slice(&tail);
        end
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    const KEY: &str = "dtn_s3cr3t+key/with=chars";

    fn secrets() -> Secrets {
        Secrets::from_pairs(vec![("API_KEY".into(), KEY.into())])
    }

    #[test]
    fn placeholders_are_filled_only_for_declared_secrets() {
        let secrets = secrets();
        assert_eq!(secrets.substitute("Bearer {{API_KEY}}").unwrap(), format!("Bearer {KEY}"));
        assert_eq!(secrets.substitute("plain").unwrap(), "plain");
        assert!(secrets.substitute("{{HOME}}").is_err());
        assert!(secrets.substitute("{{API_KEY").is_err());
    }

    #[test]
    fn secrets_are_redacted_from_text_and_bodies() {
        let secrets = secrets();
        assert_eq!(secrets.redact(&format!("key={KEY}!")), "key=[redacted API_KEY]!");
        assert_eq!(
            secrets.redact_bytes(format!("x{KEY}{KEY}").into_bytes()),
            b"x[redacted API_KEY][redacted API_KEY]".to_vec()
        );
    }

    #[test]
    fn encodings_of_a_secret_are_redacted_at_every_alignment() {
        let secrets = secrets();
        for prefix in ["", "u", "us", "user:"] {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{prefix}{KEY}"));
            let redacted = secrets.redact(&format!("Authorization: Basic {basic}"));
            assert!(redacted.contains("[redacted API_KEY]"), "{prefix:?}: {redacted}");
            let url_safe = URL_SAFE_NO_PAD.encode(format!("{prefix}{KEY}.tail"));
            assert!(secrets.redact(&url_safe).contains("[redacted API_KEY]"), "{prefix:?} url-safe");
        }
        let query = format!("https://x/?token={}", percent_encode(KEY, false));
        assert_eq!(secrets.redact(&query), "https://x/?token=[redacted API_KEY]");
        let lower = format!("token={}", percent_encode(KEY, true));
        assert_eq!(secrets.redact(&lower), "token=[redacted API_KEY]");
    }

    #[test]
    fn a_secret_split_across_chunks_is_redacted() {
        let secrets = secrets();
        let body = format!("before {KEY} middle {KEY}");
        for chunk in [1, 3, 7, 64] {
            let mut pending = Vec::new();
            let mut out = Vec::new();
            for piece in body.as_bytes().chunks(chunk) {
                pending.extend_from_slice(piece);
                out.extend(secrets.redact_stream(&mut pending, false));
            }
            out.extend(secrets.redact_stream(&mut pending, true));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "before [redacted API_KEY] middle [redacted API_KEY]",
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn redacting_in_place_hands_on_parts_as_a_stream_reader_takes_them() {
        // As a response stream does: append each chunk, redact the tail,
        // take some of the final part, keep the rest.
        let secrets = secrets();
        let body = format!("{KEY}{KEY} before {KEY} middle {KEY}");
        for (chunk, take) in [(1, 1), (3, 2), (7, 100), (64, 5), (4, 4)] {
            let (mut buffer, mut redacted, mut out) = (Vec::new(), 0, Vec::new());
            let mut pieces = body.as_bytes().chunks(chunk).peekable();
            while let Some(piece) = pieces.next() {
                buffer.extend_from_slice(piece);
                redacted = secrets.redact_tail(&mut buffer, redacted, pieces.peek().is_none());
                let n = redacted.min(take);
                out.extend(buffer.drain(..n));
                redacted -= n;
            }
            out.extend(buffer.drain(..redacted));
            assert!(buffer.is_empty(), "chunks of {chunk}: {buffer:?} left");
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "[redacted API_KEY][redacted API_KEY] before [redacted API_KEY] middle [redacted API_KEY]",
                "chunks of {chunk}, taking {take}"
            );
        }
    }

    #[test]
    fn unrelated_text_is_left_alone() {
        let secrets = Secrets::from_pairs(vec![("K".into(), "kkkkkkkk".into())]);
        let text = "a kid's kit in /home/k/keys: ok, k=1";
        assert_eq!(secrets.redact(text), text);
        assert_eq!(secrets.too_short(), None);
        assert_eq!(Secrets::from_pairs(vec![("K".into(), "k".into())]).too_short(), Some(("K".into(), 1)));
    }
}
