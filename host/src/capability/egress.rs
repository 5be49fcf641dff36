//! Egress, layer 2: the addresses a permitted name resolves to.
//!
//! Layer 1 ([`super::allowed_hosts`]) decides which *names* a connector may
//! call. This layer is applied to every address those names resolve to,
//! whatever DNS returns, so that an allowed name can never steer a connector
//! into the host's own networks (loopback, private ranges, cloud metadata).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ip_network::{Ipv4Network, Ipv6Network};
use std::sync::Arc;

use super::allowed_hosts::AllowedHosts;

/// Whether a connector may reach `ip` without a configured URL naming it:
/// the address must be globally reachable.
///
/// The IANA special-purpose registries come from the `ip_network` crate
/// (loopback, private, shared/CGNAT, link-local — where cloud metadata
/// services live — documentation, benchmarking, reserved 240.0.0.0/4,
/// unique-local and site-local IPv6, 2001:db8::/32, …). On top of it:
///
/// * multicast is never a destination (the crate counts global-scope IPv6
///   multicast, and any IPv4 multicast, as global);
/// * an IPv6 address that carries an IPv4 one — mapped (`::ffff:a.b.c.d`),
///   IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`)
///   or 6to4 (`2002::/16`) — is judged by that IPv4 address too, so
///   `::ffff:169.254.169.254` is as private as `169.254.169.254`;
/// * the IETF protocol block `2001::/23` (Teredo, ORCHID, benchmarking), the
///   2024 documentation block `3fff::/20` and discard-only `100::/64` are
///   not destinations.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_multicast() && Ipv4Network::from(v4).is_global(),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_ipv4(v6) {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let ietf_protocol_block = s[0] == 0x2001 && s[1] < 0x0200;
            let documentation_2024 = s[0] & 0xfff0 == 0x3ff0;
            let discard_only = s[..4] == [0x100, 0, 0, 0];
            !v6.is_multicast()
                && !ietf_protocol_block
                && !documentation_2024
                && !discard_only
                && Ipv6Network::from(v6).is_global()
        }
    }
}

/// The IPv4 address an IPv6 one carries, for the forms that route to it.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible; not :: or ::1).
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(low(hi, lo)),
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) > (0, 1) => Some(low(hi, lo)),
        // NAT64: the well-known prefix and the local-use /48.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x64, 0xff9b, 1, ..] => Some(low(s[6], s[7])),
        // 6to4: 2002:AABB:CCDD::/48 routes to AA.BB.CC.DD.
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

/// Resolves names to public addresses only; in a client for configured
/// private origins (`private`), names those origins use may also resolve to
/// private addresses.
pub(crate) struct PublicResolver {
    pub(crate) policy: Arc<AllowedHosts>,
    pub(crate) private: bool,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let private = self.private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = if private && policy.may_resolve_private(&host) {
                all
            } else {
                all.into_iter().filter(|a| is_public(a.ip())).collect()
            };
            if allowed.is_empty() {
                return Err(format!(
                    "{host} resolves only to private or loopback addresses, which connectors may not reach"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        let private = [
            // Loopback, private, CGNAT, link-local (cloud metadata), "this network".
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200", // Alibaba Cloud metadata, in 100.64.0.0/10
            "0.0.0.0",
            "0.1.2.3",
            // Reserved and special blocks the old check missed.
            "240.0.0.1",
            "255.255.255.254",
            "198.18.0.1",
            "192.0.0.192", // IETF protocol assignments (Oracle Cloud metadata)
            "192.0.2.1",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            // IPv6: loopback, unspecified, ULA (AWS metadata fd00:ec2::254), link-local, site-local.
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "2001:db8::1",
            "3fff::1",
            "2001::1",    // Teredo
            "2001:10::1", // ORCHID
            "ff02::1",
            "ff0e::1", // global-scope multicast is still multicast
            "100::1",  // discard-only
            // IPv4 inside IPv6, in every form that routes to it.
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
            "64:ff9b:1::a00:1",   // local-use NAT64 of 10.0.0.1
            "2002:a9fe:a9fe::1",  // 6to4 of 169.254.169.254
            "2002:7f00:1::",      // 6to4 of 127.0.0.1
        ];
        for ip in private {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must not be public");
        }
        let public = ["1.1.1.1", "8.8.8.8", "192.0.0.9", "2606:4700::1111", "::ffff:1.1.1.1", "64:ff9b::808:808"];
        for ip in public {
            assert!(is_public(ip.parse().unwrap()), "{ip} must be public");
        }
    }
}
