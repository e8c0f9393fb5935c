//! Tests that a command whose commit fails leaves the registry exactly as it was.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use crate::storage::{EventRange, LoadedState, MemoryStorage, Storage, StorageError, Write};
use crate::*;

/// Memory storage whose commits fail while `failing` is set.
#[derive(Default)]
struct FlakyStorage {
    inner: MemoryStorage,
    failing: AtomicBool,
}

impl Storage for FlakyStorage {
    fn load(&self) -> Result<LoadedState, StorageError> {
        self.inner.load()
    }

    fn commit(&self, batch: &[Write]) -> Result<(), StorageError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StorageError::Unavailable("disk full".to_owned()));
        }
        self.inner.commit(batch)
    }

    fn events(
        &self,
        conversation_id: &ConversationId,
        range: &EventRange,
    ) -> Result<Vec<Event>, StorageError> {
        self.inner.events(conversation_id, range)
    }
}

/// A conversation with two JOINED members, one publishing and one receiving.
struct Scene {
    storage: Arc<FlakyStorage>,
    registry: Registry,
    conversation: ConversationId,
    alice: UserId,
    alice_member: MemberId,
    bob_member: MemberId,
    alice_leg: LegId,
}

impl Scene {
    fn new() -> Self {
        let storage = Arc::new(FlakyStorage::default());
        let registry = Registry::with_storage(storage.clone()).expect("registry");
        let new_user = |name: &str| {
            registry
                .create_user(NewUser {
                    name: name.to_owned(),
                    display_name: None,
                })
                .expect("user")
                .id
        };
        let alice = new_user("alice");
        let bob = new_user("bob");
        let conversation = registry
            .create_conversation(NewConversation {
                name: Some("standup".to_owned()),
                ..NewConversation::default()
            })
            .expect("conversation")
            .id;
        let join = |user: &UserId| {
            registry
                .add_member(&conversation, user, MemberAction::Join, None)
                .expect("join")
                .member
                .id
        };
        let alice_member = join(&alice);
        let bob_member = join(&bob);
        let alice_leg = LegId::generate();
        registry
            .add_publisher_leg(
                &conversation,
                &alice_member,
                &alice_leg,
                &[MediaKind::Audio],
            )
            .expect("publish");
        registry
            .add_subscriber_leg(&conversation, &bob_member, &LegId::generate(), &alice_leg)
            .expect("subscribe");
        Scene {
            storage,
            registry,
            conversation,
            alice,
            alice_member,
            bob_member,
            alice_leg,
        }
    }

    /// Everything a client could observe.
    fn observe(&self) -> (Conversation, Vec<User>, Vec<Event>, ForwardingTable) {
        let registry = &self.registry;
        (
            registry
                .conversation(&self.conversation)
                .expect("conversation"),
            registry.users(),
            registry
                .events(&self.conversation, &EventQuery::default())
                .expect("events"),
            registry
                .forwarding_table(&self.conversation)
                .expect("forwarding table"),
        )
    }

    /// Runs a command with failing storage, and checks that it failed and changed nothing.
    fn fails_cleanly<T: std::fmt::Debug>(
        &self,
        command: impl FnOnce(&Registry) -> Result<T, RoomError>,
    ) {
        let before = self.observe();
        self.storage.failing.store(true, Ordering::SeqCst);
        let result = command(&self.registry);
        self.storage.failing.store(false, Ordering::SeqCst);

        assert!(
            matches!(
                result,
                Err(RoomError::Storage(StorageError::Unavailable(_)))
            ),
            "{result:?}"
        );
        assert_eq!(self.observe(), before);
        assert!(self.registry.find_leg(&self.alice_leg).is_ok());
    }
}

#[test]
fn failed_user_commands_change_nothing() {
    let scene = Scene::new();
    let new = NewUser {
        name: "carol".to_owned(),
        display_name: None,
    };
    scene.fails_cleanly(|registry| registry.create_user(new.clone()));
    let rename = UserUpdate {
        name: Some("alicia".to_owned()),
        ..UserUpdate::default()
    };
    scene.fails_cleanly(|registry| registry.update_user(&scene.alice, rename.clone()));
    scene.fails_cleanly(|registry| registry.delete_user(&scene.alice));

    // The names the failed commands wanted are still free, and the user still there.
    assert!(scene.registry.create_user(new).is_ok());
    assert!(scene.registry.update_user(&scene.alice, rename).is_ok());
    assert!(scene.registry.delete_user(&scene.alice).is_ok());
}

#[test]
fn failed_conversation_commands_change_nothing() {
    let scene = Scene::new();
    let new = NewConversation {
        name: Some("review".to_owned()),
        ..NewConversation::default()
    };
    scene.fails_cleanly(|registry| registry.create_conversation(new.clone()));
    let rename = ConversationUpdate {
        name: Some("daily".to_owned()),
        ..ConversationUpdate::default()
    };
    scene.fails_cleanly(|registry| {
        registry.update_conversation(&scene.conversation, rename.clone())
    });
    scene.fails_cleanly(|registry| registry.delete_conversation(&scene.conversation));
    assert!(
        scene
            .registry
            .list_conversations(&PageRequest::default())
            .expect("list")
            .items
            .len()
            == 1
    );

    assert!(scene.registry.create_conversation(new).is_ok());
    assert!(
        scene
            .registry
            .update_conversation(&scene.conversation, rename)
            .is_ok()
    );
    assert!(
        scene
            .registry
            .delete_conversation(&scene.conversation)
            .is_ok()
    );
}

#[test]
fn failed_member_commands_change_nothing() {
    let scene = Scene::new();
    let carol = scene
        .registry
        .create_user(NewUser {
            name: "carol".to_owned(),
            display_name: None,
        })
        .expect("carol")
        .id;
    let conversation = scene.conversation.clone();
    scene.fails_cleanly(|registry| {
        registry.add_member(&conversation, &carol, MemberAction::Invite, None)
    });
    scene.fails_cleanly(|registry| {
        registry.add_member(&conversation, &scene.alice, MemberAction::Join, None)
    });
    scene.fails_cleanly(|registry| registry.remove_member(&conversation, &scene.alice_member));
    scene.fails_cleanly(|registry| registry.join_member(&conversation, &scene.bob_member));

    let added = scene
        .registry
        .add_member(&conversation, &carol, MemberAction::Invite, None)
        .expect("invite after the failure");
    assert!(added.created);
}

#[test]
fn failed_media_commands_change_nothing() {
    let scene = Scene::new();
    let conversation = scene.conversation.clone();
    let new_leg = LegId::generate();
    scene.fails_cleanly(|registry| {
        registry.add_publisher_leg(
            &conversation,
            &scene.bob_member,
            &new_leg,
            &[MediaKind::Video],
        )
    });
    scene.fails_cleanly(|registry| {
        registry.close_leg(&conversation, &scene.alice_leg, LegCloseReason::Requested)
    });
    scene.fails_cleanly(|registry| {
        registry.post_event(
            &conversation,
            NewEvent {
                kind: EventType::AudioMuteOn,
                from: scene.bob_member.clone(),
                to: Some(scene.alice_member.clone()),
                body: json!({}),
            },
        )
    });

    // The leg id the failed command claimed is free again.
    assert!(
        scene
            .registry
            .add_publisher_leg(
                &conversation,
                &scene.bob_member,
                &new_leg,
                &[MediaKind::Video]
            )
            .is_ok()
    );
}
