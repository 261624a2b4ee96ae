//! CIDRs as users write them and as the trie stores them: parsing to canonical form (host
//! bits cleared), allow-list files, and the family-tagged trie key.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::lpm_trie::Key;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use mcfilter_common::{FAMILY_V4, FAMILY_V6, IpKey};

/// Text that is not a CIDR.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{text}' is not an IPv4 or IPv6 CIDR (examples: 198.18.0.0/15, 2001:db8::/32, 198.18.1.10)"
)]
pub struct CidrError {
    /// The text as given.
    pub text: String,
}

/// An allow-list file's first bad line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {err}")]
pub struct ListError {
    /// 1-based.
    pub line: usize,
    /// What is wrong with it.
    pub err: CidrError,
}

/// Parses `198.18.0.0/15`, `2001:db8::/32` or a bare address (a /32 or /128). Host bits are
/// cleared, so `198.18.1.10/24` becomes `198.18.1.0/24`.
pub fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    let text = text.trim();
    let parsed = if text.contains('/') {
        text.parse::<IpNet>().ok()
    } else {
        text.parse::<IpAddr>().ok().map(IpNet::from)
    };
    parsed.map(|net| net.trunc()).ok_or_else(|| CidrError {
        text: text.to_owned(),
    })
}

/// Parses an allow-list file: one CIDR a line, `#` starts a comment, blank lines are ignored.
/// The first bad line fails the whole file (`line N: ...`).
pub fn parse_list(text: &str) -> Result<BTreeSet<IpNet>, ListError> {
    let mut nets = BTreeSet::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        nets.insert(parse_cidr(line).map_err(|err| ListError {
            line: index + 1,
            err,
        })?);
    }
    Ok(nets)
}

/// The trie key of `net`: family byte, then the prefix.
pub fn to_key(net: &IpNet) -> Key<IpKey> {
    let prefix = u32::from(net.prefix_len()) + IpKey::FAMILY_BITS;
    let data = match net {
        IpNet::V4(v4) => IpKey::v4(v4.network().octets()),
        IpNet::V6(v6) => IpKey::v6(v6.network().octets()),
    };
    Key::new(prefix, data)
}

/// The CIDR a trie key stands for (`None` for a key no version of mcfilter writes).
pub fn from_key(key: &Key<IpKey>) -> Option<IpNet> {
    let data = key.data();
    let prefix = u8::try_from(key.prefix_len().checked_sub(IpKey::FAMILY_BITS)?).ok()?;
    let bytes = data.addr_bytes();
    match u8::try_from(data.family).ok()? {
        FAMILY_V4 => {
            let [a, b, c, d, ..] = bytes;
            Ipv4Net::new(Ipv4Addr::new(a, b, c, d), prefix)
                .ok()
                .map(IpNet::V4)
        }
        FAMILY_V6 => Ipv6Net::new(Ipv6Addr::from(bytes), prefix)
            .ok()
            .map(IpNet::V6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_are_canonical() {
        assert_eq!(parse_cidr("198.18.1.10/24").unwrap(), net("198.18.1.0/24"));
        assert_eq!(parse_cidr("198.18.1.10").unwrap(), net("198.18.1.10/32"));
        assert_eq!(parse_cidr(" 2001:db8::1 ").unwrap(), net("2001:db8::1/128"));
        assert_eq!(parse_cidr("2001:db8::1/32").unwrap(), net("2001:db8::/32"));
    }

    #[test]
    fn bad_cidrs_say_what_is_expected() {
        for bad in [
            "",
            "198.18.1.0/33",
            "2001:db8::/129",
            "eth0",
            "1.2.3",
            "1.2.3.4/",
        ] {
            let err = parse_cidr(bad).unwrap_err().to_string();
            assert!(err.contains("examples"), "{bad}: {err}");
        }
    }

    #[test]
    fn list_files_skip_comments_and_name_the_bad_line() {
        let text = "# clients\n198.18.1.10\n\n2001:db8::/64  # lab\n198.18.1.10/32\n";
        let nets = parse_list(text).unwrap();
        assert_eq!(
            nets.into_iter().collect::<Vec<_>>(),
            vec![net("198.18.1.10/32"), net("2001:db8::/64")]
        );
        let err = parse_list("198.18.1.10\nnot-a-cidr\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.to_string().starts_with("line 2: 'not-a-cidr'"), "{err}");
    }

    #[test]
    fn keys_round_trip_and_keep_families_apart() {
        for s in [
            "0.0.0.0/0",
            "198.18.0.0/15",
            "198.18.1.10/32",
            "::/0",
            "2001:db8::/32",
        ] {
            let n = net(s);
            assert_eq!(from_key(&to_key(&n)), Some(n), "{s}");
        }
        let v4_all = to_key(&net("0.0.0.0/0"));
        let v6_all = to_key(&net("::/0"));
        assert_eq!(v4_all.prefix_len(), IpKey::FAMILY_BITS);
        assert_ne!(v4_all.data().family, v6_all.data().family);
    }

    #[test]
    fn an_address_is_keyed_as_the_program_keys_a_source() {
        let key = to_key(&net("198.18.1.10/32"));
        assert_eq!(key.data(), IpKey::v4([198, 18, 1, 10]));
    }
}
