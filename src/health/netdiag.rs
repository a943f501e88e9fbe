//! The listening TCP sockets through netlink `sock_diag` (`inet_diag`), and when to ask it
//! rather than read `/proc/net/tcp` and `tcp6`.
//!
//! Reading `/proc/net/tcp` makes the kernel walk its whole established-connection hash to find
//! the few LISTEN entries: at 1,000 busy tunnels that walk was about 5% of the warden's CPU. An
//! `inet_diag` dump that asks only for `TCP_LISTEN` (`idiag_states = 1 << TCP_LISTEN`) walks the
//! listening hash and skips the established one. Each answer carries the socket's inode, so a
//! [`Listener`] is the same (port, inode) pair either way. Since Linux 5.7 each answer also
//! carries the cgroup v2 id of the cgroup the socket was created in (`INET_DIAG_CGROUP_ID`),
//! which tells a unit's own listeners from others' without reading any process's fds
//! ([`super::ports::own_by_cgroup`]); the files do not say.
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
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla as _,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr};

use super::ports::Listener;

/// The kernel hands a dump out in messages of at most 32 KiB (`netlink_recvmsg` caps
/// `max_recvmsg_len` there), so one such buffer never truncates one.
const RECV_BUFFER: usize = 32 * 1024;

/// `INET_DIAG_CGROUP_ID` of the kernel's `include/uapi/linux/inet_diag.h` (the 22nd entry of its
/// attribute enum, after `INET_DIAG_SK_BPF_STORAGES`): a `u64` in host order, sent unasked with
/// every socket since Linux 5.7. netlink-packet-sock-diag 0.5 does not name it.
const INET_DIAG_CGROUP_ID: u16 = 21;

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
                        cgroup: r.nlas.iter().find_map(cgroup_id),
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

/// The cgroup id an `INET_DIAG_CGROUP_ID` attribute carries.
fn cgroup_id(nla: &Nla) -> Option<u64> {
    match nla {
        Nla::Other(attr) if attr.kind() == INET_DIAG_CGROUP_ID && attr.value_len() == 8 => {
            let mut bytes = [0u8; 8];
            attr.emit_value(&mut bytes);
            Some(u64::from_ne_bytes(bytes))
        }
        _ => None,
    }
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

    /// The (port, inode) pairs, sorted: what both sources say.
    fn pairs(listeners: &[Listener]) -> Vec<(u16, u64)> {
        let mut pairs: Vec<(u16, u64)> = listeners.iter().map(|l| (l.port, l.inode)).collect();
        pairs.sort_unstable();
        pairs
    }

    /// A socket this test listens on shows in the netlink dump with the same port and inode as
    /// in /proc/net/tcp and tcp6, and both sources list the same LISTEN sockets.
    #[test]
    fn netlink_lists_what_the_files_list() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v4_port = v4.local_addr().unwrap().port();
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let read_files = || {
            let files = super::super::scan::ProcScan::files_only("/proc").listeners();
            pairs(&files.unwrap())
        };
        let netlink = pairs(&listeners().unwrap());
        let files = read_files();
        let mine = netlink.iter().find(|(port, _)| *port == v4_port).copied();
        assert!(mine.is_some(), "port {v4_port} not in {netlink:?}");
        assert!(files.contains(&mine.unwrap()), "{mine:?} not in {files:?}");
        if let Some(v6) = &v6 {
            let port = v6.local_addr().unwrap().port();
            assert!(netlink.iter().any(|(p, _)| *p == port), "{netlink:?}");
        }
        // Other tests of this binary listen and close meanwhile: compare twice at most.
        let same = netlink == files || pairs(&listeners().unwrap()) == read_files();
        assert!(same, "netlink {netlink:?}\nfiles {files:?}");
    }

    /// The cgroup netlink reports for a socket this test listens on is the inode of this
    /// process's own directory in the cgroup v2 tree (`0::` in /proc/self/cgroup, below the
    /// cgroup2 mount of /proc/self/mountinfo): what tells a unit's listeners from others'.
    #[test]
    fn netlink_names_the_cgroup_a_socket_was_made_in() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        // `id parent dev root mountpoint options... - cgroup2 source options`
        let v2 = mounts
            .lines()
            .find(|l| l.contains(" - cgroup2 "))
            .and_then(|l| l.split(' ').nth(4))
            .expect("a cgroup2 mount (pure v2 or hybrid)");
        let dir = Path::new(v2).join(own.trim_start_matches('/'));
        let expected = std::fs::metadata(&dir).unwrap().ino();
        let found = listeners().unwrap();
        let mine = found.iter().find(|l| l.port == port).unwrap();
        assert_eq!(mine.cgroup, Some(expected), "{}", dir.display());
    }
}
