//! The client address of a request: the socket peer, or, when the peer is a
//! trusted reverse proxy (`--trusted-proxies`), the address the proxies say
//! the request came from.
//!
//! Behind a proxy every request comes from the proxy's address, so without
//! this the per-client login limit would lock everyone out at once. The
//! headers are believed only from a trusted peer (anyone else could write
//! any address into them), and only as far as the chain of trusted proxies
//! goes: the client is the right-most address that is not itself a trusted
//! proxy. Anything unreadable in the part of the chain that is consulted
//! makes the answer the socket peer.
//!
//! `X-Forwarded-For` is read if present (it is what most proxies append);
//! otherwise RFC 7239 `Forwarded` (`for=`). A proxy that writes only
//! `Forwarded` must remove a client-sent `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};

use poem::http::header::FORWARDED;
use poem::http::HeaderMap;

use crate::config::Cidr;

/// The non-standard but common proxy header.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client address of a request from `peer` with `headers`, given the
/// networks of trusted proxies. IPv4-mapped IPv6 addresses come out as IPv4.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[Cidr]) -> IpAddr {
    let peer = peer.to_canonical();
    let trusted = |ip: IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(peer) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = if headers.contains_key(X_FORWARDED_FOR) {
        elements(headers, X_FORWARDED_FOR)
            .map(forwarded_for_element)
            .collect()
    } else {
        elements(headers, FORWARDED.as_str())
            .map(forwarded_element)
            .collect()
    };
    // From the nearest hop outwards; if every hop is a trusted proxy, the
    // farthest one is the client.
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = hop else { return peer };
        client = ip.to_canonical();
        if !trusted(client) {
            break;
        }
    }
    client
}

/// The comma-separated elements of every `name` header, in order.
fn elements<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("\u{0}").split(','))
        .map(str::trim)
}

/// One `X-Forwarded-For` element: `192.0.2.1`, `2001:db8::1`, and, as some
/// proxies write them, `192.0.2.1:4711` or `[2001:db8::1]:4711`.
fn forwarded_for_element(element: &str) -> Option<IpAddr> {
    node_address(element)
}

/// One RFC 7239 element, e.g. `for=192.0.2.60;proto=http;by=203.0.113.43`
/// or `For="[2001:db8:cafe::17]:4711"`: its `for=` address.
fn forwarded_element(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        // `unknown` and obfuscated names (`_hidden`) are no address.
        node_address(value)
    })
}

/// An address with an optional port, IPv6 optionally in brackets.
fn node_address(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = node.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    const PROXY: &str = "10.0.0.1";

    fn resolve(pairs: &[(&'static str, &'static str)]) -> IpAddr {
        let trusted = proxies(&["10.0.0.0/8", "::1/128"]);
        client_ip(ip(PROXY), &headers(pairs), &trusted)
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let spoofed = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
        ]);
        assert_eq!(
            client_ip(ip("192.0.2.1"), &spoofed, &trusted),
            ip("192.0.2.1")
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &spoofed, &[]), ip("10.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        // A client-written address on the left is not believed.
        assert_eq!(
            resolve(&[("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.0.0.2")]),
            ip("203.0.113.9")
        );
        assert_eq!(
            resolve(&[
                ("x-forwarded-for", "198.51.100.1"),
                ("x-forwarded-for", "203.0.113.9")
            ]),
            ip("203.0.113.9"),
            "several header lines are one list"
        );
        assert_eq!(
            resolve(&[("x-forwarded-for", "10.0.0.7, 10.0.0.2")]),
            ip("10.0.0.7"),
            "all trusted: the farthest"
        );
        assert_eq!(resolve(&[]), ip(PROXY), "no header: the peer");
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        assert_eq!(
            resolve(&[(
                "forwarded",
                "for=198.51.100.1, for=203.0.113.9;proto=https;by=10.0.0.1"
            )]),
            ip("203.0.113.9")
        );
        assert_eq!(
            resolve(&[("forwarded", "For=\"[2001:db8:cafe::17]:4711\"")]),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            resolve(&[("forwarded", "for=\"203.0.113.9:80\"")]),
            ip("203.0.113.9")
        );
        assert_eq!(
            resolve(&[
                ("forwarded", "for=198.51.100.1"),
                ("x-forwarded-for", "203.0.113.9")
            ]),
            ip("203.0.113.9"),
            "X-Forwarded-For wins"
        );
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_understood() {
        assert_eq!(
            resolve(&[("x-forwarded-for", "203.0.113.9:4711")]),
            ip("203.0.113.9")
        );
        assert_eq!(
            resolve(&[("x-forwarded-for", "[2001:db8::1]:4711")]),
            ip("2001:db8::1")
        );
        assert_eq!(
            resolve(&[("x-forwarded-for", "[2001:db8::1]")]),
            ip("2001:db8::1")
        );
        assert_eq!(
            resolve(&[("x-forwarded-for", "::ffff:203.0.113.9")]),
            ip("203.0.113.9")
        );
        let trusted = proxies(&["10.0.0.0/8"]);
        let forwarded = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &forwarded, &trusted),
            ip("203.0.113.9"),
            "a mapped peer address is its IPv4 address"
        );
    }

    #[test]
    fn garbage_in_the_consulted_chain_falls_back_to_the_peer() {
        for value in ["", "garbage", "203.0.113.9, 10.0.0.2, nonsense", "unknown"] {
            assert_eq!(
                resolve(&[("x-forwarded-for", value)]),
                ip(PROXY),
                "{value:?}"
            );
        }
        for value in ["for=unknown", "for=_hidden", "proto=https", "for=\"[::1\""] {
            assert_eq!(resolve(&[("forwarded", value)]), ip(PROXY), "{value:?}");
        }
        // Garbage beyond the first untrusted address is never reached.
        assert_eq!(
            resolve(&[("x-forwarded-for", "nonsense, 203.0.113.9")]),
            ip("203.0.113.9")
        );
    }
}
