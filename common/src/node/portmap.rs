//! Port mapping: a member listening on a private address asks its gateway (the
//! default route's router) to forward a public port to it, with UPnP IGD (`igd-next`)
//! or else NAT-PMP/PCP (`crab_nat`), advertises the mapped address, renews it at half
//! its lease, and removes it on a clean exit. The rules (whether to map, whether an
//! answer is believable, when to renew) are pure functions with their tests; the rest
//! talks to the gateway, within timeouts, and never to anything but the gateway.
//!
//! A gateway is believed only so far: the external address it reports must be a global
//! unicast IPv4 address (a private, shared, reserved or documentation one would send
//! members nowhere), the port non-zero, and a UPnP gateway must be the default route's
//! router (anyone on the LAN can answer SSDP).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::conn::ConnEvent;
use crate::core::Input;
pub use crate::core::relay::is_global;

/// The lease asked for, in seconds.
pub const LEASE_SECS: u32 = 3600;
/// Shortest time between renewals (a gateway granting seconds is not obeyed to the
/// letter).
pub const MIN_RENEW: Duration = Duration::from_secs(30);
/// How long one attempt (search, map, external address) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long after a failure mapping is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// How long a clean exit waits for the mapping's removal.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(1);
/// What the mapping is called on the gateway.
const DESCRIPTION: &str = "peergroup";

/// Which protocol made a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// UPnP IGD.
    Upnp,
    /// NAT-PMP or its successor PCP.
    NatPmp,
}

impl Protocol {
    /// Its name in events.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Upnp => "upnp",
            Protocol::NatPmp => "nat-pmp",
        }
    }
}

/// The LAN addresses that could be mapped: mapping is wanted when it is not turned
/// off, no address was given with `--advertise`, and the node advertises no global
/// IPv4 address, only private ones (empty otherwise). A global IPv6 address does not
/// count: members with IPv4 only could not dial it.
pub fn wanted(advertised: &[String], given: bool, disabled: bool) -> Vec<Ipv4Addr> {
    if disabled || given {
        return Vec::new();
    }
    let ips: Vec<IpAddr> = advertised
        .iter()
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .map(|a| a.ip())
        .collect();
    if ips.iter().any(|ip| ip.is_ipv4() && is_global(*ip)) {
        return Vec::new();
    }
    ips.into_iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) if v4.is_private() => Some(v4),
            _ => None,
        })
        .collect()
}

/// Which of `candidates` to map: the one this host reaches the gateway from (`local`);
/// none when the node does not listen there (a mapping to another address would be
/// dead); the first when the route is not known.
pub fn choose_lan(candidates: &[Ipv4Addr], local: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    match local {
        Some(l) => candidates.contains(&l).then_some(l),
        None => candidates.first().copied(),
    }
}

/// The address this host sends from towards `gateway` (a connected UDP socket; nothing
/// is sent).
fn local_towards(gateway: Ipv4Addr) -> Option<Ipv4Addr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((gateway, crab_nat::GATEWAY_PORT)).ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

/// Checks what a gateway says it mapped: a global IPv4 address, a non-zero port, a
/// lease of at least [`MIN_LEASE_SECS`].
pub fn believable(external: IpAddr, port: u16, lease: u32) -> Result<SocketAddr, String> {
    if lease < MIN_LEASE_SECS {
        return Err(format!(
            "the gateway granted {lease} s, under the {MIN_LEASE_SECS} s believed"
        ));
    }
    if !matches!(external, IpAddr::V4(_)) || !is_global(external) {
        return Err(format!(
            "the gateway reports {external} as its external address, which no member could dial"
        ));
    }
    if port == 0 {
        return Err("the gateway mapped port 0".into());
    }
    Ok(SocketAddr::new(external, port))
}

/// When to renew a lease of `granted` seconds: at half of it, not sooner than
/// [`MIN_RENEW`] and not later than half of the lease asked for (a gateway granting
/// years is still asked again, and its answer checked).
pub fn renew_after(granted: u32) -> Duration {
    let asked = Duration::from_secs(u64::from(LEASE_SECS)) / 2;
    (Duration::from_secs(u64::from(granted)) / 2).clamp(MIN_RENEW, asked)
}

/// Shortest lease believed: a mapping that lapses within a minute would be advertised
/// dead most of the time.
pub const MIN_LEASE_SECS: u32 = 60;

/// The default route's gateway from the text of `/proc/net/route` (destination 0,
/// mask 0, the gateway flag set; addresses in the kernel's little-endian hex).
pub fn default_gateway(proc_net_route: &str) -> Option<Ipv4Addr> {
    proc_net_route.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, gw, flags, mask) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(7)?);
        let flags = u16::from_str_radix(flags, 16).ok()?;
        const RTF_UP: u16 = 0x1;
        const RTF_GATEWAY: u16 = 0x2;
        if *dest != "00000000" || *mask != "00000000" || flags & (RTF_UP | RTF_GATEWAY) != RTF_UP | RTF_GATEWAY {
            return None;
        }
        let gw = u32::from_str_radix(gw, 16).ok()?;
        // The kernel prints the address as the u32 it holds, bytes in network order.
        Some(Ipv4Addr::from(gw.to_ne_bytes()))
    })
}

/// A mapping held on the gateway.
enum Held {
    Upnp {
        gateway: Box<igd_next::Gateway>,
        local: SocketAddr,
        external_port: u16,
    },
    NatPmp(Box<crab_nat::PortMapping>),
}

impl Held {
    /// The protocol that made it.
    fn protocol(&self) -> Protocol {
        match self {
            Held::Upnp { .. } => Protocol::Upnp,
            Held::NatPmp(_) => Protocol::NatPmp,
        }
    }

    /// The gateway that holds it.
    fn gateway_ip(&self) -> Ipv4Addr {
        let ip = match self {
            Held::Upnp { gateway, .. } => gateway.addr.ip(),
            Held::NatPmp(m) => IpAddr::from(m.gateway()),
        };
        match ip {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        }
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Held::Upnp { external_port, .. } => write!(f, "Upnp({external_port})"),
            Held::NatPmp(m) => write!(f, "NatPmp({})", m.external_port()),
        }
    }
}

/// Whether a blocking gateway request is running (one that timed out may still be).
static BUSY: AtomicBool = AtomicBool::new(false);

/// Clears [`BUSY`] when the blocking request ends, however late.
struct Busy;

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::Release);
    }
}

/// Runs a blocking gateway request on the blocking pool, within [`STEP_TIMEOUT`], one
/// at a time: a gateway that never answers (igd-next's HTTP has no deadline of its
/// own) holds one blocked thread, never more, and never a stuck node.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    if BUSY.swap(true, Ordering::AcqRel) {
        return Err("an earlier request to the gateway has not ended".into());
    }
    let busy = Busy;
    let call = move || {
        let _busy = busy;
        f()
    };
    tokio::time::timeout(STEP_TIMEOUT, tokio::task::spawn_blocking(call))
        .await
        .map_err(|_| "the gateway did not answer in time".to_string())?
        .map_err(|e| e.to_string())?
}

/// Maps `port` to `lan:port` with UPnP IGD: the same external port when free, else any.
async fn map_upnp(lan: Ipv4Addr, port: u16, gateway_ip: Ipv4Addr) -> Result<(Held, SocketAddr, u32), String> {
    let gateway = blocking(move || {
        let opts = igd_next::SearchOptions {
            bind_addr: SocketAddr::new(IpAddr::V4(lan), 0),
            timeout: Some(Duration::from_secs(2)),
            single_search_timeout: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        igd_next::search_gateway(opts).map_err(|e| format!("UPnP: {e}"))
    })
    .await?;
    if gateway.addr.ip() != IpAddr::V4(gateway_ip) {
        return Err(format!(
            "UPnP: a device at {} answered, not the default gateway {gateway_ip}",
            gateway.addr.ip()
        ));
    }
    let local = SocketAddr::new(IpAddr::V4(lan), port);
    let g = gateway.clone();
    let (ip, external_port) = blocking(move || {
        let ip = g.get_external_ip().map_err(|e| format!("UPnP: {e}"))?;
        let proto = igd_next::PortMappingProtocol::TCP;
        let port = match g.add_port(proto, port, local, LEASE_SECS, DESCRIPTION) {
            Ok(()) => port,
            Err(_) => g
                .add_any_port(proto, local, LEASE_SECS, DESCRIPTION)
                .map_err(|e| format!("UPnP: {e}"))?,
        };
        Ok((ip, port))
    })
    .await?;
    let held = Held::Upnp {
        gateway: Box::new(gateway),
        local,
        external_port,
    };
    match believable(ip, external_port, LEASE_SECS) {
        Ok(addr) => Ok((held, addr, LEASE_SECS)),
        Err(e) => {
            remove(held).await;
            Err(format!("UPnP: {e}"))
        }
    }
}

/// How long crab_nat waits for the gateway: 250 ms, doubling, two retries.
const TIMEOUTS: crab_nat::TimeoutConfig = crab_nat::TimeoutConfig {
    initial_timeout: Duration::from_millis(250),
    max_retries: 2,
    max_retry_timeout: Some(Duration::from_secs(1)),
};

/// Maps `port` with PCP, else NAT-PMP.
async fn map_natpmp(lan: Ipv4Addr, port: u16, gateway_ip: Ipv4Addr) -> Result<(Held, SocketAddr, u32), String> {
    let options = crab_nat::PortMappingOptions {
        external_port: NonZeroU16::new(port),
        lifetime_seconds: Some(LEASE_SECS),
        timeout_config: Some(TIMEOUTS),
    };
    let internal = NonZeroU16::new(port).ok_or("cannot map port 0")?;
    let gateway = crab_nat::GatewayAddress::IpV4(gateway_ip);
    let mapping = tokio::time::timeout(
        STEP_TIMEOUT,
        crab_nat::PortMapping::new(
            gateway,
            IpAddr::V4(lan),
            crab_nat::InternetProtocol::Tcp,
            internal,
            options,
        ),
    )
    .await
    .map_err(|_| "NAT-PMP: the gateway did not answer in time".to_string())?
    .map_err(|e| format!("NAT-PMP/PCP: {e}"))?;
    let external_ip = match natpmp_external(&mapping, gateway_ip).await {
        Ok(ip) => ip,
        Err(e) => {
            remove(Held::NatPmp(Box::new(mapping))).await;
            return Err(e);
        }
    };
    let (external_port, lifetime) = (mapping.external_port().get(), mapping.lifetime());
    let held = Held::NatPmp(Box::new(mapping));
    match believable(external_ip, external_port, lifetime) {
        Ok(addr) => Ok((held, addr, lifetime)),
        Err(e) => {
            remove(held).await;
            Err(format!("NAT-PMP: {e}"))
        }
    }
}

/// Maps with UPnP, else NAT-PMP/PCP; says what went wrong with each when neither did.
async fn map(candidates: &[Ipv4Addr], port: u16) -> Result<(Held, SocketAddr, u32, Protocol), String> {
    let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let gateway = default_gateway(&route).ok_or("no default gateway")?;
    let lan = choose_lan(candidates, local_towards(gateway)).ok_or("no private address to map")?;
    let upnp = match map_upnp(lan, port, gateway).await {
        Ok((held, addr, lease)) => return Ok((held, addr, lease, Protocol::Upnp)),
        Err(e) => e,
    };
    match map_natpmp(lan, port, gateway).await {
        Ok((held, addr, lease)) => Ok((held, addr, lease, Protocol::NatPmp)),
        Err(e) => Err(format!("{upnp}; {e}")),
    }
}

/// Renews a mapping; the address it maps now (a gateway may move it) and its lease in
/// seconds, each checked as a new mapping's are.
async fn renew(held: &mut Held, gateway_ip: Ipv4Addr) -> Result<(SocketAddr, u32), String> {
    match held {
        Held::Upnp {
            gateway,
            local,
            external_port,
        } => {
            let (g, local, port) = ((**gateway).clone(), *local, *external_port);
            let ip = blocking(move || {
                g.add_port(igd_next::PortMappingProtocol::TCP, port, local, LEASE_SECS, DESCRIPTION)
                    .map_err(|e| format!("UPnP: {e}"))?;
                g.get_external_ip().map_err(|e| format!("UPnP: {e}"))
            })
            .await?;
            Ok((
                believable(ip, port, LEASE_SECS).map_err(|e| format!("UPnP: {e}"))?,
                LEASE_SECS,
            ))
        }
        Held::NatPmp(m) => {
            tokio::time::timeout(STEP_TIMEOUT, m.renew())
                .await
                .map_err(|_| "NAT-PMP: the gateway did not answer in time".to_string())?
                .map_err(|e| format!("NAT-PMP/PCP: {e}"))?;
            let ip = natpmp_external(m, gateway_ip).await?;
            let addr = believable(ip, m.external_port().get(), m.lifetime()).map_err(|e| format!("NAT-PMP: {e}"))?;
            Ok((addr, m.lifetime()))
        }
    }
}

/// The external address of a PCP or NAT-PMP mapping.
async fn natpmp_external(m: &crab_nat::PortMapping, gateway_ip: Ipv4Addr) -> Result<IpAddr, String> {
    match m.mapping_type() {
        crab_nat::PortMappingType::Pcp { external_ip, .. } => Ok(external_ip),
        crab_nat::PortMappingType::NatPmp => {
            let gateway = crab_nat::GatewayAddress::IpV4(gateway_ip);
            let ip = tokio::time::timeout(
                STEP_TIMEOUT,
                crab_nat::natpmp::external_address(gateway, Some(TIMEOUTS)),
            )
            .await
            .map_err(|_| "NAT-PMP: no external address in time".to_string())?
            .map_err(|e| format!("NAT-PMP: {e}"))?;
            Ok(IpAddr::V4(ip))
        }
    }
}

/// Removes a mapping, within [`REMOVE_TIMEOUT`].
async fn remove(held: Held) {
    let done = match held {
        Held::Upnp {
            gateway, external_port, ..
        } => {
            let g = *gateway;
            tokio::time::timeout(
                REMOVE_TIMEOUT,
                tokio::task::spawn_blocking(move || {
                    g.remove_port(igd_next::PortMappingProtocol::TCP, external_port)
                        .map_err(|e| e.to_string())
                }),
            )
            .await
            .map_err(|_| "no answer in time".to_string())
            .and_then(|r| r.map_err(|e| e.to_string())?)
        }
        Held::NatPmp(m) => tokio::time::timeout(REMOVE_TIMEOUT, m.try_drop())
            .await
            .map_err(|_| "no answer in time".to_string())
            .and_then(|r| r.map_err(|(e, _)| e.to_string())),
    };
    match done {
        Ok(()) => tracing::info!("removed the port mapping"),
        Err(e) => tracing::info!("cannot remove the port mapping (it lapses with its lease): {e}"),
    }
}

/// Keeps a mapping of `lan:port` for the node: maps, tells the node the address
/// (`Input::Mapped`), renews, maps again after a failure, and removes it when `stop`
/// fires (answering on the channel it carries).
pub async fn run(
    candidates: Vec<Ipv4Addr>,
    port: u16,
    events: mpsc::Sender<ConnEvent>,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let tell = |mapped: Option<(SocketAddr, Protocol)>| {
        let events = events.clone();
        async move {
            let mapped = mapped.map(|(addr, how): (SocketAddr, Protocol)| (addr, how.name()));
            let _ = events.send(ConnEvent::Core(Input::Mapped(mapped))).await;
        }
    };
    let mut held: Option<Held> = None;
    let mut current: Option<SocketAddr> = None;
    let mut wait = Duration::ZERO;
    loop {
        let sleep = tokio::time::sleep(wait);
        tokio::select! {
            _ = sleep => {}
            done = &mut stop => {
                if let Some(h) = held.take() {
                    remove(h).await;
                }
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
        let mapped = match held.as_mut() {
            // A stop while the gateway is asked is obeyed at once.
            None => tokio::select! {
                r = map(&candidates, port) => Ok(r),
                done = &mut stop => Err(done),
            },
            Some(_) => Ok(Err(String::new())),
        };
        let mapped = match mapped {
            Ok(r) => r,
            Err(done) => {
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        };
        match held.as_mut() {
            None => match mapped {
                Ok((h, addr, lease, how)) => {
                    tracing::info!("mapped {addr} to port {port} with {} for {lease} s", how.name());
                    held = Some(h);
                    current = Some(addr);
                    wait = renew_after(lease);
                    tell(Some((addr, how))).await;
                }
                Err(e) => {
                    tracing::info!("no port mapping for port {port}: {e}");
                    wait = RETRY_AFTER;
                }
            },
            Some(h) => {
                let ip = h.gateway_ip();
                let renewed = renew(h, ip).await;
                match renewed {
                    Ok((addr, lease)) => {
                        wait = renew_after(lease);
                        // The gateway may have moved it.
                        if Some(addr) != current {
                            current = Some(addr);
                            tell(Some((addr, h.protocol()))).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!("the port mapping could not be renewed: {e}");
                        held = None;
                        current = None;
                        wait = Duration::ZERO;
                        tell(None).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_a_member_with_private_addresses_only_maps_and_only_when_allowed() {
        let lan = addrs(&["192.168.1.2:7400", "127.0.0.1:7400", "10.0.0.2:7400"]);
        let (a, b) = (Ipv4Addr::new(192, 168, 1, 2), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(wanted(&lan, false, false), [a, b]);
        assert!(wanted(&lan, false, true).is_empty(), "--no-port-mapping");
        assert!(wanted(&lan, true, false).is_empty(), "--advertise given");
        assert!(wanted(&addrs(&["11.11.0.2:7400", "192.168.1.2:7400"]), false, false).is_empty());
        assert!(wanted(&addrs(&["127.0.0.1:7400"]), false, false).is_empty());
        assert!(wanted(&addrs(&["[fd00::2]:7400", "junk"]), false, false).is_empty());
        // A dual-stack host with a global IPv6 address is still mapped for IPv4 peers.
        assert_eq!(
            wanted(&addrs(&["192.168.1.2:7400", "[2001:470::2]:7400"]), false, false),
            [a]
        );
        // The address the gateway is reached from, when the node listens there.
        assert_eq!(choose_lan(&[a, b], Some(b)), Some(b));
        // Red-team finding: a gateway reached from an address the node does not listen
        // on got a mapping to another one, advertised dead.
        assert_eq!(choose_lan(&[a, b], Some(Ipv4Addr::new(172, 17, 0, 1))), None);
        assert_eq!(choose_lan(&[a, b], None), Some(a));
        assert_eq!(choose_lan(&[], Some(b)), None);
    }

    #[test]
    fn a_gateway_is_believed_only_for_a_global_address_and_a_port() {
        let ok = believable("11.11.0.2".parse().unwrap(), 7400, 3600);
        assert_eq!(ok, Ok("11.11.0.2:7400".parse().unwrap()));
        for lie in [
            "192.168.1.1",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "0.0.0.0",
            "169.254.1.1",
            "192.0.2.1",
            "203.0.113.9",
            "198.18.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "2001:db8::1",
        ] {
            assert!(believable(lie.parse().unwrap(), 7400, 3600).is_err(), "{lie} believed");
        }
        assert!(believable("11.11.0.2".parse().unwrap(), 0, 3600).is_err());
        // Red-team finding: a lease of seconds (or 0, which asks for deletion when
        // renewed) made the mapping flap; under a minute is not believed.
        assert!(believable("11.11.0.2".parse().unwrap(), 7400, 59).is_err());
        assert!(is_global("2a00:1450::1".parse().unwrap()));
        assert!(!is_global("fe80::1".parse().unwrap()));
        assert!(!is_global("fd00::1".parse().unwrap()));
    }

    #[test]
    fn renewal_at_half_the_lease_but_not_in_a_loop() {
        assert_eq!(renew_after(3600), Duration::from_secs(1800));
        assert_eq!(renew_after(0), MIN_RENEW);
        assert_eq!(renew_after(10), MIN_RENEW);
        // Red-team finding: a lease of years meant no renewal, so no check, for years.
        assert_eq!(renew_after(u32::MAX), Duration::from_secs(1800));
    }

    #[test]
    fn the_default_gateway_from_proc_net_route() {
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_gateway(route), Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert_eq!(default_gateway("Iface\tDestination\n"), None);
        assert_eq!(default_gateway("header\neth0 00000000 zz 0003 0 0 0 00000000\n"), None);
        // A default route without the gateway flag (on-link) names no gateway.
        assert_eq!(
            default_gateway("h\neth0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\n"),
            None
        );
    }
}
