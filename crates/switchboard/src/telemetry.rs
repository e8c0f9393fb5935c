//! Log output of the process.

use std::io::IsTerminal;

use anyhow::{Context, anyhow};
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogSettings};

/// Installs the global `tracing` subscriber, writing to standard error. It also routes the
/// `log` records of the WebRTC library into `tracing`, so the same filter applies to them.
pub fn init_tracing(settings: &LogSettings) -> anyhow::Result<()> {
    let subscriber = build_subscriber(settings, std::io::stderr, std::io::stderr().is_terminal())?;
    subscriber
        .try_init()
        .map_err(|error| anyhow!("failed to install the log subscriber: {error}"))
}

/// Builds the subscriber for `settings`: human-readable lines, or one JSON object per line
/// with the fields of the event's spans (conversation, member, leg) beside its own.
fn build_subscriber<W>(
    settings: &LogSettings,
    writer: W,
    ansi: bool,
) -> anyhow::Result<Box<dyn Subscriber + Send + Sync>>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&settings.filter)
        .with_context(|| format!("invalid log.filter {:?}", settings.filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    Ok(match settings.format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;

    use super::*;

    /// A writer that keeps everything written to it.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'writer> MakeWriter<'writer> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'writer self) -> Self::Writer {
            self.clone()
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("buffer lock").clone()).expect("UTF-8 logs")
        }
    }

    fn capture(settings: &LogSettings, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let subscriber = build_subscriber(settings, buffer.clone(), false).expect("subscriber");
        tracing::subscriber::with_default(subscriber, emit);
        buffer.text()
    }

    #[test]
    fn default_filter_silences_webrtc_library_warnings() {
        let output = capture(&LogSettings::default(), || {
            tracing::warn!(target: "rtc_ice::agent", "discard message from 192.0.2.7:5000");
            tracing::warn!(target: "rtc::peer_connection", "drop unsupported message");
            tracing::error!(target: "rtc_dtls::conn", "handshake failed");
            tracing::info!(target: "media::worker", "leg closed");
        });

        assert!(!output.contains("192.0.2.7"), "{output}");
        assert!(!output.contains("drop unsupported message"), "{output}");
        assert!(output.contains("handshake failed"), "{output}");
        assert!(output.contains("leg closed"), "{output}");
    }

    #[test]
    fn json_format_carries_span_fields() {
        let settings = LogSettings {
            format: LogFormat::Json,
            ..LogSettings::default()
        };
        let output = capture(&settings, || {
            let span = tracing::info_span!("leg", leg = "LEG-1");
            let _entered = span.enter();
            tracing::info!(reason = "requested", "leg closed");
        });

        let line: Value = serde_json::from_str(output.trim()).expect("one JSON line");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["fields"]["message"], "leg closed");
        assert_eq!(line["fields"]["reason"], "requested");
        assert_eq!(line["span"]["leg"], "LEG-1");
    }

    #[test]
    fn invalid_filter_is_rejected() {
        let settings = LogSettings {
            filter: "info,=[".to_owned(),
            ..LogSettings::default()
        };
        let error = build_subscriber(&settings, Buffer::default(), false)
            .err()
            .expect("an invalid filter");
        assert!(error.to_string().contains("log.filter"), "{error}");
    }
}
