//! A small internet on one machine, for reach tests: an "internet" switch with public
//! hosts on it, and home routers, each a network namespace with an nftables masquerade
//! NAT between its WAN side on the internet and a private LAN with one host behind it.
//! Everything lives in namespaces this process made, removed when the [`World`] is
//! dropped; no traffic leaves them.
//!
//! The internet prefix is 11.11.0.0/24: outside the private, reserved and documentation
//! ranges (miniupnpd refuses a WAN address in those, see `../shared/STACK.md`), and
//! reachable only inside these namespaces, which have no route to the machine's own
//! interfaces. Public hosts also have an IPv6 address in the ULA prefix
//! `fd11:11::/64` ([`World::ipv6_of`]), besides the link-local one every interface
//! gets. Needs root, iproute2 and nftables; [`World::available`] says why not.
//!
//! Routers of the kinds [`Nat::Upnp`] and [`Nat::NatPmp`] run a real gateway daemon,
//! miniupnpd (`scripts/test` installs it), inside their namespace, listening on the LAN
//! side only.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::netns::Host;

/// What kind of home router: how it translates addresses, and whether it maps ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Port-preserving masquerade, as most home routers (endpoint-independent mapping
    /// when the port is free).
    Masquerade,
    /// `masquerade random,fully-random`: a new random port per connection (a
    /// symmetric NAT, where hole punching must fail).
    Random,
    /// Masquerade, and miniupnpd answering UPnP IGD and NAT-PMP/PCP on the LAN.
    Upnp,
    /// Masquerade, and miniupnpd answering NAT-PMP/PCP only.
    NatPmp,
}

/// A home router: its namespace and WAN address, and the host on its LAN.
#[derive(Debug, Clone)]
pub struct Router {
    /// The router's namespace.
    pub ns: String,
    /// Its address on the internet.
    pub wan_ip: String,
    /// The host behind it (its address is private).
    pub host: Host,
}

/// The world: the internet switch, public hosts, and routers with a host each.
#[derive(Debug)]
pub struct World {
    /// Every namespace made, the switch first.
    namespaces: Vec<String>,
    /// Hosts with an address on the internet.
    pub public: Vec<Host>,
    /// Home routers, each with one host behind it.
    pub routers: Vec<Router>,
    /// The gateway daemons the routers run, stopped when the world is dropped.
    daemons: Vec<Child>,
    /// Their configuration files.
    dir: tempfile::TempDir,
}

/// Runs `program args...`, panicking with its stderr on failure.
#[track_caller]
fn run(program: &str, args: &[&str], stdin: Option<&str>) {
    let mut cmd = Command::new(program);
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("cannot feed {program}: {e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `ip -n NS args...`.
#[track_caller]
fn ip_in(ns: &str, args: &[&str]) {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all, None);
}

impl World {
    /// Why the world cannot be made here, if it cannot.
    pub fn available() -> Result<(), String> {
        if !crate::is_root() {
            return Err("network namespaces and NAT need root (CI runs as root)".into());
        }
        for (tool, package) in [
            ("ip", "iproute2"),
            ("nft", "nftables"),
            ("miniupnpd", "miniupnpd-nftables"),
        ] {
            if crate::find_program(tool).is_none() {
                return Err(format!("`{tool}` not found: install {package} (scripts/test does)"));
            }
        }
        Ok(())
    }

    /// Builds `public` hosts on the internet and one router per entry of `routers`,
    /// each with a host behind it.
    pub fn new(public: usize, routers: &[Nat]) -> World {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let tag = format!("pn{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let switch = format!("{tag}-net");
        // Recorded before anything can fail, so a failed setup is still cleaned up.
        let mut world = World {
            namespaces: vec![switch.clone()],
            public: Vec::new(),
            routers: Vec::new(),
            daemons: Vec::new(),
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        run("ip", &["netns", "add", &switch], None);
        ip_in(&switch, &["link", "add", "br0", "type", "bridge"]);
        ip_in(&switch, &["link", "set", "br0", "up"]);
        let mut next_wan = 1;
        // Plugs `ns` into the internet switch as `dev` (the switch's end is `port`) and
        // gives it the next internet address.
        let mut plug = |ns: &str, dev: &str, port: &str| -> String {
            let addr = format!("11.11.0.{next_wan}");
            next_wan += 1;
            ip_in(
                &switch,
                &["link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns],
            );
            ip_in(&switch, &["link", "set", port, "master", "br0", "up"]);
            ip_in(ns, &["addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip_in(ns, &["link", "set", dev, "up"]);
            ip_in(ns, &["link", "set", "lo", "up"]);
            addr
        };
        for i in 0..public {
            let ns = format!("{tag}-p{i}");
            run("ip", &["netns", "add", &ns], None);
            world.namespaces.push(ns.clone());
            let ip = plug(&ns, "eth0", &format!("pub{i}"));
            let host = Host { ns, ip };
            // No duplicate address detection: the address works at once.
            let v6 = format!("{}/64", World::ipv6_of(&host));
            ip_in(&host.ns, &["-6", "addr", "add", &v6, "dev", "eth0", "nodad"]);
            world.public.push(host);
        }
        for (i, nat) in routers.iter().enumerate() {
            let router = format!("{tag}-r{i}");
            let host_ns = format!("{tag}-h{i}");
            for ns in [&router, &host_ns] {
                run("ip", &["netns", "add", ns], None);
                world.namespaces.push(ns.clone());
            }
            let wan_ip = plug(&router, "wan", &format!("wan{i}"));
            // The LAN: one veth pair between the router and its host.
            let (gw, host_ip) = (format!("192.168.{}.1", i + 1), format!("192.168.{}.2", i + 1));
            ip_in(
                &router,
                &[
                    "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", &host_ns,
                ],
            );
            ip_in(&router, &["addr", "add", &format!("{gw}/24"), "dev", "lan"]);
            ip_in(&router, &["link", "set", "lan", "up"]);
            ip_in(&host_ns, &["addr", "add", &format!("{host_ip}/24"), "dev", "eth0"]);
            ip_in(&host_ns, &["link", "set", "eth0", "up"]);
            ip_in(&host_ns, &["link", "set", "lo", "up"]);
            ip_in(&host_ns, &["route", "add", "default", "via", &gw]);
            // Through /proc rather than sysctl(8), which the machine may lack.
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &router,
                    "sh",
                    "-c",
                    "echo 1 > /proc/sys/net/ipv4/ip_forward",
                ],
                None,
            );
            let masquerade = match nat {
                Nat::Random => "masquerade random,fully-random",
                _ => "masquerade",
            };
            // A home router: the LAN may go out, answers come back, nothing else comes in
            // (but what miniupnpd maps, through the chains it fills: ../shared/STACK.md);
            // a connection to the router itself from outside is dropped unanswered, as
            // most home routers do (not refused with a reset).
            let gateway = matches!(nat, Nat::Upnp | Nat::NatPmp);
            let rules = if gateway {
                format!(
                    "table inet filter {{\n\
                     chain forward {{ type filter hook forward priority 0; policy drop; jump miniupnpd; iifname \"lan\" accept; ct state established,related accept; }}\n\
                     chain input {{ type filter hook input priority 0; policy accept; iifname \"wan\" ct state new tcp flags syn drop; }}\n\
                     chain miniupnpd {{ }}\n\
                     chain prerouting {{ type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }}\n\
                     chain postrouting {{ type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; oifname \"wan\" {masquerade}; }}\n\
                     chain prerouting_miniupnpd {{ }}\n\
                     chain postrouting_miniupnpd {{ }}\n\
                     }}\n"
                )
            } else {
                format!(
                    "table inet filter {{\n\
                 chain forward {{\n\
                 type filter hook forward priority 0; policy drop;\n\
                 iifname \"lan\" accept\n\
                 ct state established,related accept\n\
                 }}\n\
                 chain input {{\n\
                 type filter hook input priority 0; policy accept;\n\
                 iifname \"wan\" ct state new tcp flags syn drop\n\
                 }}\n\
                 }}\n\
                 table ip nat {{\n\
                 chain postrouting {{\n\
                 type nat hook postrouting priority 100; policy accept;\n\
                 oifname \"wan\" {masquerade}\n\
                 }}\n\
                 }}\n"
                )
            };
            run("ip", &["netns", "exec", &router, "nft", "-f", "-"], Some(&rules));
            if gateway {
                let daemon = world.start_gateway(&router, i, *nat == Nat::Upnp);
                world.daemons.push(daemon);
            }
            world.routers.push(Router {
                ns: router,
                wan_ip,
                host: Host {
                    ns: host_ns,
                    ip: host_ip,
                },
            });
        }
        world
    }
}

impl World {
    /// A public host's IPv6 address (ULA): `fd11:11::N` for `11.11.0.N`.
    pub fn ipv6_of(host: &Host) -> String {
        let n = host.ip.rsplit('.').next().unwrap_or("0");
        format!("fd11:11::{n}")
    }

    /// Takes `host`'s IPv4 address away: it has IPv6 only from now on.
    pub fn ipv6_only(&self, host: &Host) {
        ip_in(&host.ns, &["-4", "addr", "flush", "dev", "eth0"]);
    }

    /// Takes `host`'s IPv6 addresses away (the link-local one too): it has IPv4 only.
    pub fn ipv4_only(&self, host: &Host) {
        ip_in(&host.ns, &["-6", "addr", "flush", "dev", "eth0"]);
    }

    /// Starts miniupnpd in router `ns` (number `i`), on its LAN side only, with UPnP IGD
    /// or not, NAT-PMP/PCP always; waits until it answers.
    // The child is returned to the world, whose Drop kills and waits for it.
    #[allow(clippy::zombie_processes)]
    fn start_gateway(&self, ns: &str, i: usize, upnp: bool) -> Child {
        let conf = self.dir.path().join(format!("miniupnpd-{i}.conf"));
        let pid = self.dir.path().join(format!("miniupnpd-{i}.pid"));
        let text = format!(
            "ext_ifname=wan\nlistening_ip=lan\nenable_upnp={}\nenable_natpmp=yes\nsecure_mode=no\n\
             uuid=00000000-0000-4000-8000-{:012x}\nallow 1024-65535 192.168.{}.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
            if upnp { "yes" } else { "no" },
            i + 1,
            i + 1
        );
        std::fs::write(&conf, text).expect("write the miniupnpd configuration");
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "miniupnpd", "-d", "-f"])
            .arg(&conf)
            .arg("-P")
            .arg(&pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start miniupnpd (scripts/test installs miniupnpd-nftables)");
        // Ready when it listens for NAT-PMP on the LAN side (UDP 5351).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "ss", "-uln"])
                .output()
                .expect("ss");
            if String::from_utf8_lossy(&out.stdout).contains(":5351") {
                return child;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("miniupnpd did not start in {ns}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The dnat rules miniupnpd holds in router `i` (what it mapped).
    pub fn mappings(&self, i: usize) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.routers[i].ns,
                "nft",
                "list",
                "chain",
                "inet",
                "filter",
                "prerouting_miniupnpd",
            ])
            .output()
            .expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        // Deleting a namespace deletes its interfaces (and the veth peers with them).
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
