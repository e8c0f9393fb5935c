/// Packet counters since the router was created.
///
/// A packet dropped for every subscription counts once in its `dropped_*` field. A packet
/// dropped for some subscriptions only (`dropped_waiting_for_keyframe`,
/// `dropped_unknown_payload_type`, `dropped_duplicate`, `dropped_too_old`) counts once per
/// subscription. Byte counts are RTP header plus payload, without padding, except for a
/// malformed datagram, which counts with its full length.
#[derive(Clone, Debug, Default)]
pub struct RouterStats {
    /// Packets handed to [`Router::route`](crate::Router::route) or
    /// [`Router::route_bytes`](crate::Router::route_bytes), all of them.
    pub received_packets: u64,
    pub received_bytes: u64,
    /// One per subscription that received the packet.
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub dropped_muted: u64,
    pub dropped_no_subscriber: u64,
    pub dropped_waiting_for_keyframe: u64,
    pub dropped_padding: u64,
    pub dropped_duplicate: u64,
    pub dropped_too_old: u64,
    pub dropped_malformed: u64,
    pub dropped_unknown_track: u64,
    pub dropped_unknown_payload_type: u64,
    /// Keyframe requests the router returned for the transport to send.
    pub keyframe_requests: u64,
    /// Keyframe requests folded into an earlier or a pending one by the rate limit.
    pub keyframe_requests_merged: u64,
}
