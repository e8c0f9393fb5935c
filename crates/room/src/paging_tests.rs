//! Tests of paging with cursors and of event log windows.

use serde_json::json;

use crate::*;

fn registry_with_users(count: usize) -> (Registry, Vec<UserId>) {
    let registry = Registry::new();
    let ids = (0..count)
        .map(|index| {
            registry
                .create_user(NewUser {
                    name: format!("user-{index}"),
                    display_name: None,
                })
                .expect("create user")
                .id
        })
        .collect();
    (registry, ids)
}

fn request(page_size: usize, order: Order, cursor: Option<String>) -> PageRequest {
    PageRequest {
        page_size,
        order,
        cursor,
    }
}

fn user_ids(page: &Page<User>) -> Vec<UserId> {
    page.items.iter().map(|user| user.id.clone()).collect()
}

#[test]
fn empty_list_has_no_cursors() {
    let (registry, _) = registry_with_users(0);
    let page = registry.list_users(&PageRequest::default()).expect("list");
    assert!(page.items.is_empty());
    assert_eq!(page.next, None);
    assert_eq!(page.prev, None);
}

#[test]
fn exactly_one_page() {
    let (registry, ids) = registry_with_users(DEFAULT_PAGE_SIZE);
    let page = registry.list_users(&PageRequest::default()).expect("list");
    assert_eq!(user_ids(&page), ids);
    assert_eq!(page.next, None);
    assert_eq!(page.prev, None);
}

#[test]
fn one_more_than_page_size() {
    let (registry, ids) = registry_with_users(4);
    let first = registry
        .list_users(&request(3, Order::Asc, None))
        .expect("first page");
    assert_eq!(user_ids(&first), ids[..3]);
    assert_eq!(first.prev, None);

    let second = registry
        .list_users(&request(3, Order::Asc, first.next.clone()))
        .expect("second page");
    assert_eq!(user_ids(&second), ids[3..]);
    assert_eq!(second.next, None);

    let back = registry
        .list_users(&request(3, Order::Asc, second.prev.clone()))
        .expect("back to the first page");
    assert_eq!(user_ids(&back), ids[..3]);
    assert_eq!(back.prev, None);
    assert_eq!(back.next, first.next);
}

#[test]
fn page_size_bounds() {
    let (registry, _) = registry_with_users(1);
    for page_size in [0, MAX_PAGE_SIZE + 1] {
        let result = registry.list_users(&request(page_size, Order::Asc, None));
        assert!(
            matches!(
                result,
                Err(RoomError::InvalidField {
                    field: "page_size",
                    ..
                })
            ),
            "page_size {page_size} gave {result:?}"
        );
    }
    assert!(
        registry
            .list_users(&request(MAX_PAGE_SIZE, Order::Asc, None))
            .is_ok()
    );
    assert!(registry.list_users(&request(1, Order::Asc, None)).is_ok());
}

#[test]
fn invalid_cursors_are_rejected() {
    let (registry, _) = registry_with_users(3);
    let conversation = registry
        .create_conversation(NewConversation::default())
        .expect("create")
        .id;
    registry
        .create_conversation(NewConversation::default())
        .expect("create");
    let users_cursor = registry
        .list_users(&request(1, Order::Asc, None))
        .expect("list")
        .next;
    let conversations_cursor = registry
        .list_conversations(&request(1, Order::Asc, None))
        .expect("list")
        .next;
    assert!(users_cursor.is_some());

    let attempts = [
        ("garbage", Some("!!not a cursor!!".to_owned()), Order::Asc),
        ("other list", conversations_cursor, Order::Asc),
        ("other order", users_cursor.clone(), Order::Desc),
        ("empty", Some(String::new()), Order::Asc),
    ];
    for (case, cursor, order) in attempts {
        let result = registry.list_users(&request(1, order, cursor));
        assert!(
            matches!(result, Err(RoomError::InvalidCursor(_))),
            "{case}: {result:?}"
        );
    }

    let member_list = registry.list_members(&conversation, &request(1, Order::Asc, users_cursor));
    assert!(matches!(member_list, Err(RoomError::InvalidCursor(_))));
}

#[test]
fn walk_forward_then_back() {
    let (registry, ids) = registry_with_users(7);
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = registry
            .list_users(&request(3, Order::Asc, cursor))
            .expect("page");
        cursor = page.next.clone();
        pages.push(user_ids(&page));
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(
        pages,
        [ids[..3].to_vec(), ids[3..6].to_vec(), ids[6..].to_vec()]
    );

    let last = registry
        .list_users(&request(3, Order::Asc, None))
        .and_then(|page| registry.list_users(&request(3, Order::Asc, page.next)))
        .and_then(|page| registry.list_users(&request(3, Order::Asc, page.next)))
        .expect("last page");
    let middle = registry
        .list_users(&request(3, Order::Asc, last.prev))
        .expect("middle page");
    assert_eq!(user_ids(&middle), ids[3..6]);
    let first = registry
        .list_users(&request(3, Order::Asc, middle.prev))
        .expect("first page");
    assert_eq!(user_ids(&first), ids[..3]);
    assert_eq!(first.prev, None);
}

#[test]
fn descending_order() {
    let (registry, ids) = registry_with_users(5);
    let newest: Vec<UserId> = ids.iter().rev().cloned().collect();

    let first = registry
        .list_users(&request(2, Order::Desc, None))
        .expect("first page");
    assert_eq!(user_ids(&first), newest[..2]);
    assert_eq!(first.prev, None);
    let second = registry
        .list_users(&request(2, Order::Desc, first.next))
        .expect("second page");
    assert_eq!(user_ids(&second), newest[2..4]);
    let third = registry
        .list_users(&request(2, Order::Desc, second.next.clone()))
        .expect("third page");
    assert_eq!(user_ids(&third), newest[4..]);
    assert_eq!(third.next, None);

    let back = registry
        .list_users(&request(2, Order::Desc, third.prev))
        .expect("back");
    assert_eq!(user_ids(&back), newest[2..4]);
}

#[test]
fn members_and_conversations_page() {
    let (registry, ids) = registry_with_users(3);
    let conversations: Vec<ConversationId> = (0..3)
        .map(|_| {
            registry
                .create_conversation(NewConversation::default())
                .expect("create")
                .id
        })
        .collect();
    let members: Vec<MemberId> = ids
        .iter()
        .map(|user| {
            registry
                .add_member(&conversations[0], user, MemberAction::Join, None)
                .expect("join")
                .member
                .id
        })
        .collect();

    let listed = registry
        .list_conversations(&request(2, Order::Desc, None))
        .expect("conversations");
    let listed: Vec<&ConversationId> = listed.items.iter().map(|item| &item.id).collect();
    assert_eq!(listed, [&conversations[2], &conversations[1]]);

    let first = registry
        .list_members(&conversations[0], &request(2, Order::Asc, None))
        .expect("members");
    let second = registry
        .list_members(&conversations[0], &request(2, Order::Asc, first.next))
        .expect("members");
    let paged: Vec<MemberId> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|member| member.id.clone())
        .collect();
    assert_eq!(paged, members);
    assert_eq!(second.next, None);
}

#[test]
fn event_pages_link_neighbours() {
    let registry = Registry::new();
    let alice = registry
        .create_user(NewUser {
            name: "alice".to_owned(),
            display_name: None,
        })
        .expect("user")
        .id;
    let conversation = registry
        .create_conversation(NewConversation::default())
        .expect("create")
        .id;
    let member = registry
        .add_member(&conversation, &alice, MemberAction::Join, None)
        .expect("join")
        .member
        .id;
    for index in 0..5 {
        registry
            .post_event(
                &conversation,
                NewEvent {
                    kind: EventType::Custom("custom:tick".to_owned()),
                    from: member.clone(),
                    to: None,
                    body: json!({ "index": index }),
                },
            )
            .expect("post");
    }
    let ids = |page: &EventPage| page.events.iter().map(|event| event.id).collect::<Vec<_>>();
    let query = EventQuery {
        page_size: 3,
        ..EventQuery::default()
    };

    let first = registry.list_events(&conversation, &query).expect("first");
    assert_eq!(ids(&first), [1, 2, 3]);
    assert_eq!(first.prev, None);
    let next = first.next.expect("a next page");
    assert_eq!(next.start_id, Some(4));
    let second = registry.list_events(&conversation, &next).expect("second");
    assert_eq!(ids(&second), [4, 5, 6]);
    let third = registry
        .list_events(&conversation, &second.next.expect("a third page"))
        .expect("third");
    assert_eq!(ids(&third), [7]);
    assert_eq!(third.next, None);
    let back = registry
        .list_events(&conversation, &third.prev.expect("a previous page"))
        .expect("back");
    assert_eq!(ids(&back), [4, 5, 6]);
    let start = registry
        .list_events(&conversation, &back.prev.expect("the first page"))
        .expect("start");
    assert_eq!(ids(&start), [1, 2, 3]);

    let newest = EventQuery {
        order: Order::Desc,
        ..query
    };
    let first = registry
        .list_events(&conversation, &newest)
        .expect("newest");
    assert_eq!(ids(&first), [7, 6, 5]);
    assert_eq!(first.prev, None);
    let older = registry
        .list_events(&conversation, &first.next.expect("older page"))
        .expect("older");
    assert_eq!(ids(&older), [4, 3, 2]);
    let newer = registry
        .list_events(&conversation, &older.prev.expect("newer page"))
        .expect("newer");
    assert_eq!(ids(&newer), [7, 6, 5]);

    for page_size in [0, MAX_PAGE_SIZE + 1] {
        let result = registry.list_events(
            &conversation,
            &EventQuery {
                page_size,
                ..EventQuery::default()
            },
        );
        assert!(matches!(result, Err(RoomError::InvalidField { .. })));
    }
}

#[test]
fn event_prev_page_stops_before_this_page() {
    let window = |start_id, end_id, page_size, order| EventQuery {
        start_id,
        end_id,
        page_size,
        order,
    };

    // Events 3 to 7 of 12, oldest first: only 1 and 2 precede them.
    let (range, _, prev) = crate::page::event_window(&window(Some(3), None, 5, Order::Asc), 12);
    assert_eq!(range, Some((3, 7)));
    let prev = prev.expect("a previous page");
    let (range, next, _) = crate::page::event_window(&prev, 12);
    assert_eq!(range, Some((1, 2)));
    let (range, _, _) = crate::page::event_window(&next.expect("a next page"), 12);
    assert_eq!(range, Some((3, 4)));

    // Events 10 to 6 of 12, newest first: only 12 and 11 follow them.
    let (range, _, prev) = crate::page::event_window(&window(None, Some(10), 5, Order::Desc), 12);
    assert_eq!(range, Some((6, 10)));
    let (range, _, _) = crate::page::event_window(&prev.expect("a previous page"), 12);
    assert_eq!(range, Some((11, 12)));

    // Far from either end the previous page is full.
    let (_, _, prev) = crate::page::event_window(&window(Some(8), None, 5, Order::Asc), 12);
    assert_eq!(prev.expect("a previous page").page_size, 5);
}
