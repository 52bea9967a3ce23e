//! LAN discovery with mDNS (`mdns-sd`): a member listening on LAN addresses announces
//! `_peergroup._tcp.local.` on the interfaces holding them, under a random instance
//! name, with one TXT property `g`: a hash of the group id (never its name, never the
//! member's id). It browses for the same service and hands the node the addresses of
//! instances announcing the same hash, which it dials as it dials an invitation's
//! addresses: any member may answer, and TLS decides who it is. So members who all
//! moved to new addresses while offline find each other again on one link.
//!
//! Anyone on the link can answer: an answer is believed only for LAN addresses
//! (private IPv4, unique-local IPv6), at most [`MAX_ADDRESSES`] per answer, and the
//! node keeps at most [`MAX_FOUND`] of them; a spoofed answer costs a refused TLS
//! handshake, never trust.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::conn::ConnEvent;
use crate::core::Input;

/// The mDNS service type.
pub const SERVICE: &str = "_peergroup._tcp.local.";
/// Most addresses taken from one answer.
pub const MAX_ADDRESSES: usize = 4;
/// Most addresses found on the LAN the node keeps (see `core`).
pub const MAX_FOUND: usize = 16;
/// The TXT property naming the group's hash.
const GROUP_KEY: &str = "g";

/// What the group is announced as: 16 hex digits of SHA-256 over a label and the
/// group id, so the name never leaves the machine and another protocol's hash of the
/// same id is not this one.
pub fn group_tag(group: Uuid) -> String {
    let mut input = b"peergroup mdns v1\0".to_vec();
    input.extend_from_slice(group.as_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether an address may be announced or believed: a LAN address (private IPv4,
/// unique-local IPv6), neither loopback nor global.
pub fn on_lan(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// The addresses to announce: the advertised ones on the LAN.
pub fn announced(advertised: &[String]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = advertised
        .iter()
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .map(|a| a.ip())
        .filter(|ip| on_lan(*ip))
        .collect();
    ips.dedup();
    ips
}

/// Whether `ip` lies in the network `net`/`prefix`.
pub fn in_network(ip: IpAddr, (net, prefix): (IpAddr, u8)) -> bool {
    let (a, b, bits) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (
            u128::from(u32::from(a)) << 96,
            u128::from(u32::from(b)) << 96,
            prefix.min(32),
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), prefix.min(128)),
        _ => return false,
    };
    let mask = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(bits))
    };
    a & mask == b & mask
}

/// What an answer of another instance is worth: its addresses inside one of this
/// node's LAN networks (`nets`: address and prefix length of each interface it
/// announces on) at its port, at most [`MAX_ADDRESSES`]; nothing when it announces
/// another group or port 0. An address outside those networks would make the node
/// dial beyond the link (through its gateway) wherever a spoofed answer says.
pub fn believed(
    tag: Option<&str>,
    ours: &str,
    ips: impl Iterator<Item = IpAddr>,
    port: u16,
    nets: &[(IpAddr, u8)],
) -> Vec<SocketAddr> {
    if tag != Some(ours) || port == 0 {
        return Vec::new();
    }
    let mut found: Vec<SocketAddr> = ips
        .filter(|ip| on_lan(*ip) && nets.iter().any(|n| in_network(*ip, *n)))
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    found.sort();
    found.dedup();
    found.truncate(MAX_ADDRESSES);
    found
}

/// The networks of the interfaces holding `ips` (address, prefix length).
fn networks(ips: &[IpAddr]) -> Vec<(IpAddr, u8)> {
    let prefix = |mask: IpAddr| match mask {
        IpAddr::V4(m) => u32::from(m).count_ones() as u8,
        IpAddr::V6(m) => u128::from(m).count_ones() as u8,
    };
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| ips.contains(&i.ip()))
        .map(|i| {
            let mask = match &i.addr {
                if_addrs::IfAddr::V4(a) => IpAddr::V4(a.netmask),
                if_addrs::IfAddr::V6(a) => IpAddr::V6(a.netmask),
            };
            (i.ip(), prefix(mask))
        })
        .collect()
}

/// Stops the reader thread and the daemon however the task ends (a clean exit
/// withdraws the announcement first; a dropped task still frees both).
struct Daemon {
    daemon: mdns_sd::ServiceDaemon,
    quit: Arc<AtomicBool>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Release);
        let _ = self.daemon.shutdown();
    }
}

/// Announces this member and, while it has no neighbour (`alone`), looks for others
/// of `group`, until `stop` fires (answering on the channel it carries, after the
/// announcement is withdrawn). Browsing only while alone bounds what answers from
/// the link can make the daemon cache to the time a member needs them.
pub async fn run(
    group: Uuid,
    ips: Vec<IpAddr>,
    port: u16,
    events: mpsc::Sender<ConnEvent>,
    mut alone: watch::Receiver<bool>,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let tag = group_tag(group);
    let nets = networks(&ips);
    let daemon = match mdns_sd::ServiceDaemon::new() {
        Ok(d) => Daemon {
            daemon: d,
            quit: Arc::new(AtomicBool::new(false)),
        },
        Err(e) => return tracing::info!("no LAN discovery: {e}"),
    };
    // Only the interfaces this node listens on: nothing goes out anywhere else.
    let _ = daemon.daemon.disable_interface(mdns_sd::IfKind::All);
    for ip in &ips {
        let _ = daemon.daemon.enable_interface(mdns_sd::IfKind::Addr(*ip));
    }
    let mut id = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut id);
    let instance: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let host = format!("pg-{instance}.local.");
    let properties = [(GROUP_KEY, tag.as_str())];
    let info = mdns_sd::ServiceInfo::new(SERVICE, &instance, &host, &ips[..], port, &properties[..]);
    let registered = info.and_then(|info| {
        let name = info.get_fullname().to_string();
        daemon.daemon.register(info).map(|_| name)
    });
    let fullname = match registered {
        Ok(name) => name,
        Err(e) => return tracing::info!("no LAN discovery: {e}"),
    };
    // The daemon's channels block: a thread reads the current browse, a little at a
    // time, and drops what the node has no room for.
    let (found_tx, mut found_rx) = mpsc::channel::<Vec<SocketAddr>>(16);
    let (browses_tx, browses_rx) = std::sync::mpsc::channel::<mdns_sd::Receiver<mdns_sd::ServiceEvent>>();
    let quit = daemon.quit.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut current = None;
        while !quit.load(Ordering::Acquire) {
            while let Ok(r) = browses_rx.try_recv() {
                current = Some(r);
            }
            let Some(browse) = &current else {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            let event = match browse.recv_timeout(Duration::from_millis(200)) {
                Ok(e) => e,
                Err(mdns_sd::RecvTimeoutError::Timeout) => continue,
                // Stopped, or closed by the daemon when the node fell behind.
                Err(_) => {
                    current = None;
                    continue;
                }
            };
            if let mdns_sd::ServiceEvent::ServiceResolved(s) = event
                && s.fullname != fullname
            {
                let seen = s.txt_properties.get_property_val_str(GROUP_KEY);
                let addrs = believed(seen, &tag, s.addresses.iter().map(|a| a.to_ip_addr()), s.port, &nets);
                if !addrs.is_empty() {
                    let _ = found_tx.try_send(addrs);
                }
            }
        }
    });
    let browse = |d: &Daemon| match d.daemon.browse(SERVICE) {
        Ok(r) => {
            let _ = browses_tx.send(r);
        }
        Err(e) => tracing::info!("cannot look for members on the LAN: {e}"),
    };
    let mut browsing = *alone.borrow_and_update();
    if browsing {
        browse(&daemon);
    }
    loop {
        tokio::select! {
            changed = alone.changed() => {
                if changed.is_err() {
                    break;
                }
                let now_alone = *alone.borrow_and_update();
                if now_alone && !browsing {
                    browse(&daemon);
                } else if !now_alone && browsing {
                    let _ = daemon.daemon.stop_browse(SERVICE);
                }
                browsing = now_alone;
            }
            found = found_rx.recv() => match found {
                Some(addrs) => {
                    tracing::info!("found on the LAN: {addrs:?}");
                    let _ = events.try_send(ConnEvent::Core(Input::Found(addrs)));
                }
                None => break,
            },
            done = &mut stop => {
                daemon.quit.store(true, Ordering::Release);
                drop(found_rx);
                let _ = reader.await;
                // The withdrawal (a goodbye) goes out before the daemon stops.
                if let Ok(status) = daemon.daemon.shutdown() {
                    let _ = tokio::task::spawn_blocking(move || status.recv_timeout(Duration::from_secs(1))).await;
                }
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_is_announced_as_a_hash_never_its_name_or_id() {
        let g = Uuid::from_bytes([7; 16]);
        let tag = group_tag(g);
        assert_eq!(tag.len(), 16);
        assert!(!tag.contains(&g.simple().to_string()[..8]));
        assert_ne!(tag, group_tag(Uuid::from_bytes([8; 16])));
        assert_eq!(tag, group_tag(g), "stable, so members find each other");
    }

    #[test]
    fn only_lan_addresses_of_the_same_group_are_believed() {
        let ips = [
            "192.168.1.5",
            "11.11.0.3",
            "127.0.0.1",
            "fd00::5",
            "2a00::1",
            "10.0.0.9",
            "172.16.0.1",
            "10.0.0.10",
        ]
        .map(|s| s.parse::<IpAddr>().unwrap());
        let everywhere = [("0.0.0.0".parse().unwrap(), 0), ("fd00::".parse().unwrap(), 8)];
        let got = believed(Some("abc"), "abc", ips.into_iter(), 7400, &everywhere);
        assert_eq!(got.len(), MAX_ADDRESSES);
        assert!(got.iter().all(|a| on_lan(a.ip()) && a.port() == 7400), "{got:?}");
        let other = believed(Some("abd"), "abc", ips.into_iter(), 7400, &everywhere);
        assert!(other.is_empty(), "another group");
        assert!(believed(None, "abc", ips.into_iter(), 7400, &everywhere).is_empty());
        assert!(believed(Some("abc"), "abc", ips.into_iter(), 0, &everywhere).is_empty());
        // Red-team finding: a spoofed answer naming a private address beyond the link
        // made the node dial it through its gateway.
        let lan = [("10.0.0.1".parse().unwrap(), 24)];
        let got = believed(Some("abc"), "abc", ips.into_iter(), 7400, &lan);
        assert_eq!(
            got,
            ["10.0.0.9:7400".parse().unwrap(), "10.0.0.10:7400".parse().unwrap()]
        );
        assert!(in_network(
            "192.168.1.200".parse().unwrap(),
            ("192.168.1.1".parse().unwrap(), 24)
        ));
        assert!(!in_network(
            "192.168.2.1".parse().unwrap(),
            ("192.168.1.1".parse().unwrap(), 24)
        ));
        assert!(!in_network(
            "fd00::1".parse().unwrap(),
            ("192.168.1.1".parse().unwrap(), 0)
        ));
        let announced = announced(&["127.0.0.1:7400".into(), "10.77.0.1:7400".into(), "junk".into()]);
        assert_eq!(announced, ["10.77.0.1".parse::<IpAddr>().unwrap()]);
    }
}
