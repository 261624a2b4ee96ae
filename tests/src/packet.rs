//! Frames for the tests, layer by layer. Headers are written by etherparse (a second, independent
//! implementation of the formats); extension headers, VLAN stacks and fragments that etherparse
//! cannot express are composed from bytes here.

use std::net::IpAddr;

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, IpFragOffset, IpNumber, Ipv4Header,
    Ipv6Header, TcpHeader, UdpHeader,
};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
pub const ETH_P_LLDP: u16 = 0x88CC;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_MOBILITY: u8 = 135;
pub const IPPROTO_NONE: u8 = 59;
pub const IPPROTO_DSTOPTS: u8 = 60;

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// Ethernet II, with VLAN tags (outermost first) given as TPIDs, around `payload`. The tags
/// carry VLAN ids 100, 101, ...
pub fn eth(ether_type: u16, vlan_tpids: &[u16], payload: &[u8]) -> Vec<u8> {
    let tags: Vec<(u16, u16)> = vlan_tpids
        .iter()
        .enumerate()
        .map(|(i, &tpid)| (tpid, 100 + i as u16))
        .collect();
    eth_tagged(ether_type, &tags, payload)
}

/// Ethernet II with VLAN tags given as (TPID, TCI) pairs, outermost first. TCI 0 is a
/// priority tag (VLAN id 0), which the stack delivers as if untagged.
pub fn eth_tagged(ether_type: u16, tags: &[(u16, u16)], payload: &[u8]) -> Vec<u8> {
    let outer = tags.first().map_or(ether_type, |&(tpid, _)| tpid);
    let mut frame = Ethernet2Header {
        source: SRC_MAC,
        destination: DST_MAC,
        ether_type: EtherType(outer),
    }
    .to_bytes()
    .to_vec();
    for (i, &(_, tci)) in tags.iter().enumerate() {
        let inner = tags.get(i + 1).map_or(ether_type, |&(tpid, _)| tpid);
        frame.extend_from_slice(&tci.to_be_bytes());
        frame.extend_from_slice(&inner.to_be_bytes());
    }
    frame.extend_from_slice(payload);
    frame
}

/// IPv4 fragment position and datagram id.
#[derive(Clone, Copy, Debug)]
pub struct Frag {
    /// Offset in 8-byte units.
    pub offset: u16,
    pub more: bool,
    pub id: u16,
}

pub const NOT_FRAGMENTED: Frag = Frag {
    offset: 0,
    more: false,
    id: 0,
};

impl Frag {
    /// The first fragment of datagram `id`.
    pub const fn first(id: u16) -> Self {
        Frag {
            offset: 0,
            more: true,
            id,
        }
    }

    /// A fragment at `offset` (8-byte units, above 0) of datagram `id`.
    pub const fn later(id: u16, offset: u16, more: bool) -> Self {
        Frag { offset, more, id }
    }
}

/// IPv4 with `options` (a multiple of 4 bytes) around `payload`.
pub fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    options: &[u8],
    frag: Frag,
    payload: &[u8],
) -> Vec<u8> {
    let mut header =
        Ipv4Header::new(payload.len() as u16, 64, IpNumber(proto), src, dst).expect("payload fits");
    header.options = options
        .try_into()
        .expect("options are a multiple of 4, at most 40 bytes");
    header.set_payload_len(payload.len()).expect("payload fits");
    header.fragment_offset = IpFragOffset::try_new(frag.offset).expect("13-bit offset");
    header.more_fragments = frag.more;
    header.identification = frag.id;
    header.header_checksum = header.calc_header_checksum();
    let mut packet = header.to_bytes().to_vec();
    packet.extend_from_slice(payload);
    packet
}

/// An IPv6 extension header to put in a chain.
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    HopByHop,
    Routing,
    DestOpts,
    /// Fragment header at `offset` (8-byte units) of datagram `id`.
    Fragment {
        offset: u16,
        more: bool,
        id: u32,
    },
    /// Authentication header with `words` 4-byte words after the fixed 12 bytes.
    Auth {
        words: u8,
    },
}

impl Ext {
    fn proto(self) -> u8 {
        match self {
            Ext::HopByHop => IPPROTO_HOPOPTS,
            Ext::Routing => IPPROTO_ROUTING,
            Ext::DestOpts => IPPROTO_DSTOPTS,
            Ext::Fragment { .. } => IPPROTO_FRAGMENT,
            Ext::Auth { .. } => IPPROTO_AH,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            // 8 bytes: next header, length 0, then a PadN option filling the rest.
            Ext::HopByHop | Ext::DestOpts => vec![next, 0, 1, 4, 0, 0, 0, 0],
            // 8 bytes: type 4 (segment routing), no segments left.
            Ext::Routing => vec![next, 0, 4, 0, 0, 0, 0, 0],
            Ext::Fragment { offset, more, id } => {
                let field = (offset << 3) | u16::from(more);
                let mut b = vec![next, 0];
                b.extend(field.to_be_bytes());
                b.extend(id.to_be_bytes());
                b
            }
            Ext::Auth { words } => {
                let mut b = vec![next, 1 + words, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 1];
                b.resize(12 + 4 * usize::from(words), 0);
                b
            }
        }
    }
}

/// IPv6 with an extension-header chain in front of `payload` (protocol `proto`).
pub fn ipv6(src: [u8; 16], dst: [u8; 16], exts: &[Ext], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, ext) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(proto, |e| e.proto());
        chain.extend(ext.bytes(next));
    }
    let header = Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: (chain.len() + payload.len()) as u16,
        next_header: IpNumber(exts.first().map_or(proto, |e| e.proto())),
        hop_limit: 64,
        source: src,
        destination: dst,
    };
    let mut packet = header.to_bytes().to_vec();
    packet.extend(chain);
    packet.extend_from_slice(payload);
    packet
}

/// A UDP datagram (checksum left zero: the filter does not read it).
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = UdpHeader {
        source_port: sport,
        destination_port: dport,
        length: (UdpHeader::LEN + payload.len()) as u16,
        checksum: 0,
    }
    .to_bytes()
    .to_vec();
    datagram.extend_from_slice(payload);
    datagram
}

/// A TCP SYN segment.
pub fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut header = TcpHeader::new(sport, dport, 1, 64240);
    header.syn = true;
    header.to_bytes().to_vec()
}

/// An ICMP echo request (type 8) or ICMPv6 neighbour solicitation (type 135): type, code,
/// checksum and a body.
pub fn icmp(icmp_type: u8, body: &[u8]) -> Vec<u8> {
    let mut message = vec![icmp_type, 0, 0, 0];
    message.extend_from_slice(body);
    message
}

/// An ARP request for `target` from `sender`.
pub fn arp(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let packet = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: SRC_MAC,
        sender_ipv4: sender,
        target_mac: [0; 6],
        target_ipv4: target,
    };
    eth(ETH_P_ARP, &[], &packet.to_arp_packet().to_bytes())
}

/// The memcached UDP frame header (request id, sequence, datagram count, reserved) and `command`.
pub fn memcached_udp_request(request_id: u16, command: &[u8]) -> Vec<u8> {
    let mut request = Vec::with_capacity(8 + command.len());
    request.extend_from_slice(&request_id.to_be_bytes());
    request.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
    request.extend_from_slice(command);
    request
}

/// A UDP datagram with a correct checksum (IPv6 requires one for delivery).
pub fn udp_checksummed(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut header = UdpHeader {
        source_port: sport,
        destination_port: dport,
        length: (UdpHeader::LEN + payload.len()) as u16,
        checksum: 0,
    };
    header.checksum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            header.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            header.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload)
        }
        _ => panic!("mixed address families"),
    }
    .expect("datagram fits");
    let mut datagram = header.to_bytes().to_vec();
    datagram.extend_from_slice(payload);
    datagram
}

/// The frames of one IP datagram carrying `l4` (protocol `proto`), cut into fragments of `chunk`
/// bytes of payload (a multiple of 8), first fragment first.
pub fn fragments(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u16,
    l4: &[u8],
    chunk: usize,
) -> Vec<Vec<u8>> {
    assert_eq!(chunk % 8, 0, "fragment payloads are multiples of 8 bytes");
    let count = l4.len().div_ceil(chunk);
    (0..count)
        .map(|i| {
            let piece = &l4[i * chunk..l4.len().min((i + 1) * chunk)];
            let offset = (i * chunk / 8) as u16;
            let more = i + 1 < count;
            match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    let frag = Frag { offset, more, id };
                    eth(
                        ETH_P_IP,
                        &[],
                        &ipv4(s.octets(), d.octets(), proto, &[], frag, piece),
                    )
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    let ext = [Ext::Fragment {
                        offset,
                        more,
                        id: u32::from(id),
                    }];
                    eth(
                        ETH_P_IPV6,
                        &[],
                        &ipv6(s.octets(), d.octets(), &ext, proto, piece),
                    )
                }
                _ => panic!("mixed address families"),
            }
        })
        .collect()
}

/// A memcached UDP request from a forged source: the first move of a reflection attack.
pub fn forged_memcached_request(
    src: std::net::Ipv4Addr,
    src_port: u16,
    server: std::net::Ipv4Addr,
    request_id: u16,
    command: &[u8],
) -> Vec<u8> {
    let l4 = udp(src_port, 11211, &memcached_udp_request(request_id, command));
    eth(
        ETH_P_IP,
        &[],
        &ipv4(
            src.octets(),
            server.octets(),
            IPPROTO_UDP,
            &[],
            NOT_FRAGMENTED,
            &l4,
        ),
    )
}
