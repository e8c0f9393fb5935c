//! The fan-out of appended conversation events to the sinks that send them out of the node,
//! such as webhook delivery.

use std::sync::{Arc, RwLock};

use room::{ConversationId, Event, EventListener};
use serde::{Serialize, Serializer};

use crate::views::EventView;

/// An event as the REST API shows it in `GET /v0.1/conversations/{id}/events/{event_id}`:
/// `id`, `type`, `from`, `to`, `body`, `timestamp` and `href`. Cloning it shares the converted
/// event, so every sink gets the same JSON without converting it again.
#[derive(Clone)]
pub struct ApiEvent(Arc<EventView>);

impl ApiEvent {
    pub fn new(conversation_id: &ConversationId, event: &Event) -> Self {
        ApiEvent(Arc::new(EventView::new(
            conversation_id.as_str(),
            event.clone(),
        )))
    }
}

impl Serialize for ApiEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Receiver of the events an [`EventFanout`] distributes.
pub trait EventSink: Send + Sync {
    /// Receives an event after the command that appended it committed, in log order within a
    /// conversation. The registry holds the conversation's lock during the call, so an
    /// implementation must queue the event without blocking or awaiting.
    fn deliver(&self, conversation_id: &ConversationId, event: &ApiEvent);
}

/// The one [`EventListener`] of a node's registry. [`room::Registry::set_event_listener`]
/// keeps a single listener, so every consumer of events is a sink of this fan-out instead.
#[derive(Default)]
pub struct EventFanout {
    sinks: RwLock<Vec<Arc<dyn EventSink>>>,
}

impl EventFanout {
    pub fn new() -> Self {
        EventFanout::default()
    }

    /// Adds a sink that receives every event appended from now on.
    pub fn add_sink(&self, sink: Arc<dyn EventSink>) {
        self.sinks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(sink);
    }

    pub fn sink_count(&self) -> usize {
        self.sinks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

impl EventListener for EventFanout {
    fn appended(&self, conversation_id: &ConversationId, event: &Event) {
        // The list only grows by whole pushes, so a panic elsewhere cannot leave it half changed.
        let sinks = self
            .sinks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if sinks.is_empty() {
            return;
        }
        let event = ApiEvent::new(conversation_id, event);
        for sink in sinks.iter() {
            sink.deliver(conversation_id, &event);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use room::{NewConversation, Registry};
    use serde_json::Value;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        received: Mutex<Vec<(String, Value)>>,
    }

    impl EventSink for Recorder {
        fn deliver(&self, conversation_id: &ConversationId, event: &ApiEvent) {
            let json = serde_json::to_value(event).expect("an event serializes");
            self.received
                .lock()
                .expect("recorder lock")
                .push((conversation_id.to_string(), json));
        }
    }

    #[test]
    fn every_sink_gets_the_rest_json() {
        let registry = Registry::new();
        let fanout = Arc::new(EventFanout::new());
        let first = Arc::new(Recorder::default());
        let second = Arc::new(Recorder::default());
        fanout.add_sink(first.clone());
        fanout.add_sink(second.clone());
        registry.set_event_listener(fanout.clone());

        let conversation = registry
            .create_conversation(NewConversation::default())
            .expect("create");

        for recorder in [&first, &second] {
            let received = recorder.received.lock().expect("recorder lock");
            assert_eq!(received.len(), 1);
            let (conversation_id, event) = &received[0];
            assert_eq!(conversation_id, conversation.id.as_str());
            assert_eq!(event["id"], 1);
            assert_eq!(event["type"], "conversation:created");
            assert_eq!(
                event["href"],
                format!("/v0.1/conversations/{}/events/1", conversation.id)
            );
            assert!(event["timestamp"].is_string(), "{event}");
            assert!(event.get("from").is_none(), "{event}");
        }
    }

    #[test]
    fn fanout_without_sinks_accepts_events() {
        let registry = Registry::new();
        let fanout = Arc::new(EventFanout::new());
        registry.set_event_listener(fanout.clone());
        registry
            .create_conversation(NewConversation::default())
            .expect("create");
        assert_eq!(fanout.sink_count(), 0);
    }
}
