//! The sandbox's DNS messages: a query's question, and the answers sbox
//! gives (an address for a listed name, NXDOMAIN for the others).

use std::net::Ipv4Addr;

/// A DNS query's question, with where the answer's parts begin.
pub(super) struct Question {
    id: [u8; 2],
    rd: bool,
    pub(super) name: String,
    pub(super) qtype: u16,
    /// The question section as received (echoed in the answer).
    raw: Vec<u8>,
}

pub(super) fn parse_query(p: &[u8]) -> Option<Question> {
    if p.len() < 12 || p[2] & 0x80 != 0 || (p[2] >> 3) & 0x0f != 0 {
        return None;
    }
    if u16::from_be_bytes([p[4], p[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = *p.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let l = p.get(i..i + len)?;
        // Only what a host name holds (the name may end up in the report
        // printed on the user's terminal).
        if !l
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        labels.push(String::from_utf8_lossy(l).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]);
    let _class = p.get(i + 2..i + 4)?;
    Some(Question {
        id: [p[0], p[1]],
        rd: p[2] & 1 != 0,
        name: labels.join("."),
        qtype,
        raw: p[12..i + 4].to_vec(),
    })
}

/// Build an answer: `addr` for an A query, else no records; NXDOMAIN when
/// `known` is false.
pub(super) fn answer(q: &Question, known: bool, addr: Option<Ipv4Addr>) -> Vec<u8> {
    let mut r = Vec::with_capacity(q.raw.len() + 32);
    r.extend_from_slice(&q.id);
    r.push(0x84 | u8::from(q.rd)); // QR, AA, RD as asked
    r.push(0x80 | if known { 0 } else { 3 }); // RA, NOERROR / NXDOMAIN
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&u16::from(addr.is_some()).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&q.raw);
    if let Some(a) = addr {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        r.extend_from_slice(&60u32.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&a.octets());
    }
    r
}

pub(super) fn format_error(p: &[u8]) -> Option<Vec<u8>> {
    let h = p.get(0..12)?;
    Some(vec![h[0], h[1], 0x80, 0x81, 0, 0, 0, 0, 0, 0, 0, 0])
}
