//! Which addresses an outbound fetch may connect to: the classification of special-purpose
//! addresses ([`classify`]), the operator's allow-list ([`Allowlist`]) and the decision that
//! combines them ([`OutboundPolicy::check`]). Pure functions over resolved addresses: no I/O.
//!
//! The ranges are those of the IANA IPv4 and IPv6 Special-Purpose Address Registries
//! (<https://www.iana.org/assignments/iana-ipv4-special-registry>,
//! <https://www.iana.org/assignments/iana-ipv6-special-registry>) that are not globally
//! reachable, plus multicast and broadcast. std's `Ipv4Addr`/`Ipv6Addr` methods name most
//! of them; the rest are `ipnet` blocks below. `Ipv4Addr::is_global` would be the one call,
//! but it is still unstable, and the crates that backport it are unmaintained.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why an address is no place for an outbound fetch: the special-purpose range it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Forbidden {
    /// `0.0.0.0`, `::`: "this host"; connecting to it reaches the local machine.
    Unspecified,
    /// `0.0.0.0/8` (RFC 791): "this network".
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10/8`, `172.16/12`, `192.168/16` (RFC 1918).
    Private,
    /// `100.64.0.0/10` (RFC 6598): carrier-grade NAT, and where some clouds put their
    /// metadata service (Aliyun: `100.100.100.200`).
    SharedAddressSpace,
    /// `169.254.0.0/16`, `fe80::/10`: link-local, where cloud metadata services answer
    /// (`169.254.169.254`).
    LinkLocal,
    /// `192.0.0.0/24` (RFC 6890), `2001::/23` (RFC 2928; Teredo, benchmarking, ORCHID).
    ProtocolAssignments,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24` (RFC 5737), `2001:db8::/32` (RFC 3849),
    /// `3fff::/20` (RFC 9637).
    Documentation,
    /// `198.18.0.0/15` (RFC 2544).
    Benchmarking,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `fc00::/7` (RFC 4193): the IPv6 private ranges.
    UniqueLocal,
    /// `240.0.0.0/4` and `192.88.99.0/24` (deprecated 6to4 relays); in IPv6, anything
    /// outside global unicast `2000::/3` not named above, such as the deprecated
    /// IPv4-compatible `::a.b.c.d` and site-local `fec0::/10`.
    Reserved,
}

impl Forbidden {
    /// What the range is, with its article: `a link-local address (cloud metadata …)`.
    pub fn describe(self) -> &'static str {
        match self {
            Forbidden::Unspecified => "the unspecified address (this host)",
            Forbidden::ThisNetwork => "a \"this network\" address (0.0.0.0/8)",
            Forbidden::Loopback => "a loopback address",
            Forbidden::Private => "a private address (RFC 1918)",
            Forbidden::SharedAddressSpace => {
                "a shared address (100.64.0.0/10: carrier-grade NAT, cloud metadata)"
            }
            Forbidden::LinkLocal => {
                "a link-local address (where cloud metadata services answer, e.g. 169.254.169.254)"
            }
            Forbidden::ProtocolAssignments => "an IETF protocol assignment address",
            Forbidden::Documentation => "a documentation address",
            Forbidden::Benchmarking => "a benchmarking address (198.18.0.0/15)",
            Forbidden::Multicast => "a multicast address",
            Forbidden::Broadcast => "the broadcast address",
            Forbidden::UniqueLocal => "a unique local (private) IPv6 address (fc00::/7)",
            Forbidden::Reserved => "a reserved address",
        }
    }
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// IPv4 blocks that are not globally reachable and that std has no stable method for.
const V4_BLOCKS: [(Ipv4Net, Forbidden); 6] = [
    (
        Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8),
        Forbidden::ThisNetwork,
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10),
        Forbidden::SharedAddressSpace,
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 0), 24),
        Forbidden::ProtocolAssignments,
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(192, 88, 99, 0), 24),
        Forbidden::Reserved,
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15),
        Forbidden::Benchmarking,
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4),
        Forbidden::Reserved,
    ),
];

/// IPv6 global unicast (RFC 4291): every other IPv6 address is special.
const V6_GLOBAL_UNICAST: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);

/// NAT64 well-known prefix (RFC 6052): the last 32 bits are an IPv4 address.
const V6_NAT64: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);

/// 6to4 (RFC 3056): bits 16–47 are an IPv4 address.
const V6_6TO4: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16);

/// Blocks inside global unicast that are not globally reachable.
const V6_BLOCKS: [(Ipv6Net, Forbidden); 3] = [
    (
        Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
        Forbidden::ProtocolAssignments,
    ),
    (
        Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32),
        Forbidden::Documentation,
    ),
    (
        Ipv6Net::new_assert(Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
        Forbidden::Documentation,
    ),
];

/// Why `ip` is no place for an outbound fetch, or `None` for a public address.
///
/// An IPv6 address that carries an IPv4 address is judged by that address: IPv4-mapped
/// (`::ffff:169.254.169.254` is link-local), NAT64 `64:ff9b::/96` and 6to4 `2002::/16`.
/// So a NAT64 or 6to4 form of a public address passes (IPv6-only networks with DNS64
/// reach public hosts that way), and any form of an internal one is refused.
pub fn classify(ip: IpAddr) -> Option<Forbidden> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    if ip.is_unspecified() {
        Some(Forbidden::Unspecified)
    } else if ip.is_broadcast() {
        Some(Forbidden::Broadcast)
    } else if ip.is_loopback() {
        Some(Forbidden::Loopback)
    } else if ip.is_private() {
        Some(Forbidden::Private)
    } else if ip.is_link_local() {
        Some(Forbidden::LinkLocal)
    } else if ip.is_multicast() {
        Some(Forbidden::Multicast)
    } else if ip.is_documentation() {
        Some(Forbidden::Documentation)
    } else {
        V4_BLOCKS
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, why)| *why)
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    let embedded = |bits: u128| Ipv4Addr::from(u32::try_from(bits & 0xffff_ffff).unwrap_or(0));
    if ip.is_unspecified() {
        Some(Forbidden::Unspecified)
    } else if ip.is_loopback() {
        Some(Forbidden::Loopback)
    } else if ip.is_multicast() {
        Some(Forbidden::Multicast)
    } else if ip.is_unique_local() {
        Some(Forbidden::UniqueLocal)
    } else if ip.is_unicast_link_local() {
        Some(Forbidden::LinkLocal)
    } else if V6_NAT64.contains(&ip) {
        classify_v4(embedded(u128::from(ip)))
    } else if V6_6TO4.contains(&ip) {
        classify_v4(embedded(u128::from(ip) >> 80))
    } else if !V6_GLOBAL_UNICAST.contains(&ip) {
        Some(Forbidden::Reserved)
    } else {
        V6_BLOCKS
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, why)| *why)
    }
}

/// One allow-list entry: a block of addresses, on any port or on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AllowEntry {
    net: IpNet,
    port: Option<u16>,
}

impl AllowEntry {
    fn allows(&self, addr: SocketAddr) -> bool {
        self.net.contains(&addr.ip().to_canonical()) && self.port.is_none_or(|p| p == addr.port())
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}", SocketAddr::new(self.net.addr(), port)),
            None => write!(f, "{}", self.net),
        }
    }
}

/// Addresses an outbound fetch may reach although [`classify`] refuses them: the
/// operator's `OUTBOUND_ALLOWLIST`, plus the built-in simulator's own address when the
/// service starts one.
///
/// Entries are IP addresses, CIDR blocks (`127.0.0.1/32`, `10.1.0.0/16`, `::1/128`: any
/// port) and socket addresses (`127.0.0.1:8080`, `[::1]:8080`: that port only), separated
/// by commas or whitespace. Host names are refused: the check is made on the address a
/// name resolves to, and a name may resolve elsewhere tomorrow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<AllowEntry>,
}

/// An allow-list entry that is not an address, a block or a socket address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?} {reason}")]
pub struct AllowlistError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Allowlist {
    /// Parses a list such as `127.0.0.1/32, ::1/128, 10.0.0.5:9000` (commas or whitespace
    /// between entries; an empty string is an empty list).
    ///
    /// # Errors
    /// [`AllowlistError`] for the first entry that is not an IP address, a CIDR block or a
    /// socket address (host names included).
    pub fn parse(list: &str) -> Result<Allowlist, AllowlistError> {
        let mut entries = Vec::new();
        for raw in list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            let entry = if let Ok(addr) = raw.parse::<SocketAddr>() {
                AllowEntry {
                    net: IpNet::from(addr.ip().to_canonical()),
                    port: Some(addr.port()),
                }
            } else if let Ok(ip) = raw.parse::<IpAddr>() {
                AllowEntry {
                    net: IpNet::from(ip.to_canonical()),
                    port: None,
                }
            } else if let Ok(net) = raw.parse::<IpNet>() {
                AllowEntry {
                    net: net.trunc(),
                    port: None,
                }
            } else {
                let looks_like_name = raw
                    .rsplit_once(':')
                    .map_or(raw, |(host, _)| host)
                    .chars()
                    .any(|c| c.is_ascii_alphabetic())
                    && !raw.contains('/');
                return Err(AllowlistError {
                    entry: raw.to_owned(),
                    reason: if looks_like_name {
                        "is a host name: give IP addresses (the check is made on the address a name resolves to)"
                    } else {
                        "is not an IP address, a CIDR block (127.0.0.1/32, ::1/128) or an IP:port (127.0.0.1:8080, [::1]:8080)"
                    },
                });
            };
            if !entries.contains(&entry) {
                entries.push(entry);
            }
        }
        Ok(Allowlist { entries })
    }

    /// This list plus exactly `addr` (that address, that port).
    #[must_use]
    pub fn with_socket(mut self, addr: SocketAddr) -> Allowlist {
        let entry = AllowEntry {
            net: IpNet::from(addr.ip().to_canonical()),
            port: Some(addr.port()),
        };
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
        self
    }

    /// Whether an entry covers `addr` (an IPv4-mapped IPv6 address is matched as IPv4).
    pub fn allows(&self, addr: SocketAddr) -> bool {
        self.entries.iter().any(|e| e.allows(addr))
    }

    /// Whether the list has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Display for Allowlist {
    /// The entries, normalised, separated by `,` (empty for an empty list).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{entry}")?;
        }
        Ok(())
    }
}

/// An address the policy refused, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{addr} is {why}, and OUTBOUND_ALLOWLIST does not allow it")]
pub struct RefusedAddress {
    /// The address (and port) that would have been connected to.
    pub addr: SocketAddr,
    /// The range it is in.
    pub why: Forbidden,
}

/// The decision for every connection an outbound fetch makes: a public address passes, a
/// special-purpose one ([`classify`]) only when the [`Allowlist`] covers it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    allow: Allowlist,
}

impl OutboundPolicy {
    /// The policy with `allow` as its exceptions.
    pub fn new(allow: Allowlist) -> OutboundPolicy {
        OutboundPolicy { allow }
    }

    /// The exceptions.
    pub fn allowlist(&self) -> &Allowlist {
        &self.allow
    }

    /// Whether a connection to `addr` may be made.
    ///
    /// # Errors
    /// [`RefusedAddress`] when `addr` is special-purpose and not allowed.
    pub fn check(&self, addr: SocketAddr) -> Result<(), RefusedAddress> {
        if self.allow.allows(addr) {
            return Ok(());
        }
        match classify(addr.ip()) {
            Some(why) => Err(RefusedAddress { addr, why }),
            None => Ok(()),
        }
    }

    /// The addresses of `resolved` that may be connected to, in order, and the first one
    /// refused (if any). A caller connects only to the first list: a name that resolves
    /// to both a public and an internal address is pinned to the public one.
    pub fn filter(
        &self,
        resolved: impl IntoIterator<Item = SocketAddr>,
    ) -> (Vec<SocketAddr>, Option<RefusedAddress>) {
        let mut allowed = Vec::new();
        let mut refused = None;
        for addr in resolved {
            match self.check(addr) {
                Ok(()) => allowed.push(addr),
                Err(r) => {
                    refused.get_or_insert(r);
                }
            }
        }
        (allowed, refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_with_their_reason() {
        let cases = [
            ("169.254.169.254", Forbidden::LinkLocal),
            ("::ffff:169.254.169.254", Forbidden::LinkLocal),
            ("::ffff:10.0.0.1", Forbidden::Private),
            ("10.0.0.1", Forbidden::Private),
            ("172.16.5.4", Forbidden::Private),
            ("192.168.1.1", Forbidden::Private),
            ("100.100.100.200", Forbidden::SharedAddressSpace),
            ("127.0.0.1", Forbidden::Loopback),
            ("127.0.0.2", Forbidden::Loopback),
            ("::1", Forbidden::Loopback),
            ("0.0.0.0", Forbidden::Unspecified),
            ("::", Forbidden::Unspecified),
            ("0.1.2.3", Forbidden::ThisNetwork),
            ("fe80::1", Forbidden::LinkLocal),
            ("fc00::1", Forbidden::UniqueLocal),
            ("fd00:ec2::254", Forbidden::UniqueLocal),
            ("224.0.0.1", Forbidden::Multicast),
            ("239.255.255.250", Forbidden::Multicast),
            ("ff02::1", Forbidden::Multicast),
            ("255.255.255.255", Forbidden::Broadcast),
            ("240.0.0.1", Forbidden::Reserved),
            ("192.0.2.1", Forbidden::Documentation),
            ("203.0.113.9", Forbidden::Documentation),
            ("2001:db8::1", Forbidden::Documentation),
            ("198.18.0.1", Forbidden::Benchmarking),
            ("192.0.0.8", Forbidden::ProtocolAssignments),
            ("2001::1", Forbidden::ProtocolAssignments),
            ("64:ff9b::a9fe:a9fe", Forbidden::LinkLocal),
            ("64:ff9b::7f00:1", Forbidden::Loopback),
            ("2002:a9fe:a9fe::1", Forbidden::LinkLocal),
            ("2002:c0a8:0101::", Forbidden::Private),
            ("::169.254.169.254", Forbidden::Reserved),
            ("::a00:1", Forbidden::Reserved),
            ("fec0::1", Forbidden::Reserved),
            ("64:ff9b:1::1", Forbidden::Reserved),
            ("100::1", Forbidden::Reserved),
        ];
        for (addr, why) in cases {
            assert_eq!(classify(ip(addr)), Some(why), "{addr}");
            let policy = OutboundPolicy::default();
            let target = SocketAddr::new(ip(addr), 80);
            assert_eq!(
                policy.check(target),
                Err(RefusedAddress { addr: target, why }),
                "{addr}"
            );
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(classify(ip(addr)), None, "{addr}");
            assert_eq!(
                OutboundPolicy::default().check(SocketAddr::new(ip(addr), 443)),
                Ok(())
            );
        }
    }

    #[test]
    fn the_allowlist_admits_blocks_and_exact_sockets_only() {
        let list =
            Allowlist::parse(" 127.0.0.1/32, ::1/128 10.1.0.0/16,127.0.0.3:9000,[fd00::1]:80 ")
                .unwrap();
        let policy = OutboundPolicy::new(list.clone());
        assert_eq!(policy.check(sock("127.0.0.1:1")), Ok(()));
        assert_eq!(policy.check(sock("[::ffff:127.0.0.1]:5")), Ok(()));
        assert_eq!(policy.check(sock("[::1]:443")), Ok(()));
        assert_eq!(policy.check(sock("10.1.200.3:80")), Ok(()));
        assert_eq!(policy.check(sock("127.0.0.3:9000")), Ok(()));
        assert_eq!(policy.check(sock("[fd00::1]:80")), Ok(()));
        for refused in [
            "127.0.0.2:80",
            "127.0.0.3:9001",
            "10.2.0.1:80",
            "[fd00::1]:81",
            "169.254.169.254:80",
        ] {
            assert!(policy.check(sock(refused)).is_err(), "{refused}");
        }
        assert_eq!(
            list.to_string(),
            "127.0.0.1/32,::1/128,10.1.0.0/16,127.0.0.3:9000,[fd00::1]:80"
        );
        assert_eq!(Allowlist::parse("").unwrap(), Allowlist::default());
        assert_eq!(
            Allowlist::parse("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn the_simulator_gets_its_own_socket_not_its_host() {
        let policy = OutboundPolicy::new(Allowlist::default().with_socket(sock("127.0.0.1:4100")));
        assert_eq!(policy.check(sock("127.0.0.1:4100")), Ok(()));
        assert!(policy.check(sock("127.0.0.1:4101")).is_err());
        assert!(policy.check(sock("127.0.0.2:4100")).is_err());
    }

    #[test]
    fn bad_allowlist_entries_are_named() {
        for (list, bad, name) in [
            ("127.0.0.1/32,localhost", "localhost", true),
            ("sim.internal:8080", "sim.internal:8080", true),
            ("10.0.0.0/33", "10.0.0.0/33", false),
            ("1.2.3", "1.2.3", false),
            ("127.0.0.1:99999", "127.0.0.1:99999", false),
        ] {
            let err = Allowlist::parse(list).unwrap_err();
            assert_eq!(err.entry, bad);
            assert_eq!(err.reason.contains("host name"), name, "{err}");
        }
    }

    #[test]
    fn filtering_keeps_the_allowed_addresses_and_names_a_refused_one() {
        let policy = OutboundPolicy::default();
        let (allowed, refused) = policy.filter([
            sock("169.254.169.254:80"),
            sock("93.184.216.34:80"),
            sock("10.0.0.1:80"),
        ]);
        assert_eq!(allowed, vec![sock("93.184.216.34:80")]);
        assert_eq!(
            refused,
            Some(RefusedAddress {
                addr: sock("169.254.169.254:80"),
                why: Forbidden::LinkLocal
            })
        );
    }

    proptest! {
        /// Every IPv4 address is judged the same in its IPv4-mapped and NAT64 forms.
        #[test]
        fn ipv4_forms_agree(bits in any::<u32>()) {
            let v4 = Ipv4Addr::from(bits);
            let expect = classify(IpAddr::V4(v4));
            prop_assert_eq!(classify(IpAddr::V6(v4.to_ipv6_mapped())), expect);
            let nat64 = Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(bits));
            prop_assert_eq!(classify(IpAddr::V6(nat64)), expect);
        }

        /// An address outside every special range passes; one inside any is refused.
        #[test]
        fn ipv4_refusals_match_the_registry(bits in any::<u32>()) {
            let v4 = Ipv4Addr::from(bits);
            let [a, b, c, _] = v4.octets();
            let special = a == 0 || a == 10 || a == 127 || a >= 224
                || (a == 100 && (64..128).contains(&b))
                || (a == 169 && b == 254)
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168)
                || (a == 192 && b == 0 && (c == 0 || c == 2))
                || (a == 192 && b == 88 && c == 99)
                || (a == 198 && (18..20).contains(&b))
                || (a == 198 && b == 51 && c == 100)
                || (a == 203 && b == 0 && c == 113);
            prop_assert_eq!(classify(IpAddr::V4(v4)).is_some(), special, "{}", v4);
        }

        /// Global unicast IPv6 outside the named blocks passes; nothing outside 2000::/3
        /// passes except the IPv4-carrying forms of public addresses.
        #[test]
        fn ipv6_refusals_match_the_registry(bits in any::<u128>()) {
            let v6 = Ipv6Addr::from(bits);
            let top = (bits >> 112) as u16;
            let second = (bits >> 96) as u16;
            let carries_v4 = v6.to_ipv4_mapped().is_some()
                || V6_NAT64.contains(&v6) || top == 0x2002;
            if !carries_v4 {
                let global = (0x2000..0x4000).contains(&top)
                    && !(top == 0x2001 && second < 0x200)
                    && !(top == 0x2001 && second == 0x0db8)
                    && !(top == 0x3fff && second < 0x1000);
                prop_assert_eq!(classify(IpAddr::V6(v6)).is_none(), global, "{}", v6);
            }
        }

        /// A public address passes whatever the port; an allow-list entry changes nothing
        /// for the addresses it does not cover.
        #[test]
        fn allowlists_only_widen(bits in any::<u32>(), port in any::<u16>()) {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(bits)), port);
            let open = OutboundPolicy::default().check(addr);
            let widened = OutboundPolicy::new(Allowlist::parse("127.0.0.1/32,::1/128").unwrap())
                .check(addr);
            if bits == u32::from(Ipv4Addr::LOCALHOST) {
                prop_assert_eq!(widened, Ok(()));
            } else {
                prop_assert_eq!(open, widened);
            }
        }
    }
}
