//! The floor of forwarding: what any SFU must spend on one forwarded packet.
//!
//! A forwarded copy must at least be SRTP-protected with the subscriber's keys and handed to the
//! kernel. This module measures exactly that on the current machine. It protects a 1,200-byte
//! RTP packet with the `rtc` 0.21.1 SRTP context, the code the node itself runs. Then it sends
//! the packet with a nonblocking `mio` `UdpSocket::send_to` on loopback, as the node's media
//! worker does, to a socket that a second thread drains.
//!
//! Which profile a leg negotiates: the `rtc` DTLS server picks the first profile of the
//! client's `use_srtp` list that it supports. The `webrtc` 0.21.1 client, like `rtc` itself,
//! lists `SRTP_AEAD_AES_128_GCM` first, so the load test's legs use AES-128-GCM. Chromium's
//! libwebrtc lists `SRTP_AES128_CM_HMAC_SHA1_80` before the GCM profiles, so browsers get
//! AES-CM with HMAC-SHA1-80.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::net::UdpSocket;
use rtc::rtp::header::Header;
use rtc::shared::marshal::Marshal;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use serde::Serialize;

/// Size of the RTP packet before protection, header included: a full video packet.
pub const PACKET_SIZE: usize = 1200;

/// Errors of the floor measurement.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("SRTP: {0}")]
    Srtp(#[from] rtc::shared::error::Error),
    #[error("loading the crypto provider: {0}")]
    Crypto(#[from] rtc::crypto::CryptoError),
    #[error("loopback socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// The SRTP protection profiles a leg can end up with, under the names RFC 5764 and RFC 7714
/// give them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Profile {
    /// Profile the `webrtc` 0.21.1 client and the node negotiate.
    #[serde(rename = "SRTP_AEAD_AES_128_GCM")]
    AeadAes128Gcm,
    /// Profile Chromium and the node negotiate.
    #[serde(rename = "SRTP_AES128_CM_HMAC_SHA1_80")]
    Aes128CmHmacSha1_80,
}

impl Profile {
    pub const ALL: [Profile; 2] = [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80];

    pub fn name(self) -> &'static str {
        match self {
            Profile::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            Profile::Aes128CmHmacSha1_80 => "SRTP_AES128_CM_HMAC_SHA1_80",
        }
    }

    /// Maps the `srtp_cipher` name that `rtc` statistics report.
    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL
            .into_iter()
            .find(|profile| profile.name() == name)
    }

    fn protection_profile(self) -> ProtectionProfile {
        match self {
            Profile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
            Profile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        }
    }
}

/// Protects one RTP packet after another, each with the next sequence number.
pub struct SrtpProtector {
    context: Context,
    header: Header,
    packet: Vec<u8>,
}

impl SrtpProtector {
    /// Creates a context for `profile` with fixed keys and a `PACKET_SIZE`-byte packet.
    pub fn new(profile: Profile) -> Result<SrtpProtector, FloorError> {
        let protection = profile.protection_profile();
        let key: Vec<u8> = (0..protection.key_len()).map(|i| i as u8).collect();
        let salt: Vec<u8> = (0..protection.salt_len()).map(|i| 0xa0 ^ i as u8).collect();
        let provider = rtc::crypto::default_provider()?;
        let context = Context::new(&key, &salt, protection, None, None, provider.crypto())?;
        let header = Header {
            version: 2,
            payload_type: 96,
            sequence_number: 1,
            timestamp: 90_000,
            ssrc: 0x1234_5678,
            ..Header::default()
        };
        let mut packet = header.marshal()?.to_vec();
        packet.resize(PACKET_SIZE, 0x5a);
        Ok(SrtpProtector {
            context,
            header,
            packet,
        })
    }

    /// Protects the next packet and returns the datagram: header, ciphertext and tag.
    pub fn protect_next(&mut self) -> Result<BytesMut, FloorError> {
        self.header.sequence_number = self.header.sequence_number.wrapping_add(1);
        self.packet[2..4].copy_from_slice(&self.header.sequence_number.to_be_bytes());
        Ok(self
            .context
            .encrypt_rtp_with_header(&self.packet, &self.header)?)
    }
}

/// A nonblocking `mio` socket on 127.0.0.1 that sends to a second loopback socket, which a
/// thread drains until the sink is dropped.
pub struct LoopbackSink {
    socket: UdpSocket,
    peer: SocketAddr,
    stop: Arc<AtomicBool>,
    drained: Arc<AtomicU64>,
    drain: Option<JoinHandle<()>>,
}

impl LoopbackSink {
    pub fn bind() -> Result<LoopbackSink, FloorError> {
        let receiver = StdUdpSocket::bind("127.0.0.1:0")?;
        receiver.set_read_timeout(Some(Duration::from_millis(50)))?;
        let peer = receiver.local_addr()?;
        let socket = UdpSocket::bind("127.0.0.1:0".parse().map_err(std::io::Error::other)?)?;
        let stop = Arc::new(AtomicBool::new(false));
        let drained = Arc::new(AtomicU64::new(0));
        let drain = {
            let stop = Arc::clone(&stop);
            let drained = Arc::clone(&drained);
            std::thread::Builder::new()
                .name("floor-drain".to_owned())
                .spawn(move || {
                    let mut buffer = vec![0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        if receiver.recv(&mut buffer).is_ok() {
                            drained.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })?
        };
        Ok(LoopbackSink {
            socket,
            peer,
            stop,
            drained,
            drain: Some(drain),
        })
    }

    /// Sends one datagram as the media worker does; `false` when the kernel dropped it because
    /// the send buffer was full.
    pub fn send(&self, datagram: &[u8]) -> Result<bool, FloorError> {
        match self.socket.send_to(datagram, self.peer) {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == ErrorKind::WouldBlock => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Datagrams the draining thread has read so far.
    pub fn drained(&self) -> u64 {
        self.drained.load(Ordering::Relaxed)
    }
}

impl Drop for LoopbackSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }
}

/// The measured floor for one profile, in nanoseconds of the measuring thread's CPU time per
/// packet (user plus system, so the kernel's loopback delivery is included). CPU time rather
/// than wall time keeps the figure valid while other processes share the cores.
#[derive(Clone, Debug, Serialize)]
pub struct Floor {
    pub profile: Profile,
    pub packets: u64,
    pub protect_ns: f64,
    pub send_ns: f64,
    /// Protect and send in one loop, as a forwarding worker does.
    pub total_ns: f64,
    /// Wall time of the combined loop, for comparison with `total_ns`.
    pub total_wall_ns: f64,
    /// Sends the kernel refused with `WouldBlock` during the combined loop.
    pub would_block: u64,
}

/// Measures protecting and sending `packets` packets: each step alone, then both in one loop.
pub fn measure(profile: Profile, packets: u64) -> Result<Floor, FloorError> {
    let packets = packets.max(1);
    let mut protector = SrtpProtector::new(profile)?;
    let sink = LoopbackSink::bind()?;

    // Warm up caches, the allocator and the socket path.
    for _ in 0..packets.min(10_000) / 10 {
        let datagram = protector.protect_next()?;
        sink.send(&datagram)?;
    }

    let started = thread_cpu_time();
    for _ in 0..packets {
        std::hint::black_box(protector.protect_next()?);
    }
    let protect_ns = per_packet(thread_cpu_time() - started, packets);

    let datagram = protector.protect_next()?;
    let started = thread_cpu_time();
    for _ in 0..packets {
        sink.send(std::hint::black_box(&datagram))?;
    }
    let send_ns = per_packet(thread_cpu_time() - started, packets);

    let mut would_block = 0;
    let started = thread_cpu_time();
    let wall = Instant::now();
    for _ in 0..packets {
        let datagram = protector.protect_next()?;
        if !sink.send(&datagram)? {
            would_block += 1;
        }
    }
    let total_wall_ns = per_packet(wall.elapsed(), packets);
    let total_ns = per_packet(thread_cpu_time() - started, packets);

    Ok(Floor {
        profile,
        packets,
        protect_ns,
        send_ns,
        total_ns,
        total_wall_ns,
        would_block,
    })
}

fn per_packet(elapsed: Duration, packets: u64) -> f64 {
    elapsed.as_nanos() as f64 / packets as f64
}

/// CPU time the calling thread has used, user and system.
fn thread_cpu_time() -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec, and this clock exists on every Linux.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    if result != 0 {
        return Duration::ZERO;
    }
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_packet_grows_by_tag() {
        let mut gcm = SrtpProtector::new(Profile::AeadAes128Gcm).unwrap();
        assert_eq!(gcm.protect_next().unwrap().len(), PACKET_SIZE + 16);
        let mut cm = SrtpProtector::new(Profile::Aes128CmHmacSha1_80).unwrap();
        assert_eq!(cm.protect_next().unwrap().len(), PACKET_SIZE + 10);
    }

    #[test]
    fn sink_delivers_to_drain() {
        let sink = LoopbackSink::bind().unwrap();
        assert!(sink.send(&[0x80; 100]).unwrap());
        let delivered = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            sink.drained() == 1
        });
        assert!(delivered, "the draining thread never read the datagram");
    }

    #[test]
    fn profile_names_round_trip() {
        for profile in Profile::ALL {
            assert_eq!(Profile::from_name(profile.name()), Some(profile));
        }
        assert_eq!(Profile::from_name("SRTP_NULL"), None);
    }

    #[test]
    fn measure_reports_positive_costs() {
        let floor = measure(Profile::AeadAes128Gcm, 1_000).unwrap();
        assert!(floor.protect_ns > 0.0);
        assert!(floor.send_ns > 0.0);
        assert!(floor.total_ns > 0.0);
        assert_eq!(floor.packets, 1_000);
    }
}
