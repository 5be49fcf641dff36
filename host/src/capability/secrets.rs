//! Secrets: the values a connector may name but never hold.
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

use std::collections::HashMap;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

use crate::sandbox::ConfigKey;

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
}

impl Secrets {
    /// The declared `secret` keys of `keys` that are set in `config`.
    pub fn declared(keys: &[ConfigKey], config: &HashMap<String, String>) -> Self {
        Self::from_pairs(
            keys.iter()
                .filter(|k| k.secret)
                .filter_map(|k| config.get(&k.name).map(|v| (k.name.clone(), v.clone())))
                .collect(),
        )
    }

    /// Secrets from (name, value) pairs.
    pub fn from_pairs(values: Vec<(String, String)>) -> Self {
        Secrets { secrets: values.into_iter().map(|(name, value)| Secret::new(name, value)).collect() }
    }

    /// The first secret shorter than [`MIN_SECRET_LEN`], with its length.
    pub fn too_short(&self) -> Option<(String, usize)> {
        self.secrets
            .iter()
            .find(|s| s.value.chars().count() < MIN_SECRET_LEN)
            .map(|s| (s.name.clone(), s.value.chars().count()))
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
        let longest = self.secrets.iter().flat_map(|s| s.needles.iter().map(Vec::len)).max().unwrap_or(0);
        let hold = if eof { 0 } else { longest.saturating_sub(1) };
        // A match that starts before `safe` lies wholly in `pending`.
        let safe = pending.len().saturating_sub(hold);
        let mut out = Vec::with_capacity(pending.len());
        let mut at = 0;
        while let Some((start, len, name)) = self.earliest(&pending[at..]).filter(|(start, ..)| at + start < safe) {
            out.extend_from_slice(&pending[at..at + start]);
            out.extend_from_slice(format!("[redacted {name}]").as_bytes());
            at += start + len;
        }
        let end = safe.max(at);
        out.extend_from_slice(&pending[at..end]);
        pending.drain(..end);
        out
    }

    /// The first secret (or encoding of one) in `haystack`: its offset,
    /// length and the secret's name. At one offset the longest wins.
    fn earliest(&self, haystack: &[u8]) -> Option<(usize, usize, &str)> {
        let mut best: Option<(usize, usize, &str)> = None;
        for secret in &self.secrets {
            for needle in &secret.needles {
                if let Some(at) = memchr::memmem::find(haystack, needle)
                    && best.is_none_or(|(b_at, b_len, _)| at < b_at || (at == b_at && needle.len() > b_len))
                {
                    best = Some((at, needle.len(), &secret.name));
                }
            }
        }
        best
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
    fn unrelated_text_is_left_alone() {
        let secrets = Secrets::from_pairs(vec![("K".into(), "kkkkkkkk".into())]);
        let text = "a kid's kit in /home/k/keys: ok, k=1";
        assert_eq!(secrets.redact(text), text);
        assert_eq!(secrets.too_short(), None);
        assert_eq!(Secrets::from_pairs(vec![("K".into(), "k".into())]).too_short(), Some(("K".into(), 1)));
    }
}
