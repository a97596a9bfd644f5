//! The PROXY protocol header (HAProxy's, versions 1 and 2) a load balancer
//! puts before the client's own bytes, naming the client it accepted.
//!
//! Behind a TCP load balancer every connection comes from the balancer's
//! address: the audit trail would record it as every session's origin, and
//! an address lockout would lock everyone out at once. A balancer that
//! speaks the PROXY protocol sends, before anything of the client's, one
//! header with the client's address. sluice reads it only from the
//! addresses `[listen] proxy_protocol_from` lists (anyone else could name
//! any origin they liked), and from them it requires it.
//!
//! Version 1 is a text line (`PROXY TCP4 <src> <dst> <sport> <dport>\r\n`,
//! at most 107 bytes); version 2 a binary block after a 12-byte signature,
//! with the addresses and then TLVs (which sluice skips). A header that says
//! the connection is the balancer's own (v2 `LOCAL`, a health check) or
//! names no address sluice can use (v1 `UNKNOWN`, v2 `UNSPEC` or a Unix
//! socket) leaves the connection's own address as the origin.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The signature a version 2 header starts with.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// What a version 1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest version 1 line, `\r\n` included (the specification's limit).
const V1_MAX: usize = 107;
/// A version 2 header's fixed part: signature, version and command,
/// family and transport, length.
const V2_FIXED: usize = 16;
/// The most bytes of addresses and TLVs a version 2 header may declare.
/// Its length field allows 64 KiB, held per connection until the header is
/// whole; balancers send a few hundred bytes at most (addresses, a
/// connection id, TLS details).
const V2_MAX_BLOCK: usize = 4096;

/// A header read in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The client's address as the balancer saw it; `None` when the header
    /// names none to use (the connection's own address stands).
    pub source: Option<SocketAddr>,
    /// How many bytes the header took: the client's bytes start after them.
    pub len: usize,
}

/// Why a header could not be read. Every one ends the connection: what
/// follows a header that cannot be read cannot be trusted to be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the connection did not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// Whether `buf` starts like a header of either version (as far as it
/// goes): a connection that does, from an address not trusted to send one,
/// is told why it is refused.
pub fn looks_like_header(buf: &[u8]) -> bool {
    let starts = |prefix: &[u8]| {
        let n = buf.len().min(prefix.len());
        n > 0 && buf[..n] == prefix[..n]
    };
    starts(V1_PREFIX) || starts(&V2_SIGNATURE)
}

/// Reads the header at the start of `buf`: `Ok(None)` while more bytes are
/// needed to tell.
pub fn parse(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let prefix_of = |prefix: &[u8]| buf.len() < prefix.len() && prefix.starts_with(buf);
    if buf.starts_with(&V2_SIGNATURE) {
        parse_v2(buf)
    } else if buf.starts_with(V1_PREFIX) {
        parse_v1(buf)
    } else if prefix_of(&V2_SIGNATURE) || prefix_of(V1_PREFIX) {
        Ok(None)
    } else {
        Err(HeaderError::Missing)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|pair| pair == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(HeaderError::Malformed(
                "a version 1 line longer than 107 bytes",
            ))
        } else {
            Ok(None)
        };
    };
    let len = end + 2;
    let line = &buf[V1_PREFIX.len()..end];
    // The balancer could not tell: whatever follows is to be ignored, in
    // whatever bytes it comes.
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        return Ok(Some(Header { source: None, len }));
    }
    let line = std::str::from_utf8(line)
        .map_err(|_| HeaderError::Malformed("a version 1 line that is not ASCII"))?;
    let mut fields = line.split(' ');
    let source = match fields.next() {
        Some(protocol @ ("TCP4" | "TCP6")) => {
            let fields: Vec<&str> = fields.collect();
            let [source, destination, source_port, destination_port] = fields[..] else {
                return Err(HeaderError::Malformed(
                    "a version 1 line without two addresses and two ports",
                ));
            };
            let address = |text: &str| -> Result<IpAddr, HeaderError> {
                let parsed = if protocol == "TCP4" {
                    text.parse::<Ipv4Addr>().map(IpAddr::V4)
                } else {
                    text.parse::<Ipv6Addr>().map(IpAddr::V6)
                };
                parsed.map_err(|_| HeaderError::Malformed("a version 1 address"))
            };
            let port = |text: &str| -> Result<u16, HeaderError> {
                // Decimal digits only: `parse` would also take a sign.
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(HeaderError::Malformed("a version 1 port"));
                }
                text.parse()
                    .map_err(|_| HeaderError::Malformed("a version 1 port"))
            };
            let source = SocketAddr::new(address(source)?.to_canonical(), port(source_port)?);
            address(destination)?;
            port(destination_port)?;
            Some(source)
        }
        _ => return Err(HeaderError::Malformed("a version 1 protocol")),
    };
    Ok(Some(Header { source, len }))
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    if buf.len() < V2_FIXED {
        return Ok(None);
    }
    let version_command = buf[12];
    let family_transport = buf[13];
    let declared = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if version_command >> 4 != 2 {
        return Err(HeaderError::Malformed("a version other than 2"));
    }
    let local = match version_command & 0x0f {
        0x0 => true,
        0x1 => false,
        _ => {
            return Err(HeaderError::Malformed(
                "a command other than LOCAL or PROXY",
            ));
        }
    };
    if declared > V2_MAX_BLOCK {
        return Err(HeaderError::Malformed(
            "a version 2 header longer than sluice accepts (4096 bytes after its first 16)",
        ));
    }
    let len = V2_FIXED + declared;
    if buf.len() < len {
        return Ok(None);
    }
    // A LOCAL header is the balancer's own connection (its health check):
    // what follows the length, family included, is to be ignored.
    if local {
        return Ok(Some(Header { source: None, len }));
    }
    let block = &buf[V2_FIXED..len];
    let (family, transport) = (family_transport >> 4, family_transport & 0x0f);
    if transport > 2 || family > 3 {
        return Err(HeaderError::Malformed(
            "an unknown address family or transport",
        ));
    }
    // The addresses each family takes; TLVs may follow them in the block.
    let needed = match family {
        0x1 => 12,
        0x2 => 36,
        0x3 => 216,
        _ => 0,
    };
    if block.len() < needed {
        return Err(HeaderError::Malformed(
            "an address block shorter than its family's",
        ));
    }
    let source = match family {
        0x1 | 0x2 if transport != 0x1 => {
            return Err(HeaderError::Malformed(
                "an IP address with a transport other than STREAM on a TCP connection",
            ));
        }
        0x1 => {
            let ip = Ipv4Addr::from([block[0], block[1], block[2], block[3]]);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([block[8], block[9]]),
            ))
        }
        0x2 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&block[..16]);
            let ip = Ipv6Addr::from(octets).to_canonical();
            Some(SocketAddr::new(
                ip,
                u16::from_be_bytes([block[32], block[33]]),
            ))
        }
        // UNSPEC, or a Unix socket: no address an IP origin can hold.
        _ => None,
    };
    Ok(Some(Header { source, len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family_transport: u8, block: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(family_transport);
        header.extend_from_slice(&(block.len() as u16).to_be_bytes());
        header.extend_from_slice(block);
        header
    }

    fn inet_block(source: [u8; 4], port: u16) -> Vec<u8> {
        let mut block = source.to_vec();
        block.extend_from_slice(&[10, 0, 0, 1]);
        block.extend_from_slice(&port.to_be_bytes());
        block.extend_from_slice(&6432u16.to_be_bytes());
        block
    }

    #[test]
    fn version_1_names_the_client() {
        let mut stream = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 6432\r\n".to_vec();
        let len = stream.len();
        stream.extend_from_slice(b"\0\0\0\x08startup");
        let header = parse(&stream).unwrap().unwrap();
        assert_eq!(header.source, Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(header.len, len);

        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 443 6432\r\n";
        let header = parse(line).unwrap().unwrap();
        assert_eq!(header.source, Some("[2001:db8::7]:443".parse().unwrap()));

        let header = parse(b"PROXY UNKNOWN whatever follows\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(
            header,
            Header {
                source: None,
                len: 32
            }
        );
    }

    #[test]
    fn version_2_names_the_client_and_skips_tlvs() {
        let mut block = inet_block([198, 51, 100, 9], 40000);
        // A TLV (type 0x04, NOOP) after the addresses.
        block.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb]);
        let mut stream = v2(0x1, 0x11, &block);
        let len = stream.len();
        stream.extend_from_slice(b"\0\0\0\x08");
        let header = parse(&stream).unwrap().unwrap();
        assert_eq!(header.source, Some("198.51.100.9:40000".parse().unwrap()));
        assert_eq!(header.len, len);

        let mut block = vec![0x20, 0x01, 0x0d, 0xb8];
        block.extend_from_slice(&[0; 11]);
        block.push(0x07);
        block.extend_from_slice(&[0; 16]);
        block.extend_from_slice(&5555u16.to_be_bytes());
        block.extend_from_slice(&6432u16.to_be_bytes());
        let header = parse(&v2(0x1, 0x21, &block)).unwrap().unwrap();
        assert_eq!(header.source, Some("[2001:db8::7]:5555".parse().unwrap()));
    }

    #[test]
    fn a_local_or_addressless_header_leaves_the_connection_s_own_address() {
        // LOCAL: the balancer's health check, addresses ignored.
        let local = v2(0x0, 0x11, &inet_block([1, 2, 3, 4], 1));
        assert_eq!(parse(&local).unwrap().unwrap().source, None);
        let unspec = v2(0x1, 0x00, &[]);
        assert_eq!(
            parse(&unspec).unwrap().unwrap(),
            Header {
                source: None,
                len: 16
            }
        );
        let unix = v2(0x1, 0x31, &[0; 216]);
        assert_eq!(parse(&unix).unwrap().unwrap().source, None);
        // LOCAL ignores what follows the length, even a family it does
        // not know or a block too short for it.
        let odd_local = v2(0x0, 0xff, &[1, 2, 3]);
        assert_eq!(
            parse(&odd_local).unwrap().unwrap(),
            Header {
                source: None,
                len: 19
            }
        );
        // UNKNOWN ignores the rest of its line, whatever the bytes.
        let unknown = b"PROXY UNKNOWN \xff\xfe garbage\r\n";
        assert_eq!(
            parse(unknown).unwrap().unwrap(),
            Header {
                source: None,
                len: unknown.len()
            }
        );
    }

    #[test]
    fn an_ipv4_client_in_ipv6_form_is_its_ipv4_address() {
        let line = b"PROXY TCP6 ::ffff:203.0.113.7 ::ffff:10.0.0.1 5000 6432\r\n";
        assert_eq!(
            parse(line).unwrap().unwrap().source,
            Some("203.0.113.7:5000".parse().unwrap())
        );
        let mut block = vec![0u8; 10];
        block.extend_from_slice(&[0xff, 0xff, 198, 51, 100, 9]);
        block.extend_from_slice(&[0; 16]);
        block.extend_from_slice(&5555u16.to_be_bytes());
        block.extend_from_slice(&6432u16.to_be_bytes());
        let header = parse(&v2(0x1, 0x21, &block)).unwrap().unwrap();
        assert_eq!(header.source, Some("198.51.100.9:5555".parse().unwrap()));
    }

    #[test]
    fn lengths_at_their_limits() {
        // A version 1 line of exactly 107 bytes is read; one byte more is not.
        let line = |len: usize| {
            let mut line = b"PROXY UNKNOWN ".to_vec();
            line.resize(len - 2, b'x');
            line.extend_from_slice(b"\r\n");
            line
        };
        assert_eq!(parse(&line(107)).unwrap().unwrap().len, 107);
        assert!(matches!(parse(&line(108)), Err(HeaderError::Malformed(_))));
        // A version 2 header may carry 4096 bytes after its first 16, not more.
        let mut block = inet_block([1, 2, 3, 4], 5);
        block.resize(4096, 0);
        assert_eq!(
            parse(&v2(0x1, 0x11, &block)).unwrap().unwrap().len,
            16 + 4096
        );
        let mut announced = v2(0x1, 0x11, &block);
        announced[14..16].copy_from_slice(&4097u16.to_be_bytes());
        // Refused as soon as the length is read, not once 4 KiB arrived.
        assert!(matches!(
            parse(&announced[..16]),
            Err(HeaderError::Malformed(_))
        ));
    }

    #[test]
    fn a_header_in_pieces_asks_for_more() {
        let whole = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 6432\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]), Ok(None), "v1 cut at {cut}");
        }
        let whole = v2(0x1, 0x11, &inet_block([1, 2, 3, 4], 5));
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]), Ok(None), "v2 cut at {cut}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        // A PostgreSQL startup packet where a header must be.
        assert_eq!(
            parse(b"\0\0\0\x08\x04\xd2\x16\x2f"),
            Err(HeaderError::Missing)
        );
        assert_eq!(parse(b"PROXZ"), Err(HeaderError::Missing));
        let malformed = [
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51234\r\n".to_vec(),
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n".to_vec(),
            b"PROXY TCP6 203.0.113.7 2001:db8::1 1 2\r\n".to_vec(),
            b"PROXY TCP4 203.0.113.7 10.0.0.1 +1 2\r\n".to_vec(),
            b"PROXY TCP4 203.0.113.7 10.0.0.1 65536 2\r\n".to_vec(),
            b"PROXY TCP4 203.0.113.7 10.0.0.1 1 2 3\r\n".to_vec(),
            b"PROXY UDP4 203.0.113.7 10.0.0.1 1 2\r\n".to_vec(),
            b"PROXY TCP4 203.0.113.7  10.0.0.1 1 2\r\n".to_vec(),
            [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat(),
            b"PROXY TCP4 \xff.0.0.1 10.0.0.1 1 2\r\n".to_vec(),
            // Version 1 of the binary form, a command 2, a datagram.
            {
                let mut header = v2(0x1, 0x11, &inet_block([1, 2, 3, 4], 5));
                header[12] = 0x11;
                header
            },
            v2(0x2, 0x11, &inet_block([1, 2, 3, 4], 5)),
            v2(0x1, 0x12, &inet_block([1, 2, 3, 4], 5)),
            v2(0x1, 0x41, &inet_block([1, 2, 3, 4], 5)),
            // Addresses cut short of their family's length.
            v2(0x1, 0x11, &[1, 2, 3, 4, 5, 6, 7]),
            v2(0x1, 0x21, &inet_block([1, 2, 3, 4], 5)),
        ];
        for header in malformed {
            assert!(
                matches!(parse(&header), Err(HeaderError::Malformed(_))),
                "{:?} was not refused",
                String::from_utf8_lossy(&header)
            );
        }
    }

    /// Whatever the bytes, the parser answers without panicking, and a
    /// header it reads lies within them: hostile input of every shape,
    /// from valid headers cut and corrupted at random places.
    #[test]
    fn hostile_bytes_never_panic_or_overrun() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_9a0c);
        let seeds = [
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 6432\r\nrest".to_vec(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 443 6432\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2(0x1, 0x11, &inet_block([1, 2, 3, 4], 5)),
            v2(0x1, 0x21, &[7; 36]),
            v2(0x1, 0x31, &[0; 216]),
            v2(0x0, 0x00, &[]),
        ];
        for _ in 0..200_000 {
            let mut bytes = seeds[rng.random_range(0..seeds.len())].clone();
            for _ in 0..rng.random_range(0..4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            if rng.random_bool(0.3) {
                // A length field anything at all.
                if bytes.len() >= 16 && bytes.starts_with(&V2_SIGNATURE) {
                    bytes[14] = rng.random();
                    bytes[15] = rng.random();
                }
            }
            let cut = rng.random_range(0..=bytes.len());
            bytes.truncate(cut);
            if let Ok(Some(header)) = parse(&bytes) {
                assert!(header.len <= bytes.len(), "{bytes:?}");
                assert!(header.len >= 15, "{bytes:?}");
            }
        }
    }

    #[test]
    fn starts_of_headers_are_recognised() {
        assert!(looks_like_header(b"PROXY TCP4 1.2.3.4"));
        assert!(looks_like_header(&V2_SIGNATURE[..8]));
        assert!(!looks_like_header(b"\0\0\0\x08\x04\xd2\x16\x2f"));
        assert!(!looks_like_header(b""));
    }
}
