//! What lets sbox count every connection an `--allow-net` sandbox tries to
//! a destination it may not reach, without netfilter and without looking
//! at the sandbox's system calls:
//! * `local 0.0.0.0/0 dev lo` (and `::/0`) in the namespace's local table,
//!   so that a connect to any address ends on its loopback instead of
//!   failing with ENETUNREACH before a packet exists;
//! * a packet socket on that loopback with a classic BPF filter that passes
//!   only connection requests (TCP SYN without ACK), so the data of the
//!   connections that are forwarded never reaches user space.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Make every IPv4 address (and, when the namespace has IPv6, every IPv6
/// address) local to the loopback of the current network namespace: a
/// connection to one is refused at once by the kernel (or accepted by a
/// listener on the wildcard address) instead of having no route.
/// Returns whether the IPv6 route could be added too.
pub fn route_everything_local() -> nix::Result<bool> {
    // The loopback is the first device of every namespace.
    const LO: u32 = 1;
    let lo = LO;
    add_local_default(libc::AF_INET as u8, lo)?;
    Ok(add_local_default(libc::AF_INET6 as u8, lo).is_ok())
}

/// RTM_NEWROUTE `local DEFAULT dev IFINDEX table local`.
fn add_local_default(family: u8, ifindex: u32) -> nix::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    let mut msg: Vec<u8> = Vec::with_capacity(64);
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    // struct nlmsghdr: length (filled in below), type, flags, seq, pid.
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_NEWROUTE.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
    // type, flags.
    msg.extend_from_slice(&[
        family,
        0,
        0,
        0,
        libc::RT_TABLE_LOCAL,
        libc::RTPROT_BOOT,
        libc::RT_SCOPE_HOST,
        libc::RTN_LOCAL,
    ]);
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // RTA_OIF: the loopback.
    msg.extend_from_slice(&8u16.to_ne_bytes());
    msg.extend_from_slice(&libc::RTA_OIF.to_ne_bytes());
    msg.extend_from_slice(&ifindex.to_ne_bytes());
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    let kernel = nix::sys::socket::NetlinkAddr::new(0, 0);
    nix::sys::socket::sendto(
        sock.as_raw_fd(),
        &msg,
        &kernel,
        nix::sys::socket::MsgFlags::empty(),
    )?;
    // The acknowledgement: an NLMSG_ERROR whose error is 0 on success.
    let mut buf = [0u8; 512];
    let n = nix::sys::socket::recv(
        sock.as_raw_fd(),
        &mut buf,
        nix::sys::socket::MsgFlags::empty(),
    )?;
    let kind = buf.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let error = buf
        .get(16..20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (n >= 20, kind, error) {
        (true, Some(k), Some(0)) if k == libc::NLMSG_ERROR as u16 => Ok(()),
        (true, Some(k), Some(e)) if k == libc::NLMSG_ERROR as u16 => Err(Errno::from_raw(-e)),
        _ => Err(Errno::EPROTO),
    }
}

/// A packet socket on every interface of the current network namespace
/// (only its loopback in an `--allow-net` sandbox) that receives, of each
/// TCP connection request (SYN without ACK) over IPv4 or IPv6, its first 64
/// bytes from the IP header on, once (as received, not as sent).
pub fn syn_watch_socket() -> nix::Result<OwnedFd> {
    const ETH_P_ALL: u16 = 0x0003;
    const IPV4: u32 = 0x0800;
    const IPV6: u32 = 0x86dd;
    // SAFETY: plain socket(2); the descriptor is owned by the OwnedFd below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            i32::from(ETH_P_ALL.to_be()),
        )
    };
    Errno::result(fd)?;
    // SAFETY: fd was just opened and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // Classic BPF; the packet starts at the IP header (SOCK_DGRAM).
    let ld_abs =
        |k: u32, size: u16| bpf(libc::BPF_LD as u16 | size | libc::BPF_ABS as u16, 0, 0, k);
    let jeq = |k: u32, t: u8, f: u8| {
        bpf(
            (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            t,
            f,
            k,
        )
    };
    let and = |k: u32| {
        bpf(
            (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16,
            0,
            0,
            k,
        )
    };
    let ret = |k: u32| bpf((libc::BPF_RET | libc::BPF_K) as u16, 0, 0, k);
    let (b, h, w) = (libc::BPF_B as u16, libc::BPF_H as u16, libc::BPF_W as u16);
    let ad = |off: i32| (libc::SKF_AD_OFF + off) as u32;
    let prog = [
        // 0: only what is received (the loopback shows each packet twice).
        ld_abs(ad(libc::SKF_AD_PKTTYPE), w),
        jeq(libc::PACKET_HOST as u32, 0, 19),
        // 2: by the protocol.
        ld_abs(ad(libc::SKF_AD_PROTOCOL), w),
        jeq(IPV4, 2, 0),
        jeq(IPV6, 10, 0),
        ret(0),
        // 6: IPv4 TCP, not a fragment after the first.
        ld_abs(9, b),
        jeq(libc::IPPROTO_TCP as u32, 0, 13),
        ld_abs(6, h),
        bpf(
            (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16,
            11,
            0,
            0x1fff,
        ),
        // 10: X = the IPv4 header's length; the TCP flags are at X + 13.
        bpf(
            (libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH) as u16,
            0,
            0,
            0,
        ),
        bpf(
            (libc::BPF_LD | libc::BPF_B | libc::BPF_IND) as u16,
            0,
            0,
            13,
        ),
        and(0x12),
        jeq(0x02, 6, 7),
        ret(0),
        // 15: IPv6 TCP (no extension header), its flags at 40 + 13.
        ld_abs(6, b),
        jeq(libc::IPPROTO_TCP as u32, 0, 4),
        ld_abs(53, b),
        // 18: SYN set, ACK clear.
        and(0x12),
        jeq(0x02, 0, 1),
        ret(64),
        ret(0),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: SO_ATTACH_FILTER copies the program `fprog` points to, which
    // lives until the call returns.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::from_ref(&fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    Errno::result(r)?;
    Ok(sock)
}

fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}
