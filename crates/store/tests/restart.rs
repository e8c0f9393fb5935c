//! A registry on a real SQLite file: what survives a restart, and the schema check.

use std::path::Path;
use std::sync::Arc;

use room::{
    ConversationId, ConversationProperties, Event, EventQuery, EventType, LegId, MediaKind,
    MemberAction, MemberId, MemberState, NewConversation, NewEvent, NewUser, Order, PageRequest,
    Registry, RoomError, UserId, UserUpdate,
};
use serde_json::json;
use store::{DATABASE_FILE_NAME, OpenError, SqliteStore};

fn open(dir: &Path) -> Registry {
    let store = SqliteStore::open(dir).expect("open store");
    Registry::with_storage(Arc::new(store)).expect("load registry")
}

fn all_events(registry: &Registry, conversation: &ConversationId) -> Vec<Event> {
    registry
        .events(conversation, &EventQuery::default())
        .expect("events")
}

fn post(registry: &Registry, conversation: &ConversationId, from: &MemberId, text: &str) -> u64 {
    registry
        .post_event(
            conversation,
            NewEvent {
                kind: EventType::Custom("custom:note".to_owned()),
                from: from.clone(),
                to: None,
                body: json!({ "text": text }),
            },
        )
        .expect("post")
        .event
        .id
}

struct Written {
    alice: UserId,
    bob: UserId,
    standup: ConversationId,
    deleted: ConversationId,
    alice_member: MemberId,
    bob_member: MemberId,
}

fn write_everything(registry: &Registry) -> Written {
    let alice = registry
        .create_user(NewUser {
            name: "alice".to_owned(),
            display_name: Some("Alice".to_owned()),
        })
        .expect("alice")
        .id;
    let bob = registry
        .create_user(NewUser {
            name: "bob".to_owned(),
            display_name: None,
        })
        .expect("bob")
        .id;
    let standup = registry
        .create_conversation(NewConversation {
            name: Some("standup".to_owned()),
            display_name: Some("Standup".to_owned()),
            properties: ConversationProperties {
                video: true,
                ttl: Some(600),
            },
        })
        .expect("standup")
        .id;
    let deleted = registry
        .create_conversation(NewConversation {
            name: Some("old".to_owned()),
            ..NewConversation::default()
        })
        .expect("old")
        .id;
    registry.delete_conversation(&deleted).expect("delete old");

    let alice_member = registry
        .add_member(&standup, &alice, MemberAction::Join, None)
        .expect("alice joins")
        .member
        .id;
    let bob_member = registry
        .add_member(
            &standup,
            &bob,
            MemberAction::Invite,
            Some("alice".to_owned()),
        )
        .expect("bob invited")
        .member
        .id;
    let leg = LegId::generate();
    registry
        .add_publisher_leg(&standup, &alice_member, &leg, &[MediaKind::Audio])
        .expect("publish");
    registry
        .post_event(
            &standup,
            NewEvent {
                kind: EventType::VideoMuteOn,
                from: alice_member.clone(),
                to: None,
                body: json!({}),
            },
        )
        .expect("mute");
    post(registry, &standup, &alice_member, "before the restart");

    Written {
        alice,
        bob,
        standup,
        deleted,
        alice_member,
        bob_member,
    }
}

#[test]
fn restart_keeps_everything_but_legs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = open(dir.path());
    let written = write_everything(&registry);
    let users_before = registry.users();
    let conversation_before = registry.conversation(&written.standup).expect("standup");
    let events_before = all_events(&registry, &written.standup);
    drop(registry);

    let registry = open(dir.path());
    assert_eq!(registry.users(), users_before);
    let conversation = registry.conversation(&written.standup).expect("standup");
    assert_eq!(conversation.name, "standup");
    assert_eq!(conversation.display_name.as_deref(), Some("Standup"));
    assert_eq!(conversation.properties, conversation_before.properties);
    assert_eq!(conversation.created, conversation_before.created);
    assert_eq!(
        conversation.sequence_number,
        conversation_before.sequence_number
    );
    assert!(conversation.legs.is_empty());
    assert_eq!(all_events(&registry, &written.standup), events_before);

    let alice = registry
        .member(&written.standup, &written.alice_member)
        .expect("alice's member");
    assert_eq!(alice.state, MemberState::Joined);
    assert!(
        alice.media.video_settings.muted,
        "mute outlives the restart"
    );
    assert!(
        !alice.media.audio_settings.enabled,
        "no leg publishes after a restart"
    );
    let bob = registry
        .member(&written.standup, &written.bob_member)
        .expect("bob's member");
    assert_eq!(bob.state, MemberState::Invited);
    assert_eq!(bob.invited_by.as_deref(), Some("alice"));
    assert_eq!(bob.timestamp, conversation_before.members[1].timestamp);

    assert_eq!(
        registry.conversation(&written.deleted),
        Err(RoomError::ConversationDeleted(written.deleted.clone()))
    );
    assert_eq!(
        registry.user_by_name("alice").map(|user| user.id),
        Ok(written.alice.clone())
    );
    let mine = registry
        .list_user_conversations(&written.bob, &PageRequest::default())
        .expect("bob's conversations");
    assert_eq!(mine.items.len(), 1);
    assert_eq!(mine.items[0].member.id, written.bob_member);
}

#[test]
fn ids_continue_after_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = open(dir.path());
    let written = write_everything(&registry);
    let last_before = registry
        .conversation(&written.standup)
        .expect("standup")
        .sequence_number;
    drop(registry);

    let registry = open(dir.path());
    let next = post(&registry, &written.standup, &written.alice_member, "after");
    assert_eq!(next, last_before + 1);
    let ids: Vec<u64> = all_events(&registry, &written.standup)
        .iter()
        .map(|event| event.id)
        .collect();
    let expected: Vec<u64> = (1..=next).collect();
    assert_eq!(ids, expected);

    // New records sort after the old ones: the creation sequence did not start over.
    let carol = registry
        .create_user(NewUser {
            name: "carol".to_owned(),
            display_name: None,
        })
        .expect("carol");
    let newest = registry
        .list_users(&PageRequest {
            page_size: 1,
            order: Order::Desc,
            cursor: None,
        })
        .expect("users");
    assert_eq!(newest.items, [carol]);

    // The name of the deleted conversation is free, across the restart too.
    registry
        .create_conversation(NewConversation {
            name: Some("old".to_owned()),
            ..NewConversation::default()
        })
        .expect("reuse the deleted conversation's name");
}

#[test]
fn deletions_and_updates_persist() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = open(dir.path());
    let written = write_everything(&registry);
    registry
        .update_user(
            &written.bob,
            UserUpdate {
                name: Some("robert".to_owned()),
                display_name: Some(Some("Robert".to_owned())),
            },
        )
        .expect("rename bob");
    let departures = registry.delete_user(&written.alice).expect("delete alice");
    assert_eq!(departures.len(), 1);
    assert_eq!(departures[0].closed_legs.len(), 1);
    drop(registry);

    let registry = open(dir.path());
    assert_eq!(
        registry.user(&written.alice),
        Err(RoomError::UserNotFound(written.alice.clone()))
    );
    let bob = registry.user(&written.bob).expect("bob");
    assert_eq!(bob.name, "robert");
    assert_eq!(bob.display_name.as_deref(), Some("Robert"));
    let alice_member = registry
        .member(&written.standup, &written.alice_member)
        .expect("alice's member stays as history");
    assert_eq!(alice_member.state, MemberState::Left);
    assert_eq!(alice_member.user_name, "alice");
    let types: Vec<String> = all_events(&registry, &written.standup)
        .iter()
        .map(|event| event.kind.to_string())
        .collect();
    assert_eq!(types.last().map(String::as_str), Some("member:left"));
}

#[test]
fn database_file_is_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("nested").join("data");
    let store = SqliteStore::open(&data_dir).expect("open");
    assert_eq!(store.path(), data_dir.join(DATABASE_FILE_NAME));
    assert!(data_dir.join(DATABASE_FILE_NAME).is_file());
}

#[test]
fn newer_schema_is_rejected() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(SqliteStore::open(dir.path()).expect("create"));
    let connection =
        rusqlite::Connection::open(dir.path().join(DATABASE_FILE_NAME)).expect("raw open");
    connection
        .pragma_update(None, "user_version", 99)
        .expect("set version");
    drop(connection);

    let result = SqliteStore::open(dir.path());
    assert!(
        matches!(
            result,
            Err(OpenError::UnsupportedSchema {
                found: 99,
                supported: 1,
                ..
            })
        ),
        "{result:?}"
    );
}
