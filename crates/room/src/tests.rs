//! Tests of the model's rules through the registry's commands.

use serde_json::json;

use crate::*;

struct Fixture {
    registry: Registry,
    conversation: ConversationId,
}

impl Fixture {
    fn new() -> Self {
        let registry = Registry::new();
        let conversation = registry
            .create_conversation(NewConversation {
                name: Some("standup".to_owned()),
                ..NewConversation::default()
            })
            .expect("create conversation")
            .id;
        Fixture {
            registry,
            conversation,
        }
    }

    fn user(&self, name: &str) -> UserId {
        self.registry
            .create_user(NewUser {
                name: name.to_owned(),
                display_name: None,
            })
            .expect("create user")
            .id
    }

    fn joined(&self, name: &str) -> MemberId {
        let user = self.user(name);
        self.registry
            .add_member(&self.conversation, &user, MemberAction::Join, None)
            .expect("join")
            .member
            .id
    }

    fn publish(&self, member: &MemberId, tracks: &[MediaKind]) -> LegId {
        let leg = LegId::generate();
        self.registry
            .add_publisher_leg(&self.conversation, member, &leg, tracks)
            .expect("publish");
        leg
    }

    fn subscribe(&self, member: &MemberId, publisher: &LegId) -> LegId {
        let leg = LegId::generate();
        self.registry
            .add_subscriber_leg(&self.conversation, member, &leg, publisher)
            .expect("subscribe");
        leg
    }

    fn events(&self) -> Vec<Event> {
        self.registry
            .events(&self.conversation, &EventQuery::default())
            .expect("events")
    }

    fn event_types(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|event| event.kind.to_string())
            .collect()
    }

    fn post(&self, from: &MemberId, to: Option<&MemberId>, kind: EventType) -> PostedEvent {
        self.registry
            .post_event(
                &self.conversation,
                NewEvent {
                    kind,
                    from: from.clone(),
                    to: to.cloned(),
                    body: json!({}),
                },
            )
            .expect("post event")
    }
}

const AUDIO_VIDEO: [MediaKind; 2] = [MediaKind::Audio, MediaKind::Video];

#[test]
fn user_names_are_unique() {
    let registry = Registry::new();
    let alice = NewUser {
        name: "alice".to_owned(),
        display_name: Some("Alice".to_owned()),
    };
    let created = registry.create_user(alice.clone()).expect("first alice");

    assert!(created.id.as_str().starts_with("USR-"));
    assert_eq!(
        registry.create_user(alice),
        Err(RoomError::DuplicateUserName("alice".to_owned()))
    );
    assert_eq!(registry.users().len(), 1);
    assert_eq!(registry.user_by_name("alice"), Ok(created));
}

#[test]
fn user_name_validation() {
    let registry = Registry::new();
    let too_long = "x".repeat(MAX_NAME_LENGTH + 1);
    for name in [
        "",
        "   ",
        "bad\nname",
        "alice ",
        " alice",
        too_long.as_str(),
    ] {
        let result = registry.create_user(NewUser {
            name: name.to_owned(),
            display_name: None,
        });
        assert!(
            matches!(result, Err(RoomError::InvalidField { field: "name", .. })),
            "{name:?} gave {result:?}"
        );
    }
    assert!(registry.users().is_empty());
}

#[test]
fn unknown_ids_are_not_found() {
    let registry = Registry::new();
    let conversation = ConversationId::from("CON-missing");

    assert_eq!(
        registry.conversation(&conversation),
        Err(RoomError::ConversationNotFound(conversation.clone()))
    );
    assert_eq!(
        registry.user(&UserId::from("USR-missing")),
        Err(RoomError::UserNotFound(UserId::from("USR-missing")))
    );
    assert_eq!(
        registry.close_leg_anywhere(&LegId::from("LEG-missing"), LegCloseReason::Requested),
        Err(RoomError::LegNotFound(LegId::from("LEG-missing")))
    );
}

#[test]
fn conversation_names_are_unique() {
    let fixture = Fixture::new();
    let duplicate = fixture.registry.create_conversation(NewConversation {
        name: Some("standup".to_owned()),
        ..NewConversation::default()
    });
    assert_eq!(
        duplicate,
        Err(RoomError::DuplicateConversationName("standup".to_owned()))
    );
}

#[test]
fn conversation_without_name_is_named_by_id() {
    let registry = Registry::new();
    let conversation = registry
        .create_conversation(NewConversation {
            properties: ConversationProperties {
                video: true,
                ttl: Some(60),
            },
            ..NewConversation::default()
        })
        .expect("create");

    assert!(conversation.id.as_str().starts_with("CON-"));
    assert_eq!(conversation.name, conversation.id.as_str());
    assert!(conversation.properties.video);
    assert_eq!(conversation.properties.ttl, Some(60));
    assert_eq!(conversation.sequence_number, 1);
}

#[test]
fn join_appends_member_joined() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    let member = fixture
        .registry
        .member(&fixture.conversation, &alice)
        .expect("member");

    assert_eq!(member.state, MemberState::Joined);
    assert!(member.timestamp.joined.is_some());
    assert!(member.timestamp.invited.is_none());
    assert_eq!(member.user_name, "alice");

    let events = fixture.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].id, 1);
    assert_eq!(events[0].kind, EventType::ConversationCreated);
    assert_eq!(events[0].from, None);
    assert_eq!(events[0].body["name"], "standup");
    assert_eq!(events[1].id, 2);
    assert_eq!(events[1].kind, EventType::MemberJoined);
    assert_eq!(events[1].from.as_ref(), Some(&alice));
    assert_eq!(events[1].body["state"], "JOINED");
    assert_eq!(events[1].body["user"]["name"], "alice");
    assert!(events[1].body["timestamp"]["joined"].is_string());

    let conversation = fixture
        .registry
        .conversation(&fixture.conversation)
        .expect("conversation");
    assert_eq!(conversation.sequence_number, 2);
    assert_eq!(conversation.members.len(), 1);
}

#[test]
fn join_twice_returns_same_member() {
    let fixture = Fixture::new();
    let user = fixture.user("alice");
    let first = fixture
        .registry
        .add_member(&fixture.conversation, &user, MemberAction::Join, None)
        .expect("first join");
    assert!(first.created);

    let second = fixture
        .registry
        .add_member(&fixture.conversation, &user, MemberAction::Join, None)
        .expect("second join");
    assert!(!second.created);
    assert_eq!(second.member.id, first.member.id);
    assert_eq!(second.member.state, MemberState::Joined);
    assert!(second.closed_legs.is_empty());
    assert_eq!(
        fixture
            .registry
            .members(&fixture.conversation)
            .expect("members")
            .len(),
        1
    );
    assert_eq!(
        fixture.event_types(),
        ["conversation:created", "member:joined"]
    );
}

#[test]
fn join_accepts_invitation() {
    let fixture = Fixture::new();
    let user = fixture.user("bob");
    let invited = fixture
        .registry
        .add_member(
            &fixture.conversation,
            &user,
            MemberAction::Invite,
            Some("alice".to_owned()),
        )
        .expect("invite");
    assert!(invited.created);
    let invited = invited.member;
    assert_eq!(invited.state, MemberState::Invited);
    assert_eq!(invited.invited_by.as_deref(), Some("alice"));

    let again =
        fixture
            .registry
            .add_member(&fixture.conversation, &user, MemberAction::Invite, None);
    assert!(matches!(again, Err(RoomError::AlreadyMember { .. })));

    let joined = fixture
        .registry
        .add_member(&fixture.conversation, &user, MemberAction::Join, None)
        .expect("join");
    assert!(!joined.created);
    let joined = joined.member;
    assert_eq!(joined.id, invited.id);
    assert_eq!(joined.state, MemberState::Joined);
    assert!(joined.timestamp.invited.is_some());
    assert!(joined.timestamp.joined.is_some());
    assert_eq!(
        fixture.event_types(),
        ["conversation:created", "member:invited", "member:joined"]
    );
    assert_eq!(fixture.events()[1].body["invited_by"], "alice");
}

#[test]
fn leave_is_final_and_rejoin_creates_member() {
    let fixture = Fixture::new();
    let user = fixture.user("alice");
    let first = fixture
        .registry
        .add_member(&fixture.conversation, &user, MemberAction::Join, None)
        .expect("join")
        .member
        .id;

    let departure = fixture
        .registry
        .remove_member(&fixture.conversation, &first)
        .expect("leave");
    assert_eq!(departure.member.state, MemberState::Left);
    assert!(departure.member.timestamp.left.is_some());
    assert!(departure.closed_legs.is_empty());
    assert_eq!(
        fixture
            .registry
            .remove_member(&fixture.conversation, &first),
        Err(RoomError::MemberAlreadyLeft(first.clone()))
    );

    let second = fixture
        .registry
        .add_member(&fixture.conversation, &user, MemberAction::Join, None)
        .expect("rejoin")
        .member
        .id;
    assert_ne!(first, second);
    assert_eq!(
        fixture.event_types(),
        [
            "conversation:created",
            "member:joined",
            "member:left",
            "member:joined"
        ]
    );
}

#[test]
fn invited_member_cannot_publish() {
    let fixture = Fixture::new();
    let user = fixture.user("bob");
    let invited = fixture
        .registry
        .add_member(&fixture.conversation, &user, MemberAction::Invite, None)
        .expect("invite")
        .member
        .id;

    assert_eq!(
        fixture
            .registry
            .check_publish(&fixture.conversation, &invited),
        Err(RoomError::MemberNotJoined {
            member: invited.clone(),
            state: MemberState::Invited,
        })
    );
    let leg = LegId::generate();
    let publish =
        fixture
            .registry
            .add_publisher_leg(&fixture.conversation, &invited, &leg, &AUDIO_VIDEO);
    assert!(matches!(publish, Err(RoomError::MemberNotJoined { .. })));
    assert_eq!(
        fixture.registry.leg(&fixture.conversation, &leg),
        Err(RoomError::LegNotFound(leg))
    );
}

#[test]
fn publish_appends_rtc_new_and_media() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    let leg = fixture.publish(&alice, &AUDIO_VIDEO);

    let events = fixture.events();
    assert_eq!(
        fixture.event_types(),
        [
            "conversation:created",
            "member:joined",
            "rtc:new",
            "member:media"
        ]
    );
    assert_eq!(events[2].body["rtc_id"], leg.as_str());
    assert_eq!(events[2].body["direction"], "upstream");
    assert_eq!(events[2].body["tracks"], json!(["audio", "video"]));
    assert_eq!(
        events[3].body["media"]["audio_settings"],
        json!({"enabled": true, "muted": false})
    );
    assert_eq!(
        events[3].body["media"]["video_settings"],
        json!({"enabled": true, "muted": false})
    );

    let member = fixture
        .registry
        .member(&fixture.conversation, &alice)
        .expect("member");
    assert!(member.media.audio_settings.enabled);
    assert!(member.media.video_settings.enabled);
}

#[test]
fn duplicate_leg_changes_nothing() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    let leg = fixture.publish(&alice, &[MediaKind::Audio]);
    let before = fixture.events().len();

    let again = fixture.registry.add_publisher_leg(
        &fixture.conversation,
        &alice,
        &leg,
        &[MediaKind::Audio],
    );
    assert_eq!(again, Err(RoomError::DuplicateLeg(leg)));
    assert_eq!(fixture.events().len(), before);
}

#[test]
fn subscribe_rules() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    let bob = fixture.joined("bob");
    let alice_leg = fixture.publish(&alice, &AUDIO_VIDEO);
    let bob_downstream = fixture.subscribe(&bob, &alice_leg);

    let own = fixture
        .registry
        .check_subscribe(&fixture.conversation, &alice, &alice_leg);
    assert_eq!(
        own,
        Err(RoomError::OwnPublisherLeg {
            member: alice.clone(),
            leg: alice_leg.clone(),
        })
    );

    let to_downstream =
        fixture
            .registry
            .check_subscribe(&fixture.conversation, &alice, &bob_downstream);
    assert_eq!(
        to_downstream,
        Err(RoomError::NotAPublisherLeg(bob_downstream.clone()))
    );

    let unknown = LegId::from("LEG-missing");
    assert_eq!(
        fixture
            .registry
            .check_subscribe(&fixture.conversation, &bob, &unknown),
        Err(RoomError::LegNotFound(unknown))
    );

    let carol_user = fixture.user("carol");
    let carol = fixture
        .registry
        .add_member(
            &fixture.conversation,
            &carol_user,
            MemberAction::Invite,
            None,
        )
        .expect("invite carol")
        .member
        .id;
    assert!(matches!(
        fixture
            .registry
            .check_subscribe(&fixture.conversation, &carol, &alice_leg),
        Err(RoomError::MemberNotJoined { .. })
    ));
}

#[test]
fn subscribe_appends_rtc_new_to_publisher() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    let bob = fixture.joined("bob");
    let alice_leg = fixture.publish(&alice, &AUDIO_VIDEO);
    let bob_leg = fixture.subscribe(&bob, &alice_leg);

    let events = fixture.events();
    let last = events.last().expect("an event");
    assert_eq!(last.kind, EventType::RtcNew);
    assert_eq!(last.from.as_ref(), Some(&bob));
    assert_eq!(last.to.as_ref(), Some(&alice));
    assert_eq!(last.body["rtc_id"], bob_leg.as_str());
    assert_eq!(last.body["subscribe"]["rtc_id"], alice_leg.as_str());
}

#[test]
fn forwarding_table_lists_routes() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    let bob = fixture.joined("bob");
    let carol = fixture.joined("carol");
    let alice_leg = fixture.publish(&alice, &AUDIO_VIDEO);
    let bob_leg = fixture.publish(&bob, &[MediaKind::Audio]);
    let carol_from_alice = fixture.subscribe(&carol, &alice_leg);
    let bob_from_alice = fixture.subscribe(&bob, &alice_leg);
    fixture.post(&alice, None, EventType::VideoMuteOn);

    let table = fixture
        .registry
        .forwarding_table(&fixture.conversation)
        .expect("table");
    assert_eq!(table.publishers.len(), 2);

    let alice_routes = table.publisher(&alice_leg).expect("alice's routes");
    assert_eq!(alice_routes.member_id, alice);
    assert_eq!(alice_routes.tracks, AUDIO_VIDEO);
    assert_eq!(
        alice_routes.muted,
        MuteState {
            audio: false,
            video: true
        }
    );
    let subscribers: Vec<&LegId> = alice_routes.subscribers.iter().map(|s| &s.leg_id).collect();
    assert_eq!(subscribers, [&carol_from_alice, &bob_from_alice]);

    let bob_routes = table.publisher(&bob_leg).expect("bob's routes");
    assert!(bob_routes.subscribers.is_empty());
}

#[test]
fn closing_publisher_closes_downstream_legs() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    let bob = fixture.joined("bob");
    let alice_leg = fixture.publish(&alice, &AUDIO_VIDEO);
    let bob_leg = fixture.subscribe(&bob, &alice_leg);
    let before = fixture.events().len();

    let removed = fixture
        .registry
        .close_leg_anywhere(&alice_leg, LegCloseReason::ConnectionFailed)
        .expect("close");
    let removed_ids: Vec<&LegId> = removed.iter().map(|leg| &leg.id).collect();
    assert_eq!(removed_ids, [&alice_leg, &bob_leg]);

    let events = fixture.events();
    let new: Vec<&Event> = events[before..].iter().collect();
    assert_eq!(new.len(), 3);
    assert_eq!(new[0].kind, EventType::RtcTerminate);
    assert_eq!(new[0].from.as_ref(), Some(&bob));
    assert_eq!(new[0].body["reason"], "publisher_closed");
    assert_eq!(new[1].kind, EventType::RtcTerminate);
    assert_eq!(new[1].from.as_ref(), Some(&alice));
    assert_eq!(new[1].body["reason"], "connection_failed");
    assert_eq!(new[2].kind, EventType::MemberMedia);
    assert_eq!(new[2].body["media"]["video_settings"]["enabled"], false);

    assert_eq!(
        fixture
            .registry
            .close_leg_anywhere(&bob_leg, LegCloseReason::PublisherClosed),
        Err(RoomError::LegNotFound(bob_leg))
    );
    let table = fixture
        .registry
        .forwarding_table(&fixture.conversation)
        .expect("table");
    assert!(table.publishers.is_empty());
}

#[test]
fn closing_downstream_leg_keeps_publisher() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    let bob = fixture.joined("bob");
    let alice_leg = fixture.publish(&alice, &AUDIO_VIDEO);
    let bob_leg = fixture.subscribe(&bob, &alice_leg);

    let removed = fixture
        .registry
        .close_leg(&fixture.conversation, &bob_leg, LegCloseReason::Requested)
        .expect("close");
    assert_eq!(removed.len(), 1);
    assert_eq!(
        fixture.event_types().last().map(String::as_str),
        Some("rtc:terminate")
    );
    assert!(
        fixture
            .registry
            .leg(&fixture.conversation, &alice_leg)
            .is_ok()
    );
}

#[test]
fn leaving_closes_legs() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    let bob = fixture.joined("bob");
    let alice_leg = fixture.publish(&alice, &AUDIO_VIDEO);
    let bob_leg = fixture.publish(&bob, &AUDIO_VIDEO);
    let alice_from_bob = fixture.subscribe(&alice, &bob_leg);
    let bob_from_alice = fixture.subscribe(&bob, &alice_leg);

    let departure = fixture
        .registry
        .remove_member(&fixture.conversation, &alice)
        .expect("leave");
    let mut closed: Vec<LegId> = departure
        .closed_legs
        .iter()
        .map(|leg| leg.id.clone())
        .collect();
    closed.sort();
    let mut expected = vec![alice_leg, alice_from_bob, bob_from_alice];
    expected.sort();
    assert_eq!(closed, expected);

    let conversation = fixture
        .registry
        .conversation(&fixture.conversation)
        .expect("conversation");
    let open: Vec<&LegId> = conversation.legs.iter().map(|leg| &leg.id).collect();
    assert_eq!(open, [&bob_leg]);
    assert_eq!(
        fixture.event_types().last().map(String::as_str),
        Some("member:left")
    );
    assert!(
        fixture
            .registry
            .check_publish(&fixture.conversation, &alice)
            .is_err()
    );
}

#[test]
fn mute_sets_state_and_returns_legs() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    let audio_video = fixture.publish(&alice, &AUDIO_VIDEO);
    let video_only = fixture.publish(&alice, &[MediaKind::Video]);

    let posted = fixture.post(&alice, None, EventType::AudioMuteOn);
    assert_eq!(posted.event.kind, EventType::AudioMuteOn);
    assert_eq!(posted.event.to.as_ref(), Some(&alice));
    let change = posted.mute.expect("a mute change");
    assert_eq!(change.member_id, alice);
    assert_eq!(change.kind, MediaKind::Audio);
    assert!(change.muted);
    assert_eq!(change.publisher_legs, std::slice::from_ref(&audio_video));

    let video = fixture.post(&alice, None, EventType::VideoMuteOn);
    let legs = video.mute.expect("a mute change").publisher_legs;
    assert_eq!(legs, [audio_video, video_only]);

    let member = fixture
        .registry
        .member(&fixture.conversation, &alice)
        .expect("member");
    assert!(member.media.audio_settings.muted);
    assert!(member.media.video_settings.muted);
    let types = fixture.event_types();
    assert_eq!(
        types[types.len() - 4..],
        [
            "audio:mute:on",
            "member:media",
            "video:mute:on",
            "member:media"
        ]
    );
}

#[test]
fn repeated_mute_appends_no_media_event() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    fixture.post(&alice, None, EventType::AudioMuteOn);
    let before = fixture.events().len();

    fixture.post(&alice, None, EventType::AudioMuteOn);
    let types = fixture.event_types();
    assert_eq!(types.len(), before + 1);
    assert_eq!(types.last().map(String::as_str), Some("audio:mute:on"));
}

#[test]
fn mute_before_publish_carries_over() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    fixture.post(&alice, None, EventType::VideoMuteOn);

    let muted = fixture
        .registry
        .check_publish(&fixture.conversation, &alice)
        .expect("check");
    assert_eq!(
        muted,
        MuteState {
            audio: false,
            video: true
        }
    );
    let published = fixture
        .registry
        .add_publisher_leg(
            &fixture.conversation,
            &alice,
            &LegId::generate(),
            &AUDIO_VIDEO,
        )
        .expect("publish");
    assert_eq!(published.muted, muted);
}

#[test]
fn mute_of_other_member_targets_it() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    let bob = fixture.joined("bob");
    let bob_leg = fixture.publish(&bob, &AUDIO_VIDEO);

    let posted = fixture.post(&alice, Some(&bob), EventType::AudioMuteOn);
    assert_eq!(posted.event.from.as_ref(), Some(&alice));
    assert_eq!(posted.event.to.as_ref(), Some(&bob));
    let change = posted.mute.expect("a mute change");
    assert_eq!(change.member_id, bob);
    assert_eq!(change.publisher_legs, [bob_leg]);
}

#[test]
fn mute_needs_joined_target() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    let bob = fixture.joined("bob");
    fixture
        .registry
        .remove_member(&fixture.conversation, &bob)
        .expect("bob leaves");
    let before = fixture.events().len();

    let result = fixture.registry.post_event(
        &fixture.conversation,
        NewEvent {
            kind: EventType::AudioMuteOn,
            from: alice,
            to: Some(bob.clone()),
            body: json!({}),
        },
    );
    assert_eq!(
        result,
        Err(RoomError::MemberNotJoined {
            member: bob,
            state: MemberState::Left,
        })
    );
    assert_eq!(fixture.events().len(), before);
}

#[test]
fn posted_event_rules() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    let post = |kind: EventType, body: serde_json::Value| {
        fixture.registry.post_event(
            &fixture.conversation,
            NewEvent {
                kind,
                from: alice.clone(),
                to: None,
                body,
            },
        )
    };

    assert_eq!(
        post(EventType::MemberJoined, json!({})),
        Err(RoomError::EventTypeNotPostable("member:joined".to_owned()))
    );
    let large = json!({ "text": "x".repeat(MAX_POSTED_BODY_BYTES) });
    assert!(matches!(
        post(EventType::Custom("custom:note".to_owned()), large),
        Err(RoomError::EventBodyTooLarge {
            limit: MAX_POSTED_BODY_BYTES,
            ..
        })
    ));

    let posted = post(
        EventType::Custom("custom:note".to_owned()),
        json!({ "text": "hello" }),
    )
    .expect("custom event");
    assert_eq!(posted.event.id, 3);
    assert_eq!(posted.event.body["text"], "hello");
    assert!(posted.mute.is_none());
}

#[test]
fn invited_member_cannot_post() {
    let fixture = Fixture::new();
    let user = fixture.user("bob");
    let invited = fixture
        .registry
        .add_member(&fixture.conversation, &user, MemberAction::Invite, None)
        .expect("invite")
        .member
        .id;

    let result = fixture.registry.post_event(
        &fixture.conversation,
        NewEvent {
            kind: EventType::Custom("custom:hello".to_owned()),
            from: invited.clone(),
            to: None,
            body: json!({}),
        },
    );
    assert_eq!(
        result,
        Err(RoomError::MemberNotJoined {
            member: invited,
            state: MemberState::Invited,
        })
    );
}

#[test]
fn event_type_parsing() {
    for text in [
        "member:joined",
        "member:media",
        "rtc:terminate",
        "audio:mute:on",
        "video:mute:off",
        "custom:a",
        "custom:game:move-1.2_x",
    ] {
        let kind: EventType = text.parse().expect(text);
        assert_eq!(kind.as_str(), text);
    }

    let too_long = format!("custom:{}", "x".repeat(MAX_CUSTOM_NAME_LENGTH + 1));
    for text in [
        "",
        "custom:",
        "custom:with space",
        "text",
        "custom:é",
        &too_long,
    ] {
        assert_eq!(
            text.parse::<EventType>(),
            Err(RoomError::InvalidEventType(text.to_owned())),
            "{text:?}"
        );
    }
}

#[test]
fn event_query_windows() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    for _ in 0..5 {
        fixture.post(&alice, None, EventType::Custom("custom:tick".to_owned()));
    }
    let ids = |query: EventQuery| -> Vec<u64> {
        fixture
            .registry
            .events(&fixture.conversation, &query)
            .expect("events")
            .iter()
            .map(|event| event.id)
            .collect()
    };

    assert_eq!(ids(EventQuery::default()), [1, 2, 3, 4, 5, 6, 7]);
    let window = EventQuery {
        start_id: Some(2),
        end_id: Some(5),
        ..EventQuery::default()
    };
    assert_eq!(ids(window), [2, 3, 4, 5]);
    let first_page = EventQuery {
        page_size: 2,
        ..window
    };
    assert_eq!(ids(first_page), [2, 3]);
    let newest = EventQuery {
        order: Order::Desc,
        ..first_page
    };
    assert_eq!(ids(newest), [5, 4]);
}

#[test]
fn leg_connected_is_recorded() {
    let fixture = Fixture::new();
    let alice = fixture.joined("alice");
    let leg = fixture.publish(&alice, &AUDIO_VIDEO);

    let connected = fixture
        .registry
        .mark_leg_connected(&leg)
        .expect("connected");
    assert_eq!(connected.state, LegState::Connected);
    let table = fixture
        .registry
        .forwarding_table(&fixture.conversation)
        .expect("table");
    assert_eq!(table.publishers[0].state, LegState::Connected);
}

#[test]
fn census_counts_conversations_and_members_by_state() {
    let fixture = Fixture::new();
    assert_eq!(
        fixture.registry.census(),
        Census {
            conversations: 1,
            ..Census::default()
        }
    );

    fixture.joined("alice");
    let bob = fixture.joined("bob");
    let carol = fixture.user("carol");
    fixture
        .registry
        .add_member(&fixture.conversation, &carol, MemberAction::Invite, None)
        .expect("invite");
    fixture
        .registry
        .remove_member(&fixture.conversation, &bob)
        .expect("bob leaves");
    fixture
        .registry
        .create_conversation(NewConversation::default())
        .expect("a second conversation");

    let census = fixture.registry.census();
    assert_eq!(census.conversations, 2);
    assert_eq!(census.members_joined, 1);
    assert_eq!(census.members_invited, 1);
    assert_eq!(census.members_left, 1);
}
