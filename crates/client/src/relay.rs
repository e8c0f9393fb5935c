//! A UDP relay between a test peer and the node that can be cut, so a peer can vanish without
//! closing its connection (no DTLS close alert, no more consent checks), as a crashed browser
//! or a dropped network does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

pub struct Relay {
    address: SocketAddr,
    server: SocketAddr,
    cut: Arc<AtomicBool>,
    server_side: Arc<UdpSocket>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Starts relaying between a peer-facing socket on 127.0.0.1 and `server`.
    pub async fn start(server: SocketAddr) -> std::io::Result<Relay> {
        let peer_side = UdpSocket::bind("127.0.0.1:0").await?;
        let server_side = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        server_side.connect(server).await?;
        let relay_side = Arc::clone(&server_side);
        let address = peer_side.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&cut);
        let task = tokio::spawn(async move {
            let mut peer: Option<SocketAddr> = None;
            let mut from_peer = vec![0u8; 2048];
            let mut from_server = vec![0u8; 2048];
            while !stopped.load(Ordering::SeqCst) {
                tokio::select! {
                    received = peer_side.recv_from(&mut from_peer) => {
                        let Ok((length, source)) = received else { break };
                        peer = Some(source);
                        if !stopped.load(Ordering::SeqCst) {
                            let _ = relay_side.send(&from_peer[..length]).await;
                        }
                    }
                    received = relay_side.recv(&mut from_server) => {
                        // The node's ICMP-triggered errors are not the relay's concern.
                        let Ok(length) = received else { continue };
                        if let Some(peer) = peer && !stopped.load(Ordering::SeqCst) {
                            let _ = peer_side.send_to(&from_server[..length], peer).await;
                        }
                    }
                }
            }
        });
        Ok(Relay {
            address,
            server,
            cut,
            server_side,
            task,
        })
    }

    /// Peer-facing address of the relay.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Rewrites the candidates of an answer from the node so the peer sends to the relay.
    pub fn rewrite_answer(&self, sdp: &str) -> String {
        let from = format!(" {} {} typ ", self.server.ip(), self.server.port());
        let to = format!(" {} {} typ ", self.address.ip(), self.address.port());
        sdp.replace(&from, &to)
    }

    /// Sends a datagram to the node from the address the node has bound to the peer, as an
    /// attacker on the path or a broken peer could.
    pub async fn inject(&self, datagram: &[u8]) -> std::io::Result<()> {
        self.server_side.send(datagram).await.map(|_| ())
    }

    /// Stops forwarding in both directions, for good.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
