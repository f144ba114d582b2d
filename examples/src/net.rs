//! The gateway's contact with the operating system's network: the outer sockets (UDP 500,
//! UDP 4500, raw ESP), the TUN device for inner packets, and the routes that send the remote
//! subnets into it.
//!
//! TUN devices come from `tun-rs`: it is maintained, Apache-2.0, has a tokio `AsyncDevice`
//! with `recv`/`send` of whole IP packets (no packet-information header), and needs no unsafe
//! code from us. The device is opened with offloads (virtio-net header, TSO and checksum
//! offload): tun-rs' `recv_multiple` splits a TCP super-packet into MTU-sized packets and
//! `send_multiple` coalesces TCP segments back (GRO), see [`crate::datapath`].
//!
//! Batched UDP (GSO with `UDP_SEGMENT` on send, `UDP_GRO` on receive) and batched raw ESP
//! (`sendmmsg`/`recvmmsg`: one system call for a run of packets) go through the `nix`
//! crate's safe wrappers, with tokio's readiness (`async_io`/`try_io`, `AsyncFd`) around
//! them. Routes are set with the `ip` command rather than netlink code of our own:
//! one `ip route replace` per subnet at startup is not a hot path, and the command's errors
//! are readable.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd as _;
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use ipsec_sa::selector::TrafficSelector;
use nix::sys::socket::{
    recvmmsg, recvmsg, sendmmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned,
    MsgFlags, MultiHeaders, SockaddrStorage,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// IKE's port (RFC 2408 section 2.5.2 via IANA).
pub(crate) const IKE_PORT: u16 = 500;
/// The NAT-T port: IKE after the float, and ESP in UDP (RFC 3947 section 4, RFC 3948).
pub(crate) const NATT_PORT: u16 = 4500;
/// Socket buffer size asked for on the UDP sockets.
const UDP_BUFFER: usize = 4 << 20;
/// IP protocol number of ESP (RFC 4303).
pub(crate) const IPPROTO_ESP: u8 = 50;

/// The sockets bound to one local outer address (cloning shares them).
#[derive(Clone, Debug)]
pub(crate) struct OuterSockets {
    /// The address they are bound to.
    pub(crate) addr: IpAddr,
    /// UDP 500: IKE before any NAT-T float.
    pub(crate) ike: Arc<UdpSocket>,
    /// UDP 4500: IKE with the non-ESP marker, ESP in UDP, NAT keepalives.
    pub(crate) natt: Arc<UdpSocket>,
    /// Raw ESP (IP protocol 50), for SAs negotiated without UDP encapsulation; `None` when
    /// it could not be opened (IPv6 is not supported yet, see [`RawEsp`]).
    pub(crate) esp: Option<Arc<RawEsp>>,
}

impl OuterSockets {
    /// Binds UDP 500 and 4500 on `addr` and tries to open raw ESP.
    pub(crate) fn bind(addr: IpAddr) -> anyhow::Result<Self> {
        let ike = bind_udp(SocketAddr::new(addr, IKE_PORT))?;
        let natt = bind_udp(SocketAddr::new(addr, NATT_PORT))?;
        let esp = match addr {
            IpAddr::V4(v4) => match RawEsp::open(v4) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::warn!(%addr, "raw ESP socket unavailable, only ESP in UDP will work: {e}");
                    None
                }
            },
            IpAddr::V6(_) => {
                tracing::debug!(%addr, "raw ESP over IPv6 is not implemented; ESP in UDP only");
                None
            }
        };
        Ok(Self {
            addr,
            ike: Arc::new(ike),
            natt: Arc::new(natt),
            esp,
        })
    }
}

fn bind_udp(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .with_context(|| format!("creating UDP socket for {addr}"))?;
    socket.set_nonblocking(true)?;
    // ESP in UDP arrives in bursts (a TCP window at a time); a larger buffer keeps the
    // kernel from dropping while the loop is busy encrypting. Best effort: the kernel caps
    // it at net.core.rmem_max.
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER) {
        tracing::debug!(%addr, "SO_RCVBUF not raised: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER) {
        tracing::debug!(%addr, "SO_SNDBUF not raised: {e}");
    }
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding UDP {addr} (is another IKE daemon running?)"))?;
    let std_socket: std::net::UdpSocket = socket.into();
    UdpSocket::from_std(std_socket).with_context(|| format!("registering UDP {addr}"))
}

/// A raw IPv4 socket for ESP (protocol 50), bound to one local address.
///
/// Received datagrams carry the IPv4 header (raw IPv4 sockets deliver it), which gives the
/// sender's address without `recvfrom`'s uninitialised-buffer API. IPv6 raw sockets strip the
/// header, so IPv6 would need `recvfrom`: not implemented yet, and not needed by peers that
/// only do ESP in UDP (strongSwan's kernel-libipsec 5.9.8).
#[derive(Debug)]
pub(crate) struct RawEsp {
    fd: AsyncFd<Socket>,
}

impl RawEsp {
    fn open(addr: Ipv4Addr) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_ESP))),
        )?;
        socket.set_nonblocking(true)?;
        socket.bind(&SocketAddr::new(IpAddr::V4(addr), 0).into())?;
        // SAFETY: `AsyncFd` takes ownership of the `Socket`, which owns its descriptor and
        // closes it only when dropped, so the descriptor stays open and unchanged for as
        // long as the `AsyncFd` exists, which is what `register` requires.
        #[expect(
            unsafe_code,
            reason = "tokio's AsyncFd::register is unsafe; see SAFETY"
        )]
        let fd = unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Waits for ESP packets and receives as many as are queued, up to one per buffer of
    /// `bufs`, in one `recvmmsg`. For each, `got` (cleared first) receives the sender and
    /// the index and range of the buffer holding the ESP header and everything after it
    /// (the IPv4 header is skipped). A datagram with a bad IPv4 header is dropped and
    /// logged; `got` may then hold fewer entries than were received, or none. Returns how
    /// many datagrams were received (all `bufs` used: more may be queued).
    pub(crate) async fn recv_many(
        &self,
        bufs: &mut [Vec<u8>],
        got: &mut Vec<RawReceived>,
    ) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| recv_many(inner.get_ref().as_raw_fd(), bufs, got)) {
                Ok(result) => return result,
                Err(_would_block) => {}
            }
        }
    }

    /// As [`RawEsp::recv_many`], without waiting: `WouldBlock` when nothing is queued.
    pub(crate) fn try_recv_many(
        &self,
        bufs: &mut [Vec<u8>],
        got: &mut Vec<RawReceived>,
    ) -> io::Result<usize> {
        recv_many(self.fd.get_ref().as_raw_fd(), bufs, got)
    }

    /// Sends ESP packets (header onwards), each to its own peer, in as few `sendmmsg`
    /// calls as the kernel lets us; the kernel adds the IPv4 headers. A packet the kernel
    /// refuses is logged and skipped, and the rest still go.
    pub(crate) async fn send_many(&self, packets: &[(&[u8], IpAddr)]) {
        let mut rest = packets;
        while !rest.is_empty() {
            let result = loop {
                let mut guard = match self.fd.writable().await {
                    Ok(guard) => guard,
                    Err(e) => break Err(e),
                };
                match guard.try_io(|inner| send_many(inner.get_ref().as_raw_fd(), rest)) {
                    Ok(result) => break result,
                    Err(_would_block) => {}
                }
            };
            let done = match result {
                Ok(sent) => sent.max(1),
                Err(e) => {
                    if let Some((_, peer)) = rest.first() {
                        tracing::debug!(%peer, "sending ESP failed: {e}");
                    }
                    1
                }
            };
            rest = rest.get(done..).unwrap_or_default();
        }
    }
}

/// One ESP packet taken by [`RawEsp::recv_many`]: `bufs[index][esp]` from `from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawReceived {
    pub(crate) from: IpAddr,
    pub(crate) index: usize,
    pub(crate) esp: std::ops::Range<usize>,
}

/// One non-blocking `recvmmsg` into `bufs`; see [`RawEsp::recv_many`].
fn recv_many(
    fd: std::os::fd::RawFd,
    bufs: &mut [Vec<u8>],
    got: &mut Vec<RawReceived>,
) -> io::Result<usize> {
    got.clear();
    // (length, truncated) of each datagram received; the buffers are read once the
    // system call's borrows of them have ended.
    let lens: Vec<(usize, bool)> = {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(b.as_mut_slice())])
            .collect();
        let mut headers = MultiHeaders::<()>::preallocate(iovs.len(), None);
        recvmmsg(
            fd,
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?
        .map(|m| (m.bytes, m.flags.contains(MsgFlags::MSG_TRUNC)))
        .collect()
    };
    let received = lens.len();
    for (index, (n, truncated)) in lens.into_iter().enumerate() {
        let Some(datagram) = bufs.get(index).and_then(|b| b.get(..n)) else {
            continue;
        };
        if truncated {
            tracing::debug!(
                len = n,
                "raw ESP: dropped a datagram larger than the buffer"
            );
            continue;
        }
        match strip_ipv4_header(datagram) {
            Some((src, start)) => got.push(RawReceived {
                from: IpAddr::V4(src),
                index,
                esp: start..n,
            }),
            None => tracing::debug!(len = n, "raw ESP: dropped datagram with a bad IPv4 header"),
        }
    }
    Ok(received)
}

/// One non-blocking `sendmmsg` of `packets`; returns how many the kernel took.
fn send_many(fd: std::os::fd::RawFd, packets: &[(&[u8], IpAddr)]) -> io::Result<usize> {
    let iovs: Vec<[IoSlice<'_>; 1]> = packets.iter().map(|(p, _)| [IoSlice::new(p)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = packets
        .iter()
        .map(|(_, peer)| Some(SockaddrStorage::from(SocketAddr::new(*peer, 0))))
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(packets.len(), None);
    let sent = sendmmsg(fd, &mut headers, &iovs, &addrs, [], MsgFlags::MSG_DONTWAIT)?;
    Ok(sent.count())
}

/// The source address and the payload offset of an IPv4 datagram, after basic checks.
fn strip_ipv4_header(d: &[u8]) -> Option<(Ipv4Addr, usize)> {
    let first = *d.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < 20 || d.len() < header_len {
        return None;
    }
    let src: [u8; 4] = d.get(12..16)?.try_into().ok()?;
    Some((Ipv4Addr::from(src), header_len))
}

/// Creates the TUN device (up, no address: it is only a route target).
pub(crate) fn create_tun(name: &str, mtu: u16) -> anyhow::Result<tun_rs::AsyncDevice> {
    let dev = tun_rs::DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .packet_information(false)
        .offload(true)
        .enable(false)
        .build_async()
        .with_context(|| format!("creating TUN device {name} (needs root or CAP_NET_ADMIN)"))?;
    // No IPv6 link-local address: the kernel would send router solicitations into the
    // tunnel, which no policy covers. Then up: routes need the link up.
    ip(&["link", "set", "dev", name, "addrgenmode", "none"])?;
    ip(&["link", "set", "dev", name, "up"])?;
    Ok(dev)
}

/// Asks the kernel to coalesce received datagrams of one flow (`UDP_GRO`, Linux 5.0+);
/// best effort: without it every datagram is read on its own.
pub(crate) fn enable_gro(socket: &UdpSocket) {
    if let Err(e) = setsockopt(socket, sockopt::UdpGroSegment, &true) {
        tracing::debug!("UDP_GRO not enabled: {e}");
    }
}

/// Sends the datagrams in `iov` (all `segment` bytes long except perhaps the last) to `to`
/// in one `sendmsg` with `UDP_SEGMENT` (UDP GSO): the kernel cuts the concatenation into
/// datagrams of `segment` bytes.
pub(crate) async fn send_gso(
    socket: &UdpSocket,
    iov: &[IoSlice<'_>],
    segment: usize,
    to: SocketAddr,
) -> io::Result<usize> {
    let segment = u16::try_from(segment)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "GSO segment too large"))?;
    let addr = SockaddrStorage::from(to);
    let fd = socket.as_raw_fd();
    socket
        .async_io(Interest::WRITABLE, || {
            sendmsg(
                fd,
                iov,
                &[ControlMessage::UdpGsoSegments(&segment)],
                MsgFlags::empty(),
                Some(&addr),
            )
            .map_err(io::Error::from)
        })
        .await
}

/// Receives from a UDP socket with `UDP_GRO` enabled: one read may return several
/// datagrams of one flow, back to back, each `stride` bytes long except perhaps the last.
#[derive(Debug)]
pub(crate) struct GroReceiver {
    /// Room for the `UDP_GRO` control message, allocated once.
    cmsg: Vec<u8>,
}

impl GroReceiver {
    pub(crate) fn new() -> Self {
        Self {
            cmsg: nix::cmsg_space!(i32),
        }
    }

    /// Waits for datagrams: returns (bytes, stride, sender).
    pub(crate) async fn recv(
        &mut self,
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, usize, SocketAddr)> {
        let fd = socket.as_raw_fd();
        let cmsg = &mut self.cmsg;
        socket
            .async_io(Interest::READABLE, || recv_gro(fd, buf, cmsg))
            .await
    }

    /// As [`GroReceiver::recv`], without waiting: `WouldBlock` when nothing is queued.
    pub(crate) fn try_recv(
        &mut self,
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, usize, SocketAddr)> {
        let fd = socket.as_raw_fd();
        let cmsg = &mut self.cmsg;
        socket.try_io(Interest::READABLE, || recv_gro(fd, buf, cmsg))
    }
}

/// One `recvmsg` with room for the `UDP_GRO` segment size.
fn recv_gro(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
    cmsg: &mut [u8],
) -> io::Result<(usize, usize, SocketAddr)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(cmsg), MsgFlags::empty())?;
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "datagram larger than the receive buffer",
        ));
    }
    let len = msg.bytes;
    let mut stride = len;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::UdpGroSegments(s) = c {
            stride = usize::try_from(s).ok().filter(|s| *s > 0).unwrap_or(len);
        }
    }
    let from = msg
        .address
        .as_ref()
        .and_then(socket_addr)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no sender address"))?;
    Ok((len, stride, from))
}

/// A nix socket address as a std one (IPv4 or IPv6 only).
fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    s.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// Routes `subnet` into the TUN device. `src` (one of this host's addresses inside our
/// local subnets) makes packets the gateway itself originates match the tunnel's selectors.
pub(crate) fn add_route(
    tun: &str,
    subnet: &TrafficSelector,
    src: Option<IpAddr>,
) -> anyhow::Result<()> {
    let dest = subnet.to_string();
    let mut args = vec!["route", "replace", dest.as_str(), "dev", tun];
    let src_text;
    if let Some(s) = src.filter(|s| s.is_ipv4() == subnet.start().is_ipv4()) {
        src_text = s.to_string();
        args.extend(["src", src_text.as_str()]);
    }
    if subnet.start().is_ipv6() {
        args.insert(0, "-6");
    }
    ip(&args)
}

/// Removes a route added by [`add_route`]; errors are logged, not returned (shutdown path).
pub(crate) fn remove_route(tun: &str, subnet: &TrafficSelector) {
    let dest = subnet.to_string();
    let mut args = vec!["route", "del", dest.as_str(), "dev", tun];
    if subnet.start().is_ipv6() {
        args.insert(0, "-6");
    }
    if let Err(e) = ip(&args) {
        tracing::debug!("removing route {dest}: {e:#}");
    }
}

/// One of this host's addresses that lies inside one of `subnets`, if any.
pub(crate) fn host_address_in(subnets: &[TrafficSelector]) -> Option<IpAddr> {
    let out = Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let found = host_addresses(&text).find(|a| subnets.iter().any(|s| s.contains_addr(*a)));
    found
}

/// The addresses in `ip -o addr show` output ("... inet 10.1.0.1/24 ...").
fn host_addresses(text: &str) -> impl Iterator<Item = IpAddr> + '_ {
    text.lines().filter_map(|line| {
        let mut words = line.split_whitespace();
        words.find(|w| *w == "inet" || *w == "inet6")?;
        let cidr = words.next()?;
        cidr.split('/').next()?.parse().ok()
    })
}

/// Runs `ip ARGS...`, turning a failure into an error that shows the command and its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running the ip command (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ipv4_header_by_ihl() {
        // IHL 5 (20 bytes), source 192.0.2.2, then 4 payload bytes.
        let mut d = vec![
            0x45, 0, 0, 24, 0, 0, 0, 0, 64, 50, 0, 0, 192, 0, 2, 2, 192, 0, 2, 1,
        ];
        d.extend([0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(
            strip_ipv4_header(&d),
            Some((Ipv4Addr::new(192, 0, 2, 2), 20))
        );
        // IHL 6 with one option word.
        let mut d6 = d.clone();
        d6[0] = 0x46;
        assert_eq!(strip_ipv4_header(&d6).map(|(_, o)| o), Some(24));
    }

    #[test]
    fn rejects_short_or_non_ipv4_headers() {
        assert_eq!(strip_ipv4_header(&[]), None);
        assert_eq!(strip_ipv4_header(&[0x45, 0, 0]), None);
        assert_eq!(strip_ipv4_header(&[0x60; 40]), None);
        let mut d = vec![0x44; 20];
        d[0] = 0x44; // IHL 4 is below the minimum of 5
        assert_eq!(strip_ipv4_header(&d), None);
    }

    #[test]
    fn finds_addresses_in_ip_output() {
        let text = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                    3: lan0    inet 10.1.0.1/24 scope global lan0\\       valid_lft forever\n\
                    3: lan0    inet6 fe80::1/64 scope link \\       valid_lft forever\n";
        let addrs: Vec<IpAddr> = host_addresses(text).collect();
        assert_eq!(
            addrs,
            vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([10, 1, 0, 1]),
                "fe80::1".parse().unwrap()
            ]
        );
    }
}

#[cfg(test)]
mod raw_tests {
    use super::*;

    /// `send_many` over loopback delivers every packet, in order, to `recv_many`, across
    /// more packets than one `recvmmsg` takes, and a packet the kernel refuses in the
    /// middle of a run (too big for IPv4, or an IPv6 peer on the IPv4 socket) costs only
    /// that packet. Needs root (raw sockets), as the interop tests do.
    #[tokio::test]
    #[ignore = "needs root: raw IP sockets"]
    async fn raw_esp_runs_survive_a_refused_packet_and_arrive_in_order() {
        let lo = Ipv4Addr::LOCALHOST;
        let esp = RawEsp::open(lo).expect("raw ESP socket (run as root)");
        let packets: Vec<Vec<u8>> = (0u32..100)
            .map(|i| {
                // A made-up SPI (far from any real one) and the index as sequence number.
                let mut p = 0xfeed_0000u32.to_be_bytes().to_vec();
                p.extend_from_slice(&i.to_be_bytes());
                p.resize(40 + usize::try_from(i).unwrap(), 0xa5);
                p
            })
            .collect();
        let too_big = vec![0u8; 70_000];
        let mut run: Vec<(&[u8], IpAddr)> = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            run.push((p, IpAddr::V4(lo)));
            if i == 10 {
                run.push((&too_big, IpAddr::V4(lo)));
            }
            if i == 70 {
                run.push((&packets[0], IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)));
            }
        }
        esp.send_many(&run).await;

        let mut bufs: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; 65_535]).collect();
        let mut got = Vec::new();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        while seen.len() < packets.len() {
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                esp.recv_many(&mut bufs, &mut got),
            )
            .await
            .expect("every packet arrives")
            .unwrap();
            assert!(n <= 64);
            for r in &got {
                assert_eq!(r.from, IpAddr::V4(lo));
                let data = bufs[r.index][r.esp.clone()].to_vec();
                if data.starts_with(&0xfeed_0000u32.to_be_bytes()) {
                    seen.push(data);
                }
            }
        }
        assert_eq!(seen, packets);
    }
}
