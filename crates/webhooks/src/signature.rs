//! The signature header: HMAC-SHA256 over the timestamp and the exact body.
//!
//! The header value is `t=<unix seconds>,v1=<hex HMAC>`. The HMAC key is the configured secret
//! and the signed message is the decimal timestamp, a `.`, then the body bytes as sent. Signing
//! the timestamp lets a receiver reject a replayed request once it is older than its tolerance.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Version tag of the signature scheme in the header.
const SCHEME: &str = "v1";

/// Error of [`verify_signature`]: the header does not prove that the body came from the holder
/// of the secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The header is not `t=<unix seconds>,v1=<64 hex digits>`.
    #[error("malformed signature header: {reason}")]
    Malformed { reason: &'static str },
    /// No `v1` signature in the header matches the body and timestamp.
    #[error("signature does not match the body")]
    Mismatch,
    /// The signature matches, but its timestamp is further from now than the tolerance.
    #[error("signature timestamp {timestamp} is {skew_seconds} s from now, over the tolerance")]
    Stale { timestamp: u64, skew_seconds: u64 },
}

/// Builds the signature header value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},{SCHEME}={}", hex::encode(digest))
}

/// Checks that `header_value` signs `body` with `secret`, and that its timestamp is at most
/// `tolerance` before or after `now`. Several `v1` entries may appear, as during a change of
/// secret; one match is enough. Unknown keys are ignored so that later schemes can be added.
pub fn verify_signature(
    secret: &[u8],
    header_value: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let header = parse(header_value)?;

    let expected = mac(secret, header.timestamp, body);
    let matched = header
        .signatures
        .iter()
        .any(|signature| expected.clone().verify_slice(signature).is_ok());
    if !matched {
        return Err(SignatureError::Mismatch);
    }

    let now = unix_seconds(now);
    let skew_seconds = now.abs_diff(header.timestamp);
    if skew_seconds > tolerance.as_secs() {
        return Err(SignatureError::Stale {
            timestamp: header.timestamp,
            skew_seconds,
        });
    }
    Ok(())
}

/// Seconds since the Unix epoch, 0 for a time before it.
pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC hashes keys longer than a block and pads shorter ones, so every length is valid.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

struct Header {
    timestamp: u64,
    signatures: Vec<Vec<u8>>,
}

fn parse(header_value: &str) -> Result<Header, SignatureError> {
    let malformed = |reason| SignatureError::Malformed { reason };
    let mut timestamp = None;
    let mut signatures = Vec::new();

    for part in header_value.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(malformed("an entry is not key=value"))?;
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(malformed("t appears twice"));
                }
                let seconds = value
                    .parse::<u64>()
                    .map_err(|_| malformed("t is no integer"))?;
                timestamp = Some(seconds);
            }
            SCHEME => {
                let signature = hex::decode(value).map_err(|_| malformed("v1 is not hex"))?;
                if signature.len() != 32 {
                    return Err(malformed("v1 is not 32 bytes long"));
                }
                signatures.push(signature);
            }
            _ => {}
        }
    }

    let timestamp = timestamp.ok_or(malformed("t is missing"))?;
    if signatures.is_empty() {
        return Err(malformed("v1 is missing"));
    }
    Ok(Header {
        timestamp,
        signatures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const BODY: &[u8] = br#"{"conversation_id":"CON-1","event":{"id":1}}"#;
    const SENT_AT: u64 = 1_700_000_000;
    const TOLERANCE: Duration = Duration::from_secs(300);

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn verify(header: &str, body: &[u8], now: u64) -> Result<(), SignatureError> {
        verify_signature(SECRET, header, body, at(now), TOLERANCE)
    }

    #[test]
    fn signed_body_verifies() {
        let header = sign(SECRET, SENT_AT, BODY);
        assert!(header.starts_with("t=1700000000,v1="), "{header}");
        assert_eq!(verify(&header, BODY, SENT_AT + 2), Ok(()));
    }

    #[test]
    fn signature_matches_python_hmac() {
        // From Python's hmac module: hmac.new(SECRET, b"1700000000." + BODY, "sha256").hexdigest()
        let expected = "t=1700000000,v1=\
            48875422843ea50740368a073ca56c1d0f4c9a31b0e9c0834f4455dd0868a910";
        assert_eq!(sign(SECRET, SENT_AT, BODY), expected);
    }

    #[test]
    fn tampered_body_is_rejected() {
        let header = sign(SECRET, SENT_AT, BODY);
        let tampered = br#"{"conversation_id":"CON-2","event":{"id":1}}"#;
        assert_eq!(
            verify(&header, tampered, SENT_AT),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tampered_timestamp_is_rejected() {
        let header = sign(SECRET, SENT_AT, BODY).replacen("t=1700000000", "t=1700000100", 1);
        assert_eq!(
            verify(&header, BODY, SENT_AT + 100),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let header = sign(b"another secret of at least 32 bytes", SENT_AT, BODY);
        assert_eq!(
            verify(&header, BODY, SENT_AT),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stale_timestamp_is_rejected() {
        let header = sign(SECRET, SENT_AT, BODY);
        assert_eq!(verify(&header, BODY, SENT_AT + 300), Ok(()));
        assert_eq!(
            verify(&header, BODY, SENT_AT + 301),
            Err(SignatureError::Stale {
                timestamp: SENT_AT,
                skew_seconds: 301
            })
        );
    }

    #[test]
    fn future_timestamp_is_rejected() {
        let header = sign(SECRET, SENT_AT, BODY);
        let result = verify(&header, BODY, SENT_AT - 301);
        assert!(
            matches!(result, Err(SignatureError::Stale { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn any_of_several_signatures_may_match() {
        let good = sign(SECRET, SENT_AT, BODY);
        let other = sign(b"an old secret that was rotated out", SENT_AT, BODY);
        let other_v1 = other.split(',').nth(1).unwrap_or_default();
        let header = format!("{good},{other_v1},v2=future-scheme");
        assert_eq!(verify(&header, BODY, SENT_AT), Ok(()));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let v1 = sign(SECRET, SENT_AT, BODY);
        let v1 = v1.split(',').nth(1).unwrap_or_default();
        let cases = [
            String::new(),
            "garbage".to_owned(),
            v1.to_owned(),
            "t=1700000000".to_owned(),
            format!("t=soon,{v1}"),
            format!("t=-5,{v1}"),
            format!("t=1700000000,t=1700000000,{v1}"),
            "t=1700000000,v1=zz".to_owned(),
            "t=1700000000,v1=abcd".to_owned(),
            format!("t=1700000000;{v1}"),
        ];
        for header in cases {
            let result = verify(&header, BODY, SENT_AT);
            assert!(
                matches!(result, Err(SignatureError::Malformed { .. })),
                "{header:?} gave {result:?}"
            );
        }
    }
}
