//! A small network of hosts on one machine: each host is a network namespace with its
//! own address, as if it were a separate machine. Hosts hang off two bridges (two
//! "switches") joined by one trunk link; taking the trunk down splits the network in
//! two halves, bringing it up heals it. Everything lives in namespaces this process
//! made, removed when the [`Net`] is dropped; no traffic leaves them.
//!
//! Needs root and iproute2's `ip` and `tc`; [`Net::available`] says why not when it cannot run.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One host: a namespace and its address on the shared subnet.
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name (for `ip netns exec`).
    pub ns: String,
    /// Its IPv4 address.
    pub ip: String,
}

impl Host {
    /// `cmd` made to run inside this host's namespace (program, arguments and
    /// environment carried over).
    pub fn command(&self, cmd: &Command) -> Command {
        let mut wrapped = Command::new("ip");
        wrapped.args(["netns", "exec", &self.ns]).arg(cmd.get_program());
        wrapped.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        wrapped
    }
}

/// The network: a switch namespace holding bridges `a` and `b` and the trunk between
/// them, and the hosts, the first half on `a`, the rest on `b`.
#[derive(Debug)]
pub struct Net {
    switch: String,
    /// The hosts, in order.
    pub hosts: Vec<Host>,
}

/// Runs `ip args...`, panicking with its stderr on failure.
#[track_caller]
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Net {
    /// Why namespaces cannot be made here, if they cannot.
    pub fn available() -> Result<(), String> {
        if !crate::is_root() {
            return Err("network namespaces need root (CI runs as root)".into());
        }
        for tool in ["ip", "tc"] {
            if crate::find_program(tool).is_none() {
                return Err(format!("`{tool}` not found: install iproute2 (scripts/test does)"));
            }
        }
        Ok(())
    }

    /// Builds `n` hosts on subnet 10.77.0.0/24 (private to these namespaces).
    pub fn new(n: usize) -> Net {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let tag = format!("pg{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let switch = format!("{tag}-sw");
        // Made before anything can fail, so a failed setup is still cleaned up.
        let mut net = Net {
            switch: switch.clone(),
            hosts: Vec::new(),
        };
        ip(&["netns", "add", &switch]);
        let sw = |args: &[&str]| {
            let mut all = vec!["-n", switch.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        };
        for br in ["bra", "brb"] {
            sw(&["link", "add", br, "type", "bridge"]);
            sw(&["link", "set", br, "up"]);
        }
        sw(&["link", "add", "trunka", "type", "veth", "peer", "name", "trunkb"]);
        sw(&["link", "set", "trunka", "master", "bra", "up"]);
        sw(&["link", "set", "trunkb", "master", "brb", "up"]);
        for i in 0..n {
            let host = Host {
                ns: format!("{tag}-h{i}"),
                ip: format!("10.77.0.{}", i + 1),
            };
            ip(&["netns", "add", &host.ns]);
            net.hosts.push(host.clone());
            let port = format!("port{i}");
            let bridge = if i < n / 2 { "bra" } else { "brb" };
            sw(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host.ns,
            ]);
            sw(&["link", "set", &port, "master", bridge, "up"]);
            let h = |args: &[&str]| {
                let mut all = vec!["-n", host.ns.as_str()];
                all.extend_from_slice(args);
                ip(&all);
            };
            h(&["addr", "add", &format!("{}/24", host.ip), "dev", "eth0"]);
            h(&["link", "set", "eth0", "up"]);
            h(&["link", "set", "lo", "up"]);
        }
        net
    }

    /// Moves host `i` to the address `new_ip` (its old one is gone), as a laptop moved
    /// to another network is.
    pub fn renumber(&mut self, i: usize, new_ip: &str) {
        let host = &mut self.hosts[i];
        ip(&["-n", &host.ns, "addr", "flush", "dev", "eth0"]);
        ip(&["-n", &host.ns, "addr", "add", &format!("{new_ip}/24"), "dev", "eth0"]);
        host.ip = new_ip.to_string();
    }

    /// Hosts on switch `a` (the first half).
    pub fn half_a(&self) -> std::ops::Range<usize> {
        0..self.hosts.len() / 2
    }

    /// Hosts on switch `b`.
    pub fn half_b(&self) -> std::ops::Range<usize> {
        self.hosts.len() / 2..self.hosts.len()
    }

    /// Caps the trunk between the halves at `rate` (tc's notation, e.g. `1mbit`) in
    /// both directions with a token bucket (tc tbf): a slow link between two sites.
    pub fn slow_trunk(&self, rate: &str) {
        for dev in ["trunka", "trunkb"] {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.switch,
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                ])
                .args(["rate", rate, "burst", "32kbit", "latency", "400ms"])
                .output()
                .unwrap_or_else(|e| panic!("cannot run tc: {e}"));
            assert!(
                out.status.success(),
                "tc tbf on {dev} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }

    /// Takes the trunk down: the halves can no longer reach each other.
    pub fn split(&self) {
        ip(&["-n", &self.switch, "link", "set", "trunka", "down"]);
    }

    /// Brings the trunk back up.
    pub fn heal(&self) {
        ip(&["-n", &self.switch, "link", "set", "trunka", "up"]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its interfaces (and the veth peers with them).
        for ns in self.hosts.iter().map(|h| h.ns.as_str()).chain([self.switch.as_str()]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
