//! Routes: longest-prefix match over IPv4 prefixes. Today every route is a bridge's
//! connected subnet; the table does not assume so.

use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub network: Ipv4Addr,
    pub prefix: u8,
    /// The router interface the route leaves by.
    pub iface: usize,
    /// `None` for a connected route (the destination itself is the next hop).
    pub gateway: Option<Ipv4Addr>,
}

pub fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32))
    }
}

impl Route {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }
}

#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// Longest prefixes first, so the first match is the longest.
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn add(&mut self, route: Route) {
        let route = Route {
            network: Ipv4Addr::from(u32::from(route.network) & mask(route.prefix)),
            ..route
        };
        let at = self.routes.partition_point(|r| r.prefix >= route.prefix);
        self.routes.insert(at, route);
    }

    pub fn lookup(&self, dst: Ipv4Addr) -> Option<&Route> {
        self.routes.iter().find(|r| r.contains(dst))
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(net: [u8; 4], prefix: u8, iface: usize) -> Route {
        Route {
            network: Ipv4Addr::from(net),
            prefix,
            iface,
            gateway: None,
        }
    }

    #[test]
    fn longest_prefix_wins_whatever_the_order_of_insertion() {
        let mut t = RouteTable::default();
        t.add(r([10, 0, 0, 0], 8, 0));
        t.add(r([10, 1, 2, 0], 24, 2));
        t.add(r([10, 1, 0, 0], 16, 1));
        t.add(r([0, 0, 0, 0], 0, 9));
        let at = |ip: [u8; 4]| t.lookup(Ipv4Addr::from(ip)).map(|r| r.iface);
        assert_eq!(at([10, 1, 2, 3]), Some(2));
        assert_eq!(at([10, 1, 3, 3]), Some(1));
        assert_eq!(at([10, 2, 0, 1]), Some(0));
        assert_eq!(at([192, 168, 0, 1]), Some(9));
    }

    #[test]
    fn no_match_without_a_default() {
        let mut t = RouteTable::default();
        t.add(r([172, 16, 1, 0], 24, 0));
        assert!(t.lookup(Ipv4Addr::new(172, 16, 2, 1)).is_none());
        assert!(t.lookup(Ipv4Addr::new(172, 16, 1, 255)).is_some());
    }

    #[test]
    fn host_bits_of_the_network_are_ignored() {
        let mut t = RouteTable::default();
        t.add(r([172, 16, 1, 77], 24, 0));
        assert_eq!(t.routes()[0].network, Ipv4Addr::new(172, 16, 1, 0));
        assert_eq!(mask(32), u32::MAX);
        assert_eq!(mask(0), 0);
    }
}
