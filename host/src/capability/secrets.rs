//! Secrets: the values a connector may name but never hold.
//!
//! A connector writes `{{NAME}}` in a header value; the host fills it in on
//! the way out ([`Secrets::substitute`]) and redacts every secret value from
//! whatever comes back or is logged ([`Secrets::redact`]). This is the one
//! place both happen.

use std::collections::HashMap;

use crate::sandbox::ConfigKey;

/// The secrets one connector declared and the user set: (name, value).
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    values: Vec<(String, String)>,
}

impl Secrets {
    /// The declared `secret` keys of `keys` that are set in `config`.
    pub fn declared(keys: &[ConfigKey], config: &HashMap<String, String>) -> Self {
        let values = keys
            .iter()
            .filter(|k| k.secret)
            .filter_map(|k| config.get(&k.name).map(|v| (k.name.clone(), v.clone())))
            .collect();
        Secrets { values }
    }

    /// Secrets from (name, value) pairs.
    pub fn from_pairs(values: Vec<(String, String)>) -> Self {
        Secrets { values }
    }

    /// Whether `bytes` contain any secret value.
    pub fn appear_in(&self, bytes: &[u8]) -> bool {
        self.values.iter().any(|(_, s)| !s.is_empty() && memchr::memmem::find(bytes, s.as_bytes()).is_some())
    }

    /// Fill `{{NAME}}` placeholders of declared secrets in a header value.
    pub fn substitute(&self, value: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = value;
        while let Some(start) = rest.find("{{") {
            let end = rest[start..].find("}}").ok_or("unterminated {{ placeholder")? + start;
            let name = rest[start + 2..end].trim();
            let (_, secret) =
                self.values.iter().find(|(n, _)| n == name).ok_or_else(|| {
                    format!("{{{{{name}}}}} is not a secret this connector declared, or it is not set")
                })?;
            out.push_str(&rest[..start]);
            out.push_str(secret);
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Replace every secret value in `text` with `[redacted NAME]`.
    pub fn redact(&self, text: &str) -> String {
        // Whole UTF-8 secrets replaced by ASCII leave valid UTF-8.
        String::from_utf8_lossy(&self.redact_bytes(text.as_bytes().to_vec())).into_owned()
    }

    /// [`Secrets::redact`] for bytes.
    pub fn redact_bytes(&self, body: Vec<u8>) -> Vec<u8> {
        let mut body = body;
        for (name, value) in &self.values {
            if value.is_empty() || memchr::memmem::find(&body, value.as_bytes()).is_none() {
                continue;
            }
            let replacement = format!("[redacted {name}]").into_bytes();
            let mut out = Vec::with_capacity(body.len());
            let mut at = 0;
            for found in memchr::memmem::find_iter(&body, value.as_bytes()) {
                out.extend_from_slice(&body[at..found]);
                out.extend_from_slice(&replacement);
                at = found + value.len();
            }
            out.extend_from_slice(&body[at..]);
            body = out;
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::from_pairs(vec![("API_KEY".into(), "s3cr3t".into())])
    }

    #[test]
    fn placeholders_are_filled_only_for_declared_secrets() {
        let secrets = secrets();
        assert_eq!(secrets.substitute("Bearer {{API_KEY}}").unwrap(), "Bearer s3cr3t");
        assert_eq!(secrets.substitute("plain").unwrap(), "plain");
        assert!(secrets.substitute("{{HOME}}").is_err());
        assert!(secrets.substitute("{{API_KEY").is_err());
    }

    #[test]
    fn secrets_are_redacted_from_text_and_bodies() {
        let secrets = secrets();
        assert_eq!(secrets.redact("key=s3cr3t!"), "key=[redacted API_KEY]!");
        assert_eq!(secrets.redact_bytes(b"xs3cr3ts3cr3t".to_vec()), b"x[redacted API_KEY][redacted API_KEY]".to_vec());
    }
}
