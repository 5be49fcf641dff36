//! Which origins a connector may call, parsed once into rules.
//!
//! Entries come from the connector's `info.allowed-hosts`:
//!
//! * `https://app.daytona.io`, `http://10.0.0.5:8080` — one origin;
//! * `https://*.daytona.io` — any subdomain (not `daytona.io` itself);
//! * `{{DAYTONA_API_URL}}` — the origin of a configured URL.
//!
//! An empty list means no network at all. This is layer 1, names: layer 2
//! ([`super::egress`]) checks the addresses names resolve to. A rule never
//! matches a private, loopback or link-local address (cloud metadata services
//! live there) unless it comes from a configured URL that itself points at
//! one — how a test server on 127.0.0.1, or a self-hosted Daytona on the LAN,
//! is reached.

use std::collections::HashMap;
use std::net::IpAddr;

use reqwest::Url;

use super::egress::is_public;

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.suffix`: matches `a.suffix`, `a.b.suffix`.
    Subdomains(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    scheme: String,
    host: HostPattern,
    port: u16,
    /// May reach non-public addresses (only rules from configured URLs).
    allow_private: bool,
    /// The entry as written, for messages.
    source: String,
}

/// The origins a connector may call, parsed from its `allowed-hosts`.
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts {
    rules: Vec<Rule>,
}

/// Why a destination was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// No rule matches the origin.
    #[error("{origin} is not among the connector's allowed hosts ({allowed})")]
    NotAllowed {
        /// The refused origin.
        origin: String,
        /// The connector's rules, as written.
        allowed: String,
    },
    /// The origin is a non-public address no configured URL names.
    #[error("{origin} is a private or loopback address, which only a configured URL may name")]
    Private {
        /// The refused origin.
        origin: String,
    },
    /// Not an http(s) URL.
    #[error("{0} is not an http(s) URL")]
    BadUrl(String),
}

impl AllowedHosts {
    /// Parse `entries`; `config` resolves `{{KEY}}` entries. Entries that
    /// cannot be parsed are skipped and returned as warnings.
    pub fn parse(entries: &[String], config: &HashMap<String, String>) -> (Self, Vec<String>) {
        let mut rules = Vec::new();
        let mut warnings = Vec::new();
        for entry in entries {
            let trimmed = entry.trim();
            let (text, from_config) = match trimmed.strip_prefix("{{").and_then(|s| s.strip_suffix("}}")) {
                Some(key) => match config.get(key.trim()) {
                    Some(value) => (value.clone(), true),
                    None => {
                        warnings.push(format!("allowed host {trimmed}: {key} is not set"));
                        continue;
                    }
                },
                None => (trimmed.to_string(), false),
            };
            match parse_rule(&text, from_config) {
                Ok(mut rule) => {
                    rule.source = trimmed.to_string();
                    rules.push(rule);
                }
                Err(reason) => warnings.push(format!("allowed host {trimmed}: {reason}")),
            }
        }
        (AllowedHosts { rules }, warnings)
    }

    /// Whether the connector may call nothing.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn matching(&self, scheme: &str, host: &str, port: u16) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |rule| {
            rule.scheme == scheme
                && rule.port == port
                && match &rule.host {
                    HostPattern::Exact(h) => h == host,
                    HostPattern::Subdomains(suffix) => {
                        host.len() > suffix.len() + 1
                            && host.ends_with(suffix)
                            && host[..host.len() - suffix.len()].ends_with('.')
                    }
                }
        })
    }

    /// The scheme, lowercased host (without IPv6 brackets) and port of an
    /// http(s) URL.
    fn parts(url: &Url) -> Result<(&str, String, u16), Refusal> {
        let (scheme, Some(host), Some(port)) = (url.scheme(), url.host_str(), url.port_or_known_default()) else {
            return Err(Refusal::BadUrl(origin(url)));
        };
        if scheme != "http" && scheme != "https" {
            return Err(Refusal::BadUrl(origin(url)));
        }
        Ok((scheme, host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase(), port))
    }

    /// Check a URL (each request, and each redirect hop).
    pub fn check(&self, url: &Url) -> Result<(), Refusal> {
        let (scheme, host, port) = Self::parts(url)?;
        let mut rules = self.matching(scheme, &host, port).peekable();
        if rules.peek().is_none() {
            return Err(Refusal::NotAllowed { origin: origin(url), allowed: self.describe() });
        }
        let allow_private = rules.any(|rule| rule.allow_private);
        if let Ok(ip) = host.parse::<IpAddr>()
            && !is_public(ip)
            && !allow_private
        {
            return Err(Refusal::Private { origin: origin(url) });
        }
        Ok(())
    }

    /// Whether the origin of `url` is one a configured URL names as a
    /// private address: the only origins the private-address exemption
    /// covers (the same host on another port is not covered).
    pub fn allows_private(&self, url: &Url) -> bool {
        Self::parts(url).is_ok_and(|(scheme, host, port)| self.matching(scheme, &host, port).any(|r| r.allow_private))
    }

    /// Whether any configured URL names a private address.
    pub fn has_private(&self) -> bool {
        self.rules.iter().any(|rule| rule.allow_private)
    }

    /// Whether the name `host` may resolve to non-public addresses (asked
    /// only for requests to origins [`AllowedHosts::allows_private`] covers).
    pub fn may_resolve_private(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.rules.iter().any(|rule| rule.allow_private && rule.host == HostPattern::Exact(host.clone()))
    }

    fn describe(&self) -> String {
        if self.rules.is_empty() {
            return "none: this connector has no network access".into();
        }
        self.rules.iter().map(|r| r.source.as_str()).collect::<Vec<_>>().join(", ")
    }
}

fn parse_rule(text: &str, from_config: bool) -> Result<Rule, String> {
    let (scheme, rest) = text.split_once("://").ok_or("needs a scheme, e.g. https://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("scheme {scheme} is not http or https"));
    }
    if let Some(suffix) = rest.strip_prefix("*.") {
        let url = Url::parse(&format!("{scheme}://{suffix}")).map_err(|e| e.to_string())?;
        let host = url.host_str().ok_or("no host")?.to_ascii_lowercase();
        return Ok(Rule {
            scheme,
            host: HostPattern::Subdomains(host),
            port: url.port_or_known_default().ok_or("no port")?,
            allow_private: false,
            source: String::new(),
        });
    }
    let url = Url::parse(text).map_err(|e| e.to_string())?;
    let host = url.host_str().ok_or("no host")?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let private_target = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| !is_public(ip));
    Ok(Rule {
        scheme,
        port: url.port_or_known_default().ok_or("no port")?,
        allow_private: from_config && private_target,
        host: HostPattern::Exact(host),
        source: String::new(),
    })
}

/// `scheme://host:port` of a URL, for messages.
pub fn origin(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
        _ => url.as_str().chars().take(100).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str], config: &[(&str, &str)]) -> AllowedHosts {
        let config = config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (hosts, warnings) =
            AllowedHosts::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &config);
        assert!(warnings.is_empty(), "{warnings:?}");
        hosts
    }

    fn check(hosts: &AllowedHosts, url: &str) -> Result<(), Refusal> {
        hosts.check(&Url::parse(url).unwrap())
    }

    #[test]
    fn an_empty_list_denies_everything() {
        let none = AllowedHosts::default();
        assert!(matches!(check(&none, "https://app.daytona.io/api"), Err(Refusal::NotAllowed { .. })));
    }

    #[test]
    fn exact_and_wildcard_origins() {
        let h = hosts(&["https://app.daytona.io", "https://*.daytona.io"], &[]);
        assert!(check(&h, "https://app.daytona.io/api/sandbox").is_ok());
        assert!(check(&h, "https://proxy.app.daytona.io/toolbox/x").is_ok());
        assert!(check(&h, "https://daytona.io/").is_err(), "the wildcard does not cover the apex");
        assert!(check(&h, "https://evil-daytona.io/").is_err());
        assert!(check(&h, "https://daytona.io.evil.com/").is_err());
        assert!(check(&h, "http://app.daytona.io/").is_err(), "scheme must match");
        assert!(check(&h, "https://app.daytona.io:8443/").is_err(), "port must match");
    }

    #[test]
    fn configured_urls_may_be_private_literal_entries_may_not() {
        let h = hosts(&["{{API}}"], &[("API", "http://127.0.0.1:4000/api")]);
        assert!(check(&h, "http://127.0.0.1:4000/toolbox/x").is_ok());
        assert!(check(&h, "http://127.0.0.1:4001/").is_err());
        assert!(check(&h, "http://169.254.169.254/latest/meta-data").is_err());

        let literal = hosts(&["http://127.0.0.1:4000"], &[]);
        assert!(matches!(check(&literal, "http://127.0.0.1:4000/"), Err(Refusal::Private { .. })));
        assert!(!literal.may_resolve_private("127.0.0.1"));
        let localhost = hosts(&["{{API}}"], &[("API", "http://localhost:9")]);
        assert!(localhost.may_resolve_private("localhost"));
    }

    #[test]
    fn the_private_exemption_covers_the_configured_origin_only() {
        let h = hosts(&["{{API}}", "http://localhost:1"], &[("API", "http://localhost:4000/api")]);
        let url = |u: &str| Url::parse(u).unwrap();
        assert!(h.allows_private(&url("http://localhost:4000/toolbox")));
        assert!(!h.allows_private(&url("http://localhost:1/")), "another port of the same host");
        assert!(!h.allows_private(&url("https://localhost:4000/")), "another scheme");
        assert!(check(&h, "http://localhost:1/").is_ok(), "allowed by name, but only to public addresses");
    }

    #[test]
    fn missing_config_and_bad_entries_warn() {
        let (h, warnings) =
            AllowedHosts::parse(&["{{NOPE}}".into(), "app.daytona.io".into(), "ftp://x".into()], &HashMap::new());
        assert!(h.is_empty());
        assert_eq!(warnings.len(), 3, "{warnings:?}");
    }
}
