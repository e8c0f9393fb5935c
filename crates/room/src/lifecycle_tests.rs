//! Tests of the lifecycle of users, conversations and members, and of the event listener.

use std::sync::{Arc, Mutex};

use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::*;

fn user(registry: &Registry, name: &str) -> User {
    registry
        .create_user(NewUser {
            name: name.to_owned(),
            display_name: None,
        })
        .expect("create user")
}

fn conversation(registry: &Registry, name: &str) -> ConversationId {
    registry
        .create_conversation(NewConversation {
            name: Some(name.to_owned()),
            ..NewConversation::default()
        })
        .expect("create conversation")
        .id
}

fn join(registry: &Registry, conversation: &ConversationId, user: &UserId) -> MemberId {
    registry
        .add_member(conversation, user, MemberAction::Join, None)
        .expect("join")
        .member
        .id
}

fn publish(registry: &Registry, conversation: &ConversationId, member: &MemberId) -> LegId {
    let leg = LegId::generate();
    registry
        .add_publisher_leg(conversation, member, &leg, &[MediaKind::Audio])
        .expect("publish");
    leg
}

fn event_types(registry: &Registry, conversation: &ConversationId) -> Vec<String> {
    registry
        .events(conversation, &EventQuery::default())
        .expect("events")
        .iter()
        .map(|event| event.kind.to_string())
        .collect()
}

#[test]
fn user_update_keeps_names_unique() {
    let registry = Registry::new();
    let alice = user(&registry, "alice");
    user(&registry, "bob");

    let taken = registry.update_user(
        &alice.id,
        UserUpdate {
            name: Some("bob".to_owned()),
            ..UserUpdate::default()
        },
    );
    assert_eq!(taken, Err(RoomError::DuplicateUserName("bob".to_owned())));

    let renamed = registry
        .update_user(
            &alice.id,
            UserUpdate {
                name: Some("alicia".to_owned()),
                display_name: Some(Some("Alicia".to_owned())),
            },
        )
        .expect("rename");
    assert_eq!(renamed.id, alice.id);
    assert_eq!(renamed.display_name.as_deref(), Some("Alicia"));
    assert_eq!(registry.user_by_name("alicia"), Ok(renamed.clone()));
    assert_eq!(
        registry.user_by_name("alice"),
        Err(RoomError::UserNameNotFound("alice".to_owned()))
    );

    let cleared = registry
        .update_user(
            &alice.id,
            UserUpdate {
                display_name: Some(None),
                ..UserUpdate::default()
            },
        )
        .expect("clear display name");
    assert_eq!(cleared.display_name, None);
    assert_eq!(cleared.name, "alicia");
}

#[test]
fn user_deletion_leaves_conversations() {
    let registry = Registry::new();
    let alice = user(&registry, "alice");
    let bob = user(&registry, "bob");
    let standup = conversation(&registry, "standup");
    let review = conversation(&registry, "review");
    let alice_in_standup = join(&registry, &standup, &alice.id);
    let bob_in_standup = join(&registry, &standup, &bob.id);
    let alice_leg = publish(&registry, &standup, &alice_in_standup);
    let bob_receives = LegId::generate();
    registry
        .add_subscriber_leg(&standup, &bob_in_standup, &bob_receives, &alice_leg)
        .expect("subscribe");
    registry
        .add_member(&review, &alice.id, MemberAction::Invite, None)
        .expect("invite");

    let departures = registry.delete_user(&alice.id).expect("delete user");
    assert_eq!(departures.len(), 2);
    let closed: Vec<&LegId> = departures
        .iter()
        .flat_map(|departure| departure.closed_legs.iter().map(|leg| &leg.id))
        .collect();
    assert_eq!(closed, [&alice_leg, &bob_receives]);
    assert_eq!(
        registry.user(&alice.id),
        Err(RoomError::UserNotFound(alice.id.clone()))
    );
    assert!(registry.find_leg(&alice_leg).is_err());

    let member = registry
        .member(&standup, &alice_in_standup)
        .expect("member");
    assert_eq!(member.state, MemberState::Left);
    assert_eq!(member.user_name, "alice");
    assert_eq!(
        event_types(&registry, &review),
        ["conversation:created", "member:invited", "member:left"]
    );

    // The name is free again, and the old members stay with the old user.
    let new_alice = user(&registry, "alice");
    assert_ne!(new_alice.id, alice.id);
    assert_eq!(
        registry.delete_user(&alice.id),
        Err(RoomError::UserNotFound(alice.id))
    );
}

#[test]
fn conversation_update_appends_event() {
    let registry = Registry::new();
    let standup = conversation(&registry, "standup");
    conversation(&registry, "review");

    let taken = registry.update_conversation(
        &standup,
        ConversationUpdate {
            name: Some("review".to_owned()),
            ..ConversationUpdate::default()
        },
    );
    assert_eq!(
        taken,
        Err(RoomError::DuplicateConversationName("review".to_owned()))
    );

    let updated = registry
        .update_conversation(
            &standup,
            ConversationUpdate {
                name: Some("daily".to_owned()),
                display_name: Some(Some("Daily".to_owned())),
                video: Some(true),
                ttl: Some(Some(30)),
            },
        )
        .expect("update");
    assert_eq!(updated.name, "daily");
    assert_eq!(updated.display_name.as_deref(), Some("Daily"));
    assert!(updated.properties.video);
    assert_eq!(updated.properties.ttl, Some(30));
    assert_eq!(updated.sequence_number, 2);

    let events = registry
        .events(&standup, &EventQuery::default())
        .expect("events");
    assert_eq!(events[1].kind, EventType::ConversationUpdated);
    assert_eq!(events[1].body["name"], "daily");
    assert_eq!(events[1].body["properties"]["ttl"], 30);

    // The old name is free, and an update that changes nothing appends nothing.
    conversation(&registry, "standup");
    registry
        .update_conversation(&standup, ConversationUpdate::default())
        .expect("empty update");
    assert_eq!(event_types(&registry, &standup).len(), 2);
}

#[test]
fn conversation_by_name_follows_renames_and_deletions() {
    let registry = Registry::new();
    let standup = conversation(&registry, "standup");
    let review = conversation(&registry, "review");

    let found = registry
        .conversation_by_name("standup")
        .map(|found| found.id);
    assert_eq!(found, Some(standup.clone()));
    let found = registry
        .conversation_by_name("review")
        .map(|found| found.id);
    assert_eq!(found, Some(review));
    assert_eq!(registry.conversation_by_name("missing"), None);
    assert_eq!(registry.conversation_by_name("STANDUP"), None);

    registry
        .update_conversation(
            &standup,
            ConversationUpdate {
                name: Some("daily".to_owned()),
                ..ConversationUpdate::default()
            },
        )
        .expect("rename");
    assert_eq!(registry.conversation_by_name("standup"), None);
    let found = registry.conversation_by_name("daily").map(|found| found.id);
    assert_eq!(found, Some(standup.clone()));

    registry.delete_conversation(&standup).expect("delete");
    assert_eq!(registry.conversation_by_name("daily"), None);
    let again = conversation(&registry, "daily");
    let found = registry.conversation_by_name("daily").map(|found| found.id);
    assert_eq!(found, Some(again));
}

#[test]
fn conversation_deletion_leaves_tombstone() {
    let registry = Registry::new();
    let alice = user(&registry, "alice");
    let standup = conversation(&registry, "standup");
    let member = join(&registry, &standup, &alice.id);
    let leg = publish(&registry, &standup, &member);

    let deleted = registry.delete_conversation(&standup).expect("delete");
    let closed: Vec<&LegId> = deleted.closed_legs.iter().map(|leg| &leg.id).collect();
    assert_eq!(closed, [&leg]);
    assert_eq!(deleted.conversation.name, "standup");
    assert!(registry.find_leg(&leg).is_err());

    let gone = RoomError::ConversationDeleted(standup.clone());
    assert_eq!(registry.conversation(&standup), Err(gone.clone()));
    assert_eq!(
        registry
            .add_member(&standup, &alice.id, MemberAction::Join, None)
            .map(|added| added.member.id),
        Err(gone.clone())
    );
    assert_eq!(
        registry.events(&standup, &EventQuery::default()),
        Err(gone.clone())
    );
    assert_eq!(registry.delete_conversation(&standup), Err(gone.clone()));
    assert_eq!(registry.remove_member(&standup, &member), Err(gone));

    let page = registry
        .list_conversations(&PageRequest::default())
        .expect("list");
    assert!(page.items.is_empty());
    let mine = registry
        .list_user_conversations(&alice.id, &PageRequest::default())
        .expect("user conversations");
    assert!(mine.items.is_empty());
    let again = conversation(&registry, "standup");
    assert_ne!(again, standup);
}

#[test]
fn conversation_deletion_is_last_event() {
    let registry = Registry::new();
    let listener = Arc::new(Recorder::default());
    registry.set_event_listener(listener.clone());
    let standup = conversation(&registry, "standup");
    registry.delete_conversation(&standup).expect("delete");

    let received = listener.types();
    assert_eq!(
        received,
        [
            (standup.clone(), 1, "conversation:created".to_owned()),
            (standup, 2, "conversation:deleted".to_owned())
        ]
    );
}

#[test]
fn conversation_deletion_ends_legs_and_members() {
    let registry = Registry::new();
    let listener = Arc::new(Recorder::default());
    registry.set_event_listener(listener.clone());
    let alice = user(&registry, "alice");
    let standup = conversation(&registry, "standup");
    let member = join(&registry, &standup, &alice.id);
    publish(&registry, &standup, &member);
    let before = listener.types().len();

    registry.delete_conversation(&standup).expect("delete");

    let types: Vec<String> = listener.types()[before..]
        .iter()
        .map(|(_, _, kind)| kind.clone())
        .collect();
    assert_eq!(
        types,
        [
            "rtc:terminate",
            "member:media",
            "member:left",
            "conversation:deleted"
        ]
    );
    let deleted = registry
        .events(&standup, &EventQuery::default())
        .expect_err("the log is gone with the conversation");
    assert_eq!(deleted, RoomError::ConversationDeleted(standup));
}

#[test]
fn invite_needs_existing_user() {
    let registry = Registry::new();
    let standup = conversation(&registry, "standup");
    let unknown = UserId::from("USR-missing");

    let result = registry.add_member(&standup, &unknown, MemberAction::Invite, None);
    assert_eq!(result, Err(RoomError::UserNotFound(unknown)));
    assert_eq!(event_types(&registry, &standup), ["conversation:created"]);
}

#[test]
fn invite_of_active_member_conflicts() {
    let registry = Registry::new();
    let alice = user(&registry, "alice");
    let standup = conversation(&registry, "standup");
    let member = join(&registry, &standup, &alice.id);

    let result = registry.add_member(&standup, &alice.id, MemberAction::Invite, None);
    assert_eq!(
        result,
        Err(RoomError::AlreadyMember {
            user: alice.id,
            member,
            state: MemberState::Joined,
        })
    );
}

#[test]
fn join_member_accepts_invitation() {
    let registry = Registry::new();
    let bob = user(&registry, "bob");
    let standup = conversation(&registry, "standup");
    let invited = registry
        .add_member(&standup, &bob.id, MemberAction::Invite, None)
        .expect("invite")
        .member;

    let joined = registry.join_member(&standup, &invited.id).expect("join");
    assert!(!joined.created);
    assert_eq!(joined.member.id, invited.id);
    assert_eq!(joined.member.state, MemberState::Joined);
    assert!(joined.closed_legs.is_empty());
}

#[test]
fn rejoin_closes_lingering_legs() {
    let registry = Registry::new();
    let alice = user(&registry, "alice");
    let bob = user(&registry, "bob");
    let standup = conversation(&registry, "standup");
    let alice_member = join(&registry, &standup, &alice.id);
    let bob_member = join(&registry, &standup, &bob.id);
    let alice_leg = publish(&registry, &standup, &alice_member);
    let bob_receives = LegId::generate();
    registry
        .add_subscriber_leg(&standup, &bob_member, &bob_receives, &alice_leg)
        .expect("subscribe");

    let again = registry
        .add_member(&standup, &alice.id, MemberAction::Join, None)
        .expect("join again");
    assert!(!again.created);
    assert_eq!(again.member.id, alice_member);
    let closed: Vec<&LegId> = again.closed_legs.iter().map(|leg| &leg.id).collect();
    assert_eq!(closed, [&alice_leg, &bob_receives]);

    let conversation = registry.conversation(&standup).expect("conversation");
    assert!(conversation.legs.is_empty());
    assert_eq!(conversation.members.len(), 2);
    let events = registry
        .events(&standup, &EventQuery::default())
        .expect("events");
    let terminate = events
        .iter()
        .find(|event| {
            event.kind == EventType::RtcTerminate && event.body["rtc_id"] == alice_leg.as_str()
        })
        .expect("rtc:terminate of the old leg");
    assert_eq!(terminate.body["reason"], "member_rejoined");
}

#[test]
fn left_member_cannot_join_again() {
    let registry = Registry::new();
    let alice = user(&registry, "alice");
    let standup = conversation(&registry, "standup");
    let member = join(&registry, &standup, &alice.id);
    registry.remove_member(&standup, &member).expect("leave");

    assert_eq!(
        registry.join_member(&standup, &member),
        Err(RoomError::MemberAlreadyLeft(member.clone()))
    );
    assert_eq!(
        registry.remove_member(&standup, &member),
        Err(RoomError::MemberAlreadyLeft(member.clone()))
    );
    let fresh = registry
        .add_member(&standup, &alice.id, MemberAction::Join, None)
        .expect("join as a new member");
    assert!(fresh.created);
    assert_ne!(fresh.member.id, member);
}

#[test]
fn user_conversations_show_newest_member() {
    let registry = Registry::new();
    let alice = user(&registry, "alice");
    let standup = conversation(&registry, "standup");
    let review = conversation(&registry, "review");
    conversation(&registry, "other");
    let first = join(&registry, &standup, &alice.id);
    registry.remove_member(&standup, &first).expect("leave");
    let invited = registry
        .add_member(&review, &alice.id, MemberAction::Invite, None)
        .expect("invite")
        .member;
    let second = join(&registry, &standup, &alice.id);

    let page = registry
        .list_user_conversations(&alice.id, &PageRequest::default())
        .expect("user conversations");
    let listed: Vec<(&ConversationId, &MemberId, MemberState)> = page
        .items
        .iter()
        .map(|item| (&item.conversation.id, &item.member.id, item.member.state))
        .collect();
    assert_eq!(
        listed,
        [
            (&review, &invited.id, MemberState::Invited),
            (&standup, &second, MemberState::Joined)
        ]
    );
    let unknown = UserId::from("USR-missing");
    assert_eq!(
        registry
            .list_user_conversations(&unknown, &PageRequest::default())
            .map(|page| page.items.len()),
        Err(RoomError::UserNotFound(unknown))
    );
}

#[test]
fn listener_gets_events_in_order() {
    let registry = Registry::new();
    let listener = Arc::new(Recorder::default());
    registry.set_event_listener(listener.clone());
    let alice = user(&registry, "alice");
    let standup = conversation(&registry, "standup");
    let member = join(&registry, &standup, &alice.id);
    registry
        .post_event(
            &standup,
            NewEvent {
                kind: EventType::Custom("custom:hello".to_owned()),
                from: member.clone(),
                to: None,
                body: json!({ "text": "hi" }),
            },
        )
        .expect("post");
    registry.remove_member(&standup, &member).expect("leave");

    let ids: Vec<u64> = listener.types().iter().map(|(_, id, _)| *id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    let stored: Vec<String> = event_types(&registry, &standup);
    let received: Vec<String> = listener
        .types()
        .into_iter()
        .map(|(_, _, kind)| kind)
        .collect();
    assert_eq!(received, stored);
}

#[test]
fn empty_conversations_expire_after_ttl() {
    let registry = Registry::new();
    let alice = user(&registry, "alice");
    let ttl = |seconds| NewConversation {
        properties: ConversationProperties {
            video: false,
            ttl: Some(seconds),
        },
        ..NewConversation::default()
    };
    let empty = registry.create_conversation(ttl(60)).expect("create").id;
    let occupied = registry.create_conversation(ttl(60)).expect("create").id;
    let kept = conversation(&registry, "no ttl");
    join(&registry, &occupied, &alice.id);

    let now = OffsetDateTime::now_utc();
    assert!(registry.expire_conversations(now).is_empty());

    let later = now + Duration::seconds(61);
    let expired: Vec<ConversationId> = registry
        .expire_conversations(later)
        .into_iter()
        .map(|outcome| outcome.expect("expired").conversation.id)
        .collect();
    assert_eq!(expired, std::slice::from_ref(&empty));
    assert_eq!(
        registry.conversation(&empty),
        Err(RoomError::ConversationDeleted(empty))
    );
    assert!(registry.conversation(&occupied).is_ok());
    assert!(registry.conversation(&kept).is_ok());
}

/// Records every event the registry hands over.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(ConversationId, u64, String)>>,
}

impl Recorder {
    fn types(&self) -> Vec<(ConversationId, u64, String)> {
        self.events.lock().expect("recorder lock").clone()
    }
}

impl EventListener for Recorder {
    fn appended(&self, conversation_id: &ConversationId, event: &Event) {
        self.events.lock().expect("recorder lock").push((
            conversation_id.clone(),
            event.id,
            event.kind.to_string(),
        ));
    }
}
