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

use tokio::sync::{mpsc, oneshot};
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

/// What an answer of another instance is worth: its LAN addresses at its port, at
/// most [`MAX_ADDRESSES`]; nothing when it announces another group or port 0.
pub fn believed(tag: Option<&str>, ours: &str, ips: impl Iterator<Item = IpAddr>, port: u16) -> Vec<SocketAddr> {
    if tag != Some(ours) || port == 0 {
        return Vec::new();
    }
    let mut found: Vec<SocketAddr> = ips
        .filter(|ip| on_lan(*ip))
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    found.sort();
    found.dedup();
    found.truncate(MAX_ADDRESSES);
    found
}

/// Announces this member and listens for others of `group` until `stop` fires
/// (answering on the channel it carries, after the announcement is withdrawn).
pub async fn run(
    group: Uuid,
    ips: Vec<IpAddr>,
    port: u16,
    events: mpsc::Sender<ConnEvent>,
    stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let tag = group_tag(group);
    let daemon = match mdns_sd::ServiceDaemon::new() {
        Ok(d) => d,
        Err(e) => return tracing::info!("no LAN discovery: {e}"),
    };
    // Only the interfaces this node listens on: nothing goes out anywhere else.
    let _ = daemon.disable_interface(mdns_sd::IfKind::All);
    for ip in &ips {
        let _ = daemon.enable_interface(mdns_sd::IfKind::Addr(*ip));
    }
    let mut id = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut id);
    let instance: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let host = format!("pg-{instance}.local.");
    let info = mdns_sd::ServiceInfo::new(
        SERVICE,
        &instance,
        &host,
        &ips[..],
        port,
        &[(GROUP_KEY, tag.as_str())][..],
    );
    let fullname = match info.and_then(|info| {
        let name = info.get_fullname().to_string();
        daemon.register(info).map(|_| name)
    }) {
        Ok(name) => name,
        Err(e) => {
            let _ = daemon.shutdown();
            return tracing::info!("no LAN discovery: {e}");
        }
    };
    let browse = match daemon.browse(SERVICE) {
        Ok(r) => r,
        Err(e) => {
            let _ = daemon.shutdown();
            return tracing::info!("no LAN discovery: {e}");
        }
    };
    // The daemon's channel blocks: read it on the blocking pool, a little at a time,
    // so the task notices `stop`.
    let (found_tx, mut found_rx) = mpsc::channel::<Vec<SocketAddr>>(16);
    let (quit_tx, quit_rx) = std::sync::mpsc::channel::<()>();
    let reader = tokio::task::spawn_blocking(move || {
        while quit_rx.try_recv().is_err() {
            let event = match browse.recv_timeout(Duration::from_millis(200)) {
                Ok(e) => e,
                Err(mdns_sd::RecvTimeoutError::Timeout) => continue,
                Err(_) => return,
            };
            if let mdns_sd::ServiceEvent::ServiceResolved(s) = event
                && s.fullname != fullname
            {
                let tag_seen = s.txt_properties.get_property_val_str(GROUP_KEY);
                let addrs = believed(tag_seen, &tag, s.addresses.iter().map(|a| a.to_ip_addr()), s.port);
                if !addrs.is_empty() && found_tx.blocking_send(addrs).is_err() {
                    return;
                }
            }
        }
    });
    let mut stop = stop;
    loop {
        tokio::select! {
            found = found_rx.recv() => match found {
                Some(addrs) => {
                    tracing::info!("found on the LAN: {addrs:?}");
                    let _ = events.send(ConnEvent::Core(Input::Found(addrs))).await;
                }
                None => break,
            },
            done = &mut stop => {
                let _ = quit_tx.send(());
                let _ = reader.await;
                // The withdrawal (a goodbye) goes out before the daemon stops.
                if let Ok(status) = daemon.shutdown() {
                    let _ = tokio::task::spawn_blocking(move || status.recv_timeout(Duration::from_secs(1))).await;
                }
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    }
    let _ = daemon.shutdown();
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
        let got = believed(Some("abc"), "abc", ips.into_iter(), 7400);
        assert_eq!(got.len(), MAX_ADDRESSES);
        assert!(got.iter().all(|a| on_lan(a.ip()) && a.port() == 7400), "{got:?}");
        assert!(
            believed(Some("abd"), "abc", ips.into_iter(), 7400).is_empty(),
            "another group"
        );
        assert!(believed(None, "abc", ips.into_iter(), 7400).is_empty());
        assert!(believed(Some("abc"), "abc", ips.into_iter(), 0).is_empty());
        let announced = announced(&["127.0.0.1:7400".into(), "10.77.0.1:7400".into(), "junk".into()]);
        assert_eq!(announced, ["10.77.0.1".parse::<IpAddr>().unwrap()]);
    }
}
