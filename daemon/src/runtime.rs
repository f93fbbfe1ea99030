//! Changes to a running lab: ports attached and detached (`tapnet attach`, `tapnet
//! detach`), on the datapath thread, each applied whole or not at all. The lab file
//! stays the start state; [`Live::lab`] is the current one, which `show lab` prints as
//! a lab file.
//!
//! An attached port is checked the way `check` checks a file: the current lab is
//! written out with the new port after it and read back, so every rule of the lab
//! file (names and MACs unique, the address in the bridge's subnet and free, ...)
//! holds for it, with the same messages.

use std::net::Ipv4Addr;
use std::sync::Mutex;

use lab::Lab;
use serde_json::{json, Value};
use vswitch::{Datapath, Mac};

use crate::build;
use crate::namespaces::Namespaces;
use crate::teardown::Built;
use crate::Handles;

/// A port to attach, as `tapnet attach` sends it (JSON).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AttachSpec {
    pub bridge: String,
    pub name: String,
    /// A namespace name or path (`/proc/PID/ns/net`), as a lab file's `netns`.
    pub netns: Option<String>,
    /// A QEMU VM's socket instead, as a lab file's `qemu`.
    pub qemu: Option<String>,
    /// The device's name in the namespace (default `eth0`), as a lab file's `ifname`.
    pub ifname: Option<String>,
    /// "auto" (the lowest free address of the bridge's subnet) or "a.b.c.d/len".
    pub ip: Option<String>,
    /// "a:b::c/len", as a lab file's `ip6` (without it, on a subnet6 bridge, SLAAC).
    pub ip6: Option<String>,
    pub mac: Option<String>,
}

impl AttachSpec {
    /// The request's JSON.
    pub fn to_json(&self) -> Value {
        json!({"bridge": self.bridge, "name": self.name, "netns": self.netns,
               "qemu": self.qemu, "ifname": self.ifname, "ip": self.ip, "ip6": self.ip6, "mac": self.mac})
    }

    /// Reads a request's JSON; None if it is not one.
    pub fn from_json(v: &Value) -> Option<AttachSpec> {
        let opt = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        Some(AttachSpec {
            bridge: opt("bridge")?,
            name: opt("name")?,
            netns: opt("netns"),
            qemu: opt("qemu"),
            ifname: opt("ifname"),
            ip: opt("ip"),
            ip6: opt("ip6"),
            mac: opt("mac"),
        })
    }
}

/// What the datapath thread keeps to change the running lab.
pub(crate) struct Live<'a> {
    /// The lab as it is now.
    pub lab: Lab,
    pub built: &'a mut Built,
    pub namespaces: &'a Mutex<Namespaces>,
    pub handles: Handles,
    /// Ports built so far: names each new port's TAP while it is made.
    pub made: usize,
    /// The etcd client, told of every port attached or detached.
    pub store: Option<&'a crate::etcd::StoreClient>,
}

impl Live<'_> {
    /// `attach`: checks the port against the current lab, builds it, and makes it part
    /// of the lab; `{"attached": NAME, "ip": .., "mac": ..}` or `{"error": ..}`, with
    /// nothing changed on an error.
    pub fn attach(&mut self, dp: &mut Datapath, spec: &AttachSpec) -> Value {
        let claimed = self.store_claims(dp, &spec.bridge);
        let next = match self.with_port(spec, &claimed) {
            Ok(lab) => lab,
            Err(e) => return json!({"error": e}),
        };
        let port = next.ports.last().expect("just added").clone();
        // Another host of the lab has it (etcd): two containers of one VNI must not
        // share an address or a MAC.
        if let Some((ip, mac, host)) = claimed
            .iter()
            .find(|(ip, mac, _)| port.ip.is_some_and(|(a, _)| a == *ip) || mac.0 == port.mac)
        {
            return json!({"error": format!(
                "{} is registered in etcd by host {host} (ip {ip}, mac {mac}) on this VNI: choose another address",
                port.ip.map_or_else(|| Mac(port.mac).to_string(), |(a, _)| a.to_string())
            )});
        }
        let refused = crate::refused_here(&next);
        if let Some(e) = refused.first() {
            return json!({"error": e.message});
        }
        let built = {
            let mut nss = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
            let made = build::add_port(&next, &port, self.made, dp, &mut nss, self.built);
            nss.built();
            made
        };
        self.made += 1;
        if let Err(e) = built {
            let mut nss = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
            nss.forget_port(&port.name);
            // A namespace made for it goes again: a refused attach changes nothing.
            if let Some(ns) = &port.netns {
                if !self.lab.ports.iter().any(|p| p.netns.as_ref() == Some(ns)) {
                    nss.forget_netns(ns);
                    self.built.remove_netns(ns);
                }
            }
            return json!({"error": format!("{e:#}")});
        }
        if let Some(id) = dp.port_by_name(&port.name) {
            // The ports already there may no longer send from or advertise its
            // addresses: its ip6, and its link-local one.
            let bridge = dp.port(id).expect("just added").info.bridge;
            let lla = vswitch::wire::icmpv6::link_local(Mac(port.mac));
            for ip6 in port.ip6.map(|(a, _)| a).into_iter().chain([lla]) {
                dp.guards_take_ipv6(bridge, id, ip6, true);
            }
        }
        if let (Some(router), Some((ip6, _))) = (self.handles.router, port.ip6) {
            dp.handler_of_mut(router).router_mut().add_static_neighbor6(
                ip6,
                Mac(port.mac),
                std::time::Instant::now(),
            );
        }
        if let (Some(router), Some((ip, _)), true) =
            (self.handles.router, port.ip, port.spoof_check)
        {
            dp.handler_of_mut(router).router_mut().add_static_neighbor(
                ip,
                Mac(port.mac),
                std::time::Instant::now(),
            );
        }
        let gateway = next
            .bridges
            .iter()
            .find(|b| b.name == port.bridge)
            .and_then(|b| b.gateway);
        self.lab = next;
        self.reregister();
        json!({
            "attached": port.name,
            "bridge": port.bridge,
            "ifname": port.ifname,
            "gateway": gateway.map(|g| g.to_string()),
            "ip": port.ip.map(|(a, p)| format!("{a}/{p}")),
            "mac": Mac(port.mac).to_string(),
        })
    }

    /// `detach NAME`: takes a port attached at `up` or later out of the datapath and
    /// the lab, with its FDB entries, its neighbour entry and its service and host
    /// flows (masquerade, forwards: their host sockets closed); a
    /// namespace tapnet made for it alone goes too.
    pub fn detach(&mut self, dp: &mut Datapath, name: &str) -> Value {
        let Some(at) = self.lab.ports.iter().position(|p| p.name == name) else {
            if dp.port_by_name(name).is_some() {
                return json!({"error": format!("port `{name}` is internal (the router's leg or the VXLAN endpoint's on a bridge): it goes with its bridge, not by itself")});
            }
            return json!({"error": format!("no port `{name}` in lab `{}`", self.lab.name)});
        };
        // The lab must stay one `check` accepts: a forward's target is a port's address.
        let ip = self.lab.ports[at].ip.map(|(a, _)| std::net::IpAddr::V4(a));
        let ip6 = self.lab.ports[at].ip6.map(|(a, _)| std::net::IpAddr::V6(a));
        if let Some(f) = self
            .lab
            .forwards
            .iter()
            .find(|f| Some(f.to.ip()) == ip || Some(f.to.ip()) == ip6)
        {
            let proto = match f.proto {
                lab::Proto::Tcp => "tcp",
                lab::Proto::Udp => "udp",
            };
            return json!({"error": format!(
                "port `{name}` is the target of forward {proto} {}: remove the forward first (`tapnet forward rm {proto} {}`)",
                f.listen, f.listen
            )});
        }
        let port = self.lab.ports.remove(at);
        if let Some(id) = dp.port_by_name(name) {
            let bridge = dp.port(id).expect("found").info.bridge;
            let lla = vswitch::wire::icmpv6::link_local(Mac(port.mac));
            for ip6 in port.ip6.map(|(a, _)| a).into_iter().chain([lla]) {
                dp.guards_take_ipv6(bridge, id, ip6, false);
            }
            dp.remove_port(id);
        }
        let mut flows = 0;
        if let Some(router) = self.handles.router {
            // Its ip6, its SLAAC and link-local addresses: all at its MAC, and the
            // host proxy's flows from any of them.
            let handler = dp.handler_of_mut(router);
            let mut addrs6: Vec<std::net::Ipv6Addr> = handler
                .router()
                .neighbors6(std::time::Instant::now())
                .into_iter()
                .filter(|n| n.2 == Mac(port.mac))
                .map(|n| n.1)
                .collect();
            addrs6.extend(port.ip6.map(|(a, _)| a));
            addrs6.sort();
            addrs6.dedup();
            if let Some(proxy) = handler.proxy_mut() {
                flows += addrs6
                    .iter()
                    .map(|a| proxy.forget_container((*a).into()))
                    .sum::<usize>();
            }
            handler.router_mut().forget_mac6(Mac(port.mac));
        }
        flows += match (self.handles.router, port.ip) {
            (Some(router), Some((ip, _))) => dp.handler_of_mut(router).forget_host(ip),
            _ => 0,
        };
        // Its IPv6 service flows too (the neighbour entries went with its MAC above).
        if let (Some(router), Some((ip6, _))) = (self.handles.router, port.ip6) {
            flows += dp.handler_of_mut(router).router_mut().forget_host6(ip6);
        }
        let mut nss = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
        nss.forget_port(name);
        if let Some(ns) = &port.netns {
            if !self.lab.ports.iter().any(|p| p.netns.as_ref() == Some(ns)) {
                nss.forget_netns(ns);
                self.built.remove_netns(ns);
            }
        }
        drop(nss);
        self.reregister();
        json!({"detached": name, "flows_forgotten": flows})
    }

    /// Tells the store what this host has now.
    fn reregister(&self) {
        if let (Some(store), Some(own)) = (self.store, crate::etcd::Own::of(&self.lab)) {
            store.register(own);
        }
    }

    /// `forward add PROTO LISTEN TO`: checked as a lab file's `[[forward]]` would be,
    /// its port bound on the host, then served; `{"forward": ..}` or `{"error": ..}`,
    /// nothing changed on an error.
    pub fn add_forward(&mut self, dp: &mut Datapath, proto: &str, listen: &str, to: &str) -> Value {
        let Some(router) = self.handles.router else {
            return json!({"error": format!("lab `{}` has no router (no bridge with a subnet or subnet6): a forward needs one", self.lab.name)});
        };
        let mut text = lab::to_toml(&self.lab);
        let q = |v: &str| {
            let mut value = toml_edit::Value::from(v);
            value.decor_mut().clear();
            value.to_string()
        };
        text.push_str(&format!(
            "\n[[forward]]\nproto = {}\nlisten = {}\nto = {}\n",
            q(proto),
            q(listen),
            q(to)
        ));
        let next = match read_back(&self.lab.file, &text) {
            Ok(lab) => lab,
            Err(e) => return json!({"error": e}),
        };
        if let Some(e) = crate::refused_here(&next).first() {
            return json!({"error": e.message});
        }
        let f = next.forwards.last().expect("just added").clone();
        let rule = vrouter::proxy::ForwardRule {
            proto: match f.proto {
                lab::Proto::Tcp => vrouter::nat::PROTO_TCP,
                lab::Proto::Udp => vrouter::nat::PROTO_UDP,
            },
            listen: f.listen,
            to: f.to,
        };
        let Some(proxy) = dp.handler_of_mut(router).proxy_mut() else {
            return json!({"error": format!("lab `{}` has no host proxy: it started with neither masquerade (`[nat] masquerade = true`) nor a `[[forward]]`; start it with either, and forwards can be added at run time", self.lab.name)});
        };
        if let Err(e) = proxy.add_forward(rule) {
            return json!({"error": format!("forward listen {}: cannot bind it on this host: {e}", f.listen)});
        }
        dp.reattach(router.id);
        self.lab = next;
        json!({"forward": {"proto": proto, "listen": f.listen.to_string(), "to": f.to.to_string()}})
    }

    /// `service add NAME VIP PROTO BACKEND...`: checked as a lab file's `[[service]]`,
    /// then the router answers for its VIP.
    pub fn add_service(&mut self, dp: &mut Datapath, words: &[&str]) -> Value {
        let [name, vip, proto, backends @ ..] = words else {
            return json!({"error": "service add NAME VIP PROTO BACKEND..."});
        };
        let Some(router) = self.handles.router else {
            return json!({"error": format!("lab `{}` has no router (no bridge with a subnet or subnet6): a service needs one", self.lab.name)});
        };
        let q = |v: &str| {
            let mut value = toml_edit::Value::from(v);
            value.decor_mut().clear();
            value.to_string()
        };
        let list: Vec<String> = backends.iter().map(|b| q(b)).collect();
        let mut text = lab::to_toml(&self.lab);
        text.push_str(&format!(
            "\n[[service]]\nname = {}\nvip = {}\nproto = {}\nbackends = [{}]\n",
            q(name),
            q(vip),
            q(proto),
            list.join(", ")
        ));
        let next = match read_back(&self.lab.file, &text) {
            Ok(lab) => lab,
            Err(e) => return json!({"error": e}),
        };
        let s = next.services.last().expect("just added").clone();
        dp.handler_of_mut(router)
            .router_mut()
            .add_service(vrouter::Service {
                name: s.name.clone(),
                proto: match s.proto {
                    lab::Proto::Tcp => vrouter::nat::PROTO_TCP,
                    lab::Proto::Udp => vrouter::nat::PROTO_UDP,
                },
                vip: s.vip,
                backends: s.backends.clone(),
            });
        self.lab = next;
        json!({"service": s.name, "vip": s.vip.to_string()})
    }

    /// `service rm NAME`: its VIP stops answering, its flows are reset. A service a
    /// forward targets stays until the forward goes.
    pub fn remove_service(&mut self, dp: &mut Datapath, name: &str) -> Value {
        let Some(at) = self.lab.services.iter().position(|s| s.name == name) else {
            return json!({"error": format!("no service `{name}` in lab `{}`", self.lab.name)});
        };
        let vip = self.lab.services[at].vip;
        if let Some(f) = self.lab.forwards.iter().find(|f| f.to == vip) {
            return json!({"error": format!(
                "service `{name}` is the target of forward {}: remove the forward first",
                f.listen
            )});
        }
        self.lab.services.remove(at);
        if let Some(router) = self.handles.router {
            dp.handler_of_mut(router)
                .router_mut()
                .remove_service(name, std::time::Instant::now());
        }
        json!({"removed": name})
    }

    /// `forward rm PROTO LISTEN`: the forward's socket and connections close.
    pub fn remove_forward(&mut self, dp: &mut Datapath, proto: &str, listen: &str) -> Value {
        let found = self.lab.forwards.iter().position(|f| {
            let p = match f.proto {
                lab::Proto::Tcp => "tcp",
                lab::Proto::Udp => "udp",
            };
            p == proto
                && (f.listen.to_string() == listen
                    || format!("0.0.0.0:{listen}") == f.listen.to_string())
        });
        let Some(at) = found else {
            return json!({"error": format!("no forward {proto} {listen} in lab `{}`", self.lab.name)});
        };
        let f = self.lab.forwards.remove(at);
        let proto_num = match f.proto {
            lab::Proto::Tcp => vrouter::nat::PROTO_TCP,
            lab::Proto::Udp => vrouter::nat::PROTO_UDP,
        };
        if let Some(proxy) = self
            .handles
            .router
            .and_then(|r| dp.handler_of_mut(r).proxy_mut())
        {
            proxy.remove_forward(proto_num, f.listen);
        }
        json!({"removed": {"proto": proto, "listen": f.listen.to_string()}})
    }

    /// The current lab with the port of `spec` after its ports, checked as `check`
    /// checks a file; Err is the first problem, in a line.
    /// The addresses and MACs other hosts registered in etcd on `bridge`'s VNI, and
    /// who: none without a store or a VNI.
    fn store_claims(
        &self,
        dp: &Datapath,
        bridge: &str,
    ) -> Vec<(Ipv4Addr, Mac, std::net::SocketAddr)> {
        let vni = self
            .lab
            .bridges
            .iter()
            .find(|b| b.name == bridge)
            .and_then(|b| b.vni.map(|(v, _)| v));
        let (Some(vni), Some(vtep)) = (vni, self.handles.vtep) else {
            return Vec::new();
        };
        let vtep = dp.handler_of(vtep);
        vtep.segments()
            .iter()
            .filter(|seg| seg.vni == vni)
            .flat_map(|seg| {
                seg.registered
                    .iter()
                    .map(|(ip, (mac, peer))| (*ip, *mac, vtep.peers()[*peer].addr))
            })
            .collect()
    }

    fn with_port(
        &self,
        spec: &AttachSpec,
        claimed: &[(Ipv4Addr, Mac, std::net::SocketAddr)],
    ) -> Result<Lab, String> {
        // A lab file's port without either lives in tapnet's own namespace: useful in
        // a file, never what someone attaching a container or VM means.
        if spec.netns.is_none() && spec.qemu.is_none() {
            return Err(format!(
                "port `{}`: say where it goes: --netns NAME|PATH (a container) or --qemu PATH (a VM)",
                spec.name
            ));
        }
        let ip = match spec.ip.as_deref() {
            Some("auto") => Some(self.free_address(&spec.bridge, claimed)?),
            other => other.map(String::from),
        };
        // Written as the user would write it: only what was given.
        let mut text = lab::to_toml(&self.lab);
        text.push_str("\n[[port]]\n");
        let mut key = |k: &str, v: &str| {
            let mut value = toml_edit::Value::from(v);
            value.decor_mut().clear();
            text.push_str(&format!("{k} = {value}\n"));
        };
        key("name", &spec.name);
        key("bridge", &spec.bridge);
        if let Some(ns) = &spec.netns {
            key("netns", ns);
        }
        if let Some(q) = &spec.qemu {
            key("qemu", q);
        }
        if let Some(i) = &spec.ifname {
            key("ifname", i);
        }
        if let Some(ip) = &ip {
            key("ip", ip);
        }
        if let Some(ip6) = &spec.ip6 {
            key("ip6", ip6);
        }
        if let Some(mac) = &spec.mac {
            key("mac", mac);
        }
        read_back(&self.lab.file, &text)
    }

    /// The lowest address of `bridge`'s subnet that no port, gateway or service holds
    /// (never the network or broadcast address), with the subnet's prefix.
    fn free_address(
        &self,
        bridge: &str,
        claimed: &[(Ipv4Addr, Mac, std::net::SocketAddr)],
    ) -> Result<String, String> {
        let b = self
            .lab
            .bridges
            .iter()
            .find(|b| b.name == bridge)
            .ok_or_else(|| format!("no bridge `{bridge}` in lab `{}`", self.lab.name))?;
        let subnet = b
            .subnet
            .as_ref()
            .ok_or_else(|| format!("bridge `{bridge}` has no subnet: `--ip auto` needs one"))?;
        let taken: Vec<Ipv4Addr> = self
            .lab
            .ports
            .iter()
            .filter_map(|p| p.ip.map(|(a, _)| a))
            .chain(self.lab.bridges.iter().filter_map(|b| b.gateway))
            .chain(self.lab.services.iter().filter_map(|s| match s.vip.ip() {
                std::net::IpAddr::V4(a) => Some(a),
                std::net::IpAddr::V6(_) => None,
            }))
            // Other hosts' containers on this VNI (etcd).
            .chain(claimed.iter().map(|(ip, _, _)| *ip))
            .collect();
        let base = u32::from(subnet.addr);
        let size = 1u64 << (32 - u32::from(subnet.prefix));
        (1..size.saturating_sub(1))
            .map(|i| Ipv4Addr::from(base + i as u32))
            .find(|a| !taken.contains(a))
            .map(|a| format!("{a}/{}", subnet.prefix))
            .ok_or_else(|| format!("bridge `{bridge}` has no free address left"))
    }
}

/// Reads back the running lab written out with a change after it: the lab, or the
/// first refusal. Its lines are the generated text's, not the user's file's: a
/// message pointing at one says "in the running lab" instead.
fn read_back(file: &str, text: &str) -> Result<Lab, String> {
    lab::parse(file, text).map_err(|errors| {
        errors
            .first()
            .map_or_else(|| "refused".to_string(), |e| without_lines(&e.message))
    })
}

/// `... (first defined on line 12)` -> `... (already in the running lab)`, and
/// `by the [[forward]] on line 30` -> `by a [[forward]] of the running lab`.
fn without_lines(message: &str) -> String {
    let mut out = message.to_string();
    for (before, instead) in [
        (" (first defined on line ", " (already in the running lab)"),
        (
            " by the [[forward]] on line ",
            " by a [[forward]] of the running lab",
        ),
    ] {
        if let Some(at) = out.find(before) {
            let rest = &out[at + before.len()..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            let tail = rest[digits..].trim_start_matches(')').to_string();
            out = format!("{}{instead}{tail}", &out[..at]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn refusals_name_no_line_of_the_generated_text() {
        assert_eq!(
            without_lines("duplicate port name `p` (first defined on line 6)"),
            "duplicate port name `p` (already in the running lab)"
        );
        assert_eq!(
            without_lines("tcp port 8080 is already forwarded by the [[forward]] on line 10"),
            "tcp port 8080 is already forwarded by a [[forward]] of the running lab"
        );
        assert_eq!(without_lines("no bridge `x`"), "no bridge `x`");
    }

    use super::*;

    #[test]
    fn attach_requests_read_back() {
        let spec = AttachSpec {
            bridge: "br0".into(),
            name: "api".into(),
            netns: Some("/proc/1/ns/net".into()),
            qemu: None,
            ifname: None,
            ip: Some("auto".into()),
            ip6: Some("fd00::3/64".into()),
            mac: None,
        };
        assert_eq!(AttachSpec::from_json(&spec.to_json()), Some(spec));
        assert_eq!(AttachSpec::from_json(&json!({"name": "x"})), None);
    }
}
