//! Finds the leg a datagram belongs to on the node's one shared socket.
//!
//! A leg is first found by the STUN USERNAME of the browser's binding request, whose left half is
//! the ICE ufrag this node issued for that leg. The remote address is bound to the leg only once
//! the leg's ICE agent has answered a request from it, that is after the agent verified the
//! request's MESSAGE-INTEGRITY, so a forged USERNAME cannot take over another leg's address.

use std::collections::HashMap;
use std::net::SocketAddr;

use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{Message, is_stun_message};
use rtc::stun::textattrs::Username;

/// Key of a leg inside the worker.
pub(crate) type LegKey = u64;

#[derive(Default)]
pub(crate) struct Demux {
    by_ufrag: HashMap<String, LegKey>,
    by_address: HashMap<SocketAddr, LegKey>,
}

impl Demux {
    pub(crate) fn add_ufrag(&mut self, ufrag: String, leg: LegKey) {
        self.by_ufrag.insert(ufrag, leg);
    }

    pub(crate) fn has_ufrag(&self, ufrag: &str) -> bool {
        self.by_ufrag.contains_key(ufrag)
    }

    /// Binds `address` to `leg`; returns the leg that had it before, if another one did.
    pub(crate) fn bind_address(&mut self, address: SocketAddr, leg: LegKey) -> Option<LegKey> {
        self.by_address
            .insert(address, leg)
            .filter(|previous| *previous != leg)
    }

    pub(crate) fn remove(&mut self, ufrag: &str, addresses: &[SocketAddr], leg: LegKey) {
        if self.by_ufrag.get(ufrag) == Some(&leg) {
            self.by_ufrag.remove(ufrag);
        }
        for address in addresses {
            if self.by_address.get(address) == Some(&leg) {
                self.by_address.remove(address);
            }
        }
    }

    /// Returns the leg a datagram from `source` belongs to, if any.
    ///
    /// A STUN request goes to the leg its USERNAME names even from an address bound to another
    /// leg: a peer that restarts on the same address (a fixed port, or a NAT that kept its
    /// mapping) starts a new leg there. The named leg's ICE agent checks MESSAGE-INTEGRITY
    /// before the address moves to it.
    pub(crate) fn route(&self, source: SocketAddr, datagram: &[u8]) -> Option<LegKey> {
        if let Some(ufrag) = local_ufrag(datagram)
            && let Some(leg) = self.by_ufrag.get(ufrag.as_str())
        {
            return Some(*leg);
        }
        self.by_address.get(&source).copied()
    }
}

/// Returns the local ufrag named in a STUN request's USERNAME (`<local ufrag>:<remote ufrag>`).
fn local_ufrag(datagram: &[u8]) -> Option<String> {
    if !is_stun_message(datagram) {
        return None;
    }
    let mut message = Message::new();
    message.unmarshal_binary(datagram).ok()?;
    let username = Username::get_from_as(&message, ATTR_USERNAME).ok()?;
    let text = username.to_string();
    let (local, _remote) = text.split_once(':')?;
    Some(local.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::{BINDING_REQUEST, Setter, TransactionId};

    fn binding_request(username: &str) -> Vec<u8> {
        let mut message = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, username.to_owned())),
        ];
        message.build(&setters).expect("build binding request");
        message.raw.clone()
    }

    #[test]
    fn stun_username_finds_leg() {
        let mut demux = Demux::default();
        demux.add_ufrag("abcd".into(), 7);
        let source: SocketAddr = "127.0.0.1:5000".parse().expect("address");
        assert_eq!(
            demux.route(source, &binding_request("abcd:remote")),
            Some(7)
        );
        assert_eq!(demux.route(source, &binding_request("zzzz:remote")), None);
    }

    #[test]
    fn unknown_address_non_stun_is_unroutable() {
        let mut demux = Demux::default();
        demux.add_ufrag("abcd".into(), 7);
        let source: SocketAddr = "127.0.0.1:5000".parse().expect("address");
        assert_eq!(demux.route(source, &[0x80, 0x60, 0, 1, 0, 0, 0, 0]), None);
        assert_eq!(demux.route(source, &[]), None);
    }

    #[test]
    fn stun_username_wins_over_bound_address() {
        let mut demux = Demux::default();
        let source: SocketAddr = "127.0.0.1:5000".parse().expect("address");
        demux.add_ufrag("old1".into(), 1);
        demux.add_ufrag("new2".into(), 2);
        demux.bind_address(source, 1);
        assert_eq!(
            demux.route(source, &binding_request("new2:remote")),
            Some(2)
        );
        assert_eq!(
            demux.route(source, &binding_request("gone:remote")),
            Some(1)
        );
        assert_eq!(demux.route(source, &[0x80, 0x60, 0, 1]), Some(1));
    }

    #[test]
    fn bound_address_routes_any_datagram() {
        let mut demux = Demux::default();
        let source: SocketAddr = "127.0.0.1:5000".parse().expect("address");
        assert_eq!(demux.bind_address(source, 3), None);
        assert_eq!(demux.route(source, &[0x16, 0xfe, 0xfd]), Some(3));
        assert_eq!(demux.bind_address(source, 4), Some(3));
        demux.remove("x", &[source], 3);
        assert_eq!(demux.route(source, &[0x16]), Some(4));
        demux.remove("x", &[source], 4);
        assert_eq!(demux.route(source, &[0x16]), None);
    }
}
