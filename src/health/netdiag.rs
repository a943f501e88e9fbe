//! The listening TCP sockets through netlink `sock_diag` (`inet_diag`), and when to ask it
//! rather than read `/proc/net/tcp` and `tcp6`.
//!
//! Reading `/proc/net/tcp` makes the kernel walk its whole established-connection hash to find
//! the few LISTEN entries: at 1,000 busy tunnels that walk was about 5% of the warden's CPU. An
//! `inet_diag` dump that asks only for `TCP_LISTEN` (`idiag_states = 1 << TCP_LISTEN`) walks the
//! listening hash and skips the established one. Each answer carries the socket's inode, so a
//! [`Listener`] is the same (port, inode) pair either way.
//!
//! Netlink answers for the calling thread's network namespace, `/proc/net/tcp` below a proc root
//! for the namespace that proc root shows. So netlink is used only when the proc root shows the
//! warden's own network namespace ([`ListenerSource::choose`]): its `thread-self/ns/net` (or
//! `self/ns/net`) is the same nsfs inode as `/proc/thread-self/ns/net`. A fixture tree has no
//! such link and is read from its files; so is a proc root that shows another namespace, or a
//! host without `/proc` mounted. When netlink fails at run time (no `AF_NETLINK` in the unit's
//! `RestrictAddressFamilies=`, `inet_diag` not loadable), the caller falls back to the files.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr};

use super::ports::Listener;

/// The kernel hands a dump out in messages of at most 32 KiB (`netlink_recvmsg` caps
/// `max_recvmsg_len` there), so one such buffer never truncates one.
const RECV_BUFFER: usize = 32 * 1024;

/// Where the listening sockets are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerSource {
    /// A netlink `inet_diag` dump of the LISTEN sockets.
    Netlink,
    /// `net/tcp` and `net/tcp6` below the proc root.
    Files,
}

/// A network namespace: the device and inode of its nsfs file.
pub type NetNs = (u64, u64);

impl ListenerSource {
    /// Netlink only when the proc root's namespace is known and is the warden's own; anything
    /// unknown (a fixture tree, an unreadable link) reads the files, which are always right for
    /// the proc root they are under.
    pub fn choose(proc_root_ns: Option<NetNs>, own_ns: Option<NetNs>) -> Self {
        match (proc_root_ns, own_ns) {
            (Some(root), Some(own)) if root == own => ListenerSource::Netlink,
            _ => ListenerSource::Files,
        }
    }

    /// The source for `proc_root`, read from the namespace links (two `stat`s).
    pub fn for_proc_root(proc_root: &Path) -> Self {
        Self::choose(netns_below(proc_root), netns_below(Path::new("/proc")))
    }
}

/// The network namespace a proc root shows for the reading thread (`thread-self`, or `self` on
/// kernels before 3.17).
fn netns_below(proc_root: &Path) -> Option<NetNs> {
    ["thread-self/ns/net", "self/ns/net"]
        .iter()
        .find_map(|link| std::fs::metadata(proc_root.join(link)).ok())
        .map(|m| (m.dev(), m.ino()))
}

/// Every listening TCP socket of the caller's network namespace, IPv4 then IPv6, by one
/// `inet_diag` dump per family on one netlink socket. Blocking.
pub fn listeners() -> io::Result<Vec<Listener>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut buffer = vec![0u8; RECV_BUFFER];
    let mut all = Vec::new();
    for (family, any) in [
        (AF_INET, SocketId::new_v4()),
        (AF_INET6, SocketId::new_v6()),
    ] {
        dump(&socket, family, any, &mut buffer, &mut all)?;
    }
    Ok(all)
}

/// One family's dump, appended to `out`.
fn dump(
    socket: &Socket,
    family: u8,
    any: SocketId,
    buffer: &mut [u8],
    out: &mut Vec<Listener>,
) -> io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let request = SockDiagMessage::InetRequest(InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::LISTEN,
        socket_id: any,
    });
    let mut packet = NetlinkMessage::new(header, request.into());
    packet.finalize();
    let mut bytes = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut bytes);
    socket.send(&bytes, 0)?;
    loop {
        let size = socket.recv(&mut &mut buffer[..], 0)?;
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sock_diag: the dump ended without NLMSG_DONE",
            ));
        }
        if read_messages(&buffer[..size], out)? {
            return Ok(());
        }
    }
}

/// Appends the listeners of one `recv`'s messages to `out`; `true` once the dump is done.
fn read_messages(mut bytes: &[u8], out: &mut Vec<Listener>) -> io::Result<bool> {
    while !bytes.is_empty() {
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {e}")))?;
        let length = message.header.length as usize;
        match message.payload {
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(e) => return Err(e.to_io()),
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                let (port, inode) = (r.header.socket_id.source_port, r.header.inode);
                // Inode 0 (a socket being torn down) cannot be attributed: as in the files.
                if inode != 0 {
                    out.push(Listener {
                        port,
                        inode: u64::from(inode),
                    });
                }
            }
            _ => {}
        }
        // Messages are 4-byte aligned (NLMSG_ALIGN).
        let step = length.next_multiple_of(4).min(bytes.len());
        if step == 0 {
            break;
        }
        bytes = &bytes[step..];
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_only_for_the_own_network_namespace() {
        let own = Some((4, 4026531840));
        assert_eq!(ListenerSource::choose(own, own), ListenerSource::Netlink);
        let other = Some((4, 4026532000));
        assert_eq!(ListenerSource::choose(other, own), ListenerSource::Files);
        assert_eq!(ListenerSource::choose(None, own), ListenerSource::Files);
        assert_eq!(ListenerSource::choose(own, None), ListenerSource::Files);
        assert_eq!(ListenerSource::choose(None, None), ListenerSource::Files);
    }

    #[test]
    fn the_kernel_procfs_uses_netlink_and_a_fixture_tree_the_files() {
        assert_eq!(
            ListenerSource::for_proc_root(Path::new("/proc")),
            ListenerSource::Netlink
        );
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/health/proc");
        assert_eq!(
            ListenerSource::for_proc_root(&fixture),
            ListenerSource::Files
        );
    }

    /// A socket this test listens on shows in the netlink dump with the same port and inode as
    /// in /proc/net/tcp and tcp6, and both sources list the same LISTEN sockets.
    #[test]
    fn netlink_lists_what_the_files_list() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v4_port = v4.local_addr().unwrap().port();
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let read_files = || {
            let mut files = super::super::scan::ProcScan::files_only("/proc")
                .listeners()
                .unwrap();
            files.sort_unstable_by_key(|l| (l.port, l.inode));
            files
        };
        let mut netlink = listeners().unwrap();
        netlink.sort_unstable_by_key(|l| (l.port, l.inode));
        let files = read_files();
        let mine = netlink.iter().find(|l| l.port == v4_port).copied();
        assert!(mine.is_some(), "port {v4_port} not in {netlink:?}");
        assert!(files.contains(&mine.unwrap()), "{mine:?} not in {files:?}");
        if let Some(v6) = &v6 {
            let port = v6.local_addr().unwrap().port();
            assert!(netlink.iter().any(|l| l.port == port), "{netlink:?}");
        }
        // Other tests of this binary listen and close meanwhile: compare twice at most.
        let same = netlink == files || {
            let mut again = listeners().unwrap();
            again.sort_unstable_by_key(|l| (l.port, l.inode));
            again == read_files()
        };
        assert!(same, "netlink {netlink:?}\nfiles {files:?}");
    }
}
