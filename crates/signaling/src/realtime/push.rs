//! Pushing conversation events to the live sessions of the conversation's members.
//!
//! Events arrive from the registry's fan-out while it holds the conversation's lock, so the
//! sink only queues them. One task takes them in order, finds the sessions of the members'
//! users and emits each event to them, so a session receives a conversation's events in log
//! order. Changes to legs and members also start a reconciliation of the server offers.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use room::{ConversationId, MemberId};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::warn;

use super::{QueuedEvent, Realtime, sdk};
use crate::fanout::{ApiEvent, EventSink};

/// The fan-out sink that queues events for the push task.
pub(crate) struct EventQueue {
    events: mpsc::Sender<QueuedEvent>,
    dropped: AtomicU64,
}

impl EventQueue {
    pub(crate) fn new(events: mpsc::Sender<QueuedEvent>) -> Self {
        EventQueue {
            events,
            dropped: AtomicU64::new(0),
        }
    }
}

impl EventSink for EventQueue {
    fn deliver(&self, conversation_id: &ConversationId, event: &ApiEvent) {
        if self
            .events
            .try_send((conversation_id.clone(), event.clone()))
            .is_err()
        {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged at powers of two, so a stuck push task cannot flood the log.
            if dropped.is_power_of_two() {
                warn!(
                    conversation = %conversation_id,
                    dropped,
                    "the realtime event queue is full; events were not pushed to sessions"
                );
            }
        }
    }
}

/// Pushes queued events until the queue closes.
pub(crate) async fn run(realtime: Arc<Realtime>, mut queue: mpsc::Receiver<QueuedEvent>) {
    while let Some((conversation_id, event)) = queue.recv().await {
        let Ok(json) = serde_json::to_value(&event) else {
            continue;
        };
        if changes_subscriptions(&json) {
            realtime.reconcile_later(conversation_id.clone());
        }
        if !is_for_sessions(&json) {
            continue;
        }
        let Some((kind, payload)) = sdk::event(conversation_id.as_str(), &json) else {
            continue;
        };
        for session in recipients(&realtime, &conversation_id, &json) {
            session.emit(&kind, &payload);
        }
    }
}

/// Returns whether the SDK should see the event. `rtc:new` is the node's own record of a leg,
/// and `rtc:terminate` of a downstream leg names a leg the SDK never learnt: it identifies its
/// receiving connections by the publisher's leg, which `rtc:terminate` of that leg ends. The
/// `conversation:*` events describe the conversation, which the SDK reads with
/// `conversation:get`.
fn is_for_sessions(event: &Value) -> bool {
    let kind = event["type"].as_str().unwrap_or_default();
    match kind {
        "rtc:new" => false,
        "rtc:terminate" => event["body"].get("subscribe").is_none(),
        _ => !kind.starts_with("conversation:"),
    }
}

/// Returns whether the event changes which server offers a conversation needs: a new
/// publisher leg, an ended leg, or a member that left.
fn changes_subscriptions(event: &Value) -> bool {
    match event["type"].as_str().unwrap_or_default() {
        "rtc:new" => event["body"]["direction"] == "upstream",
        "rtc:terminate" | "member:left" => true,
        _ => false,
    }
}

/// Returns the sessions of the users of the conversation's INVITED and JOINED members, and
/// for `member:left` also of the member that left.
fn recipients(
    realtime: &Realtime,
    conversation_id: &ConversationId,
    event: &Value,
) -> Vec<Arc<super::session::Session>> {
    if realtime.sessions.len() == 0 {
        return Vec::new();
    }
    let Ok(members) = realtime.state.registry().members(conversation_id) else {
        return Vec::new();
    };
    let leaver = (event["type"] == "member:left")
        .then(|| event["from"].as_str().map(MemberId::from))
        .flatten();
    let users: HashSet<_> = members
        .iter()
        .filter(|member| member.is_active() || Some(&member.id) == leaver.as_ref())
        .map(|member| member.user_id.clone())
        .collect();
    users
        .iter()
        .flat_map(|user| realtime.sessions.of_user(user))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sessions_skip_node_records_of_legs() {
        assert!(!is_for_sessions(&json!({ "type": "rtc:new", "body": {} })));
        assert!(!is_for_sessions(&json!({
            "type": "rtc:terminate",
            "body": { "rtc_id": "LEG-2", "subscribe": { "rtc_id": "LEG-1" } }
        })));
        assert!(is_for_sessions(&json!({
            "type": "rtc:terminate", "body": { "rtc_id": "LEG-1" }
        })));
        assert!(!is_for_sessions(
            &json!({ "type": "conversation:updated", "body": {} })
        ));
        assert!(is_for_sessions(
            &json!({ "type": "member:joined", "body": {} })
        ));
        assert!(is_for_sessions(
            &json!({ "type": "custom:hand-raised", "body": {} })
        ));
    }

    #[test]
    fn publisher_legs_and_departures_change_subscriptions() {
        assert!(changes_subscriptions(&json!({
            "type": "rtc:new", "body": { "direction": "upstream" }
        })));
        assert!(!changes_subscriptions(&json!({
            "type": "rtc:new", "body": { "direction": "downstream" }
        })));
        assert!(changes_subscriptions(&json!({ "type": "member:left" })));
        assert!(!changes_subscriptions(&json!({ "type": "member:joined" })));
    }
}
