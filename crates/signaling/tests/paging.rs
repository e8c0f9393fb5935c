//! Paging of every list at its boundaries: empty lists, a full page, one item more, page sizes
//! out of range and cursors of other lists. The walks follow the `next` and `prev` links as
//! the node wrote them.

mod common;

use axum::http::StatusCode;
use common::{Reply, TestNode};
use serde_json::json;

/// The cursor-paged lists.
#[derive(Clone, Copy, Debug)]
enum List {
    Users,
    Conversations,
    Members,
    UserConversations,
}

const LISTS: [List; 4] = [
    List::Users,
    List::Conversations,
    List::Members,
    List::UserConversations,
];

/// A list with some items: its path, the key of its items in `_embedded`, and the ids of the
/// items in the order they were created.
struct Fixture {
    path: String,
    key: &'static str,
    ids: Vec<String>,
}

async fn fixture(node: &TestNode, list: List, count: usize) -> Fixture {
    let mut ids = Vec::new();
    match list {
        List::Users => {
            for index in 0..count {
                ids.push(node.create_user(&format!("user-{index}")).await);
            }
            Fixture {
                path: "/v0.1/users".to_owned(),
                key: "users",
                ids,
            }
        }
        List::Conversations => {
            for _ in 0..count {
                ids.push(node.create_conversation().await);
            }
            Fixture {
                path: "/v0.1/conversations".to_owned(),
                key: "conversations",
                ids,
            }
        }
        List::Members => {
            let conversation = node.create_conversation().await;
            for index in 0..count {
                ids.push(node.join(&conversation, &format!("user-{index}")).await);
            }
            Fixture {
                path: format!("/v0.1/conversations/{conversation}/members"),
                key: "members",
                ids,
            }
        }
        List::UserConversations => {
            let user = node.create_user("alice").await;
            for _ in 0..count {
                let conversation = node.create_conversation().await;
                node.join(&conversation, "alice").await;
                ids.push(conversation);
            }
            Fixture {
                path: format!("/v0.1/users/{user}/conversations"),
                key: "conversations",
                ids,
            }
        }
    }
}

fn ids(reply: &Reply, key: &str) -> Vec<String> {
    reply.body["_embedded"][key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {}", reply.body))
        .iter()
        .map(|item| item["id"].as_str().expect("an id").to_owned())
        .collect()
}

fn link(reply: &Reply, name: &str) -> Option<String> {
    reply.body["_links"][name]["href"]
        .as_str()
        .map(str::to_owned)
}

/// Fetches `href` and then every page its `direction` link leads to. Returns the href and
/// ids of each page, in the order visited.
async fn walk(
    node: &TestNode,
    href: &str,
    direction: &str,
    key: &str,
) -> Vec<(String, Vec<String>)> {
    let mut pages = Vec::new();
    let mut href = Some(href.to_owned());
    while let Some(current) = href {
        assert!(pages.len() < 50, "the {direction} links do not end");
        let reply = node.get(&current, &node.admin()).await;
        assert_eq!(reply.status, StatusCode::OK, "{current}: {}", reply.body);
        href = link(&reply, direction);
        pages.push((current, ids(&reply, key)));
    }
    pages
}

fn cursor_of(href: &str) -> String {
    form_urlencoded::parse(href.split_once('?').expect("a query").1.as_bytes())
        .find(|(name, _)| name == "cursor")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| panic!("no cursor in {href}"))
}

fn assert_invalid_parameter(reply: &Reply, parameter: &str, context: &str) {
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "{context}: {}",
        reply.body
    );
    assert!(reply.body["title"].is_string(), "{context}: {}", reply.body);
    assert!(
        reply.body["detail"].is_string(),
        "{context}: {}",
        reply.body
    );
    assert_eq!(
        reply.body["invalid_parameters"][0]["name"], parameter,
        "{context}: {}",
        reply.body
    );
}

#[tokio::test]
async fn empty_list_has_no_neighbours() {
    for list in LISTS {
        let node = TestNode::start();
        let fixture = fixture(&node, list, 0).await;
        let reply = node.get(&fixture.path, &node.admin()).await;
        assert_eq!(reply.status, StatusCode::OK, "{list:?}: {}", reply.body);
        assert_eq!(ids(&reply, fixture.key), Vec::<String>::new(), "{list:?}");
        assert_eq!(reply.body["page_size"], 10, "{list:?}");
        assert!(link(&reply, "self").is_some(), "{list:?}");
        assert_eq!(link(&reply, "next"), None, "{list:?}");
        assert_eq!(link(&reply, "prev"), None, "{list:?}");
    }
}

#[tokio::test]
async fn full_page_has_no_next() {
    for list in LISTS {
        let node = TestNode::start();
        let fixture = fixture(&node, list, 3).await;
        let reply = node
            .get(&format!("{}?page_size=3", fixture.path), &node.admin())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{list:?}: {}", reply.body);
        assert_eq!(ids(&reply, fixture.key), fixture.ids, "{list:?}");
        assert_eq!(reply.body["page_size"], 3);
        assert_eq!(link(&reply, "next"), None, "{list:?}");
        assert_eq!(link(&reply, "prev"), None, "{list:?}");
    }
}

#[tokio::test]
async fn one_item_more_makes_second_page() {
    for list in LISTS {
        let node = TestNode::start();
        let fixture = fixture(&node, list, 4).await;
        let first = node
            .get(&format!("{}?page_size=3", fixture.path), &node.admin())
            .await;
        assert_eq!(ids(&first, fixture.key), fixture.ids[..3], "{list:?}");
        assert_eq!(link(&first, "prev"), None, "{list:?}");
        let next = link(&first, "next").unwrap_or_else(|| panic!("{list:?}: no next"));

        let second = node.get(&next, &node.admin()).await;
        assert_eq!(second.status, StatusCode::OK, "{list:?}: {}", second.body);
        assert_eq!(ids(&second, fixture.key), fixture.ids[3..], "{list:?}");
        assert_eq!(second.body["page_size"], 3);
        assert_eq!(link(&second, "next"), None, "{list:?}");
        let prev = link(&second, "prev").unwrap_or_else(|| panic!("{list:?}: no prev"));

        let back = node.get(&prev, &node.admin()).await;
        assert_eq!(ids(&back, fixture.key), fixture.ids[..3], "{list:?}");
    }
}

#[tokio::test]
async fn default_page_size_is_ten() {
    let node = TestNode::start();
    let fixture = fixture(&node, List::Users, 11).await;
    let first = node.get(&fixture.path, &node.admin()).await;
    assert_eq!(first.body["page_size"], 10);
    assert_eq!(ids(&first, fixture.key), fixture.ids[..10]);
    let next = link(&first, "next").expect("next");
    let second = node.get(&next, &node.admin()).await;
    assert_eq!(ids(&second, fixture.key), fixture.ids[10..]);
}

#[tokio::test]
async fn walks_visit_each_item_once() {
    for list in LISTS {
        for order in ["asc", "desc"] {
            let node = TestNode::start();
            let fixture = fixture(&node, list, 7).await;
            let mut expected = fixture.ids.clone();
            if order == "desc" {
                expected.reverse();
            }
            let context = format!("{list:?} {order}");

            let first = format!("{}?page_size=3&order={order}", fixture.path);
            let forward = walk(&node, &first, "next", fixture.key).await;
            let sizes: Vec<usize> = forward.iter().map(|(_, ids)| ids.len()).collect();
            assert_eq!(sizes, [3, 3, 1], "{context}");
            let seen: Vec<String> = forward.iter().flat_map(|(_, ids)| ids.clone()).collect();
            assert_eq!(seen, expected, "{context}");

            // Back along the prev links from the last page: the same pages in reverse.
            let (last, _) = forward.last().expect("a page");
            let mut backward = walk(&node, last, "prev", fixture.key).await;
            backward.reverse();
            let forward_ids: Vec<&Vec<String>> = forward.iter().map(|(_, ids)| ids).collect();
            let backward_ids: Vec<&Vec<String>> = backward.iter().map(|(_, ids)| ids).collect();
            assert_eq!(backward_ids, forward_ids, "{context}");

            // Each page's self link returns that page again.
            for (href, page) in &forward {
                let reply = node.get(href, &node.admin()).await;
                let this = link(&reply, "self").expect("self link");
                let again = node.get(&this, &node.admin()).await;
                assert_eq!(&ids(&again, fixture.key), page, "{context}: {this}");
            }
        }
    }
}

#[tokio::test]
async fn page_size_out_of_range_is_400() {
    let node = TestNode::start();
    let mut paths = Vec::new();
    for list in LISTS {
        paths.push(fixture(&node, list, 1).await.path);
    }
    let conversation = node.create_conversation().await;
    paths.push(format!("/v0.1/conversations/{conversation}/events"));

    for path in &paths {
        for value in [
            "0",
            "101",
            "-1",
            "1.5",
            "ten",
            "",
            "99999999999999999999999",
        ] {
            let url = format!("{path}?page_size={value}");
            let reply = node.get(&url, &node.admin()).await;
            assert_invalid_parameter(&reply, "page_size", &url);
            assert_eq!(reply.code(), "request:error:invalid-parameters", "{url}");
        }
        for value in [1, 100] {
            let url = format!("{path}?page_size={value}");
            let reply = node.get(&url, &node.admin()).await;
            assert_eq!(reply.status, StatusCode::OK, "{url}: {}", reply.body);
            assert_eq!(reply.body["page_size"], value, "{url}");
        }
    }
}

#[tokio::test]
async fn unknown_order_is_400() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    for path in [
        "/v0.1/users".to_owned(),
        format!("/v0.1/conversations/{conversation}/events"),
    ] {
        for value in ["sideways", "", "DESC"] {
            let url = format!("{path}?order={value}");
            let reply = node.get(&url, &node.admin()).await;
            assert_invalid_parameter(&reply, "order", &url);
        }
    }
}

#[tokio::test]
async fn foreign_or_bad_cursor_is_400() {
    let node = TestNode::start();
    let users = fixture(&node, List::Users, 3).await;
    let conversations = fixture(&node, List::Conversations, 3).await;
    let members = fixture(&node, List::Members, 3).await;
    let other_members = fixture(&node, List::Members, 3).await;
    let user_conversations = fixture(&node, List::UserConversations, 3).await;

    // A real cursor of each list, from its first page in ascending order.
    let mut cursors = Vec::new();
    for fixture in [&users, &conversations, &members, &user_conversations] {
        let reply = node
            .get(&format!("{}?page_size=1", fixture.path), &node.admin())
            .await;
        cursors.push(cursor_of(&link(&reply, "next").expect("next")));
    }
    let [
        users_cursor,
        conversations_cursor,
        members_cursor,
        user_conversations_cursor,
    ] = <[String; 4]>::try_from(cursors).expect("four cursors");

    let cases = [
        (&users.path, "garbage!"),
        (&users.path, "AAAA"),
        (&users.path, "djF8dXNlcnN8YXNjfGFmdGVyfHg"), // "v1|users|asc|after|x"
        (&users.path, "djJ8dXNlcnN8YXNjfGFmdGVyfDE"), // "v2|users|asc|after|1"
        (&users.path, conversations_cursor.as_str()),
        (&conversations.path, users_cursor.as_str()),
        (&conversations.path, members_cursor.as_str()),
        (&other_members.path, members_cursor.as_str()),
        (&members.path, user_conversations_cursor.as_str()),
        (&user_conversations.path, conversations_cursor.as_str()),
    ];
    for (path, cursor) in cases {
        let url = format!("{path}?cursor={cursor}");
        let reply = node.get(&url, &node.admin()).await;
        assert_invalid_parameter(&reply, "cursor", &url);
        assert_eq!(reply.code(), "request:error:invalid-cursor", "{url}");
    }

    // A cursor of an ascending page does not page the list in descending order.
    let url = format!("{}?order=desc&cursor={users_cursor}", users.path);
    let reply = node.get(&url, &node.admin()).await;
    assert_invalid_parameter(&reply, "cursor", &url);
}

#[tokio::test]
async fn cursor_survives_deleted_item() {
    let node = TestNode::start();
    let fixture = fixture(&node, List::Conversations, 5).await;
    let first = node
        .get(&format!("{}?page_size=2", fixture.path), &node.admin())
        .await;
    let next = link(&first, "next").expect("next");

    // The last item of the first page, which the cursor points after, is deleted.
    let deleted = node
        .delete(
            &format!("/v0.1/conversations/{}", fixture.ids[1]),
            &node.admin(),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let second = node.get(&next, &node.admin()).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(ids(&second, fixture.key), fixture.ids[2..4]);
}

/// Creates a conversation whose log has `count` events: `conversation:created`, `member:joined` and
/// custom events.
async fn conversation_with_events(node: &TestNode, count: u64) -> String {
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    for index in 3..=count {
        let reply = node
            .post(
                &format!("/v0.1/conversations/{conversation}/events"),
                &node.admin(),
                json!({ "type": "custom:tick", "from": alice, "body": { "index": index } }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    conversation
}

fn event_ids(reply: &Reply) -> Vec<u64> {
    reply.body["_embedded"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {}", reply.body))
        .iter()
        .map(|event| event["id"].as_u64().expect("an event id"))
        .collect()
}

/// Fetches `href` and every page its `direction` link leads to; returns each page's ids.
async fn walk_events(node: &TestNode, href: &str, direction: &str) -> Vec<(String, Vec<u64>)> {
    let mut pages = Vec::new();
    let mut href = Some(href.to_owned());
    while let Some(current) = href {
        assert!(pages.len() < 50, "the {direction} links do not end");
        let reply = node.get(&current, &node.admin()).await;
        assert_eq!(reply.status, StatusCode::OK, "{current}: {}", reply.body);
        href = link(&reply, direction);
        pages.push((current, event_ids(&reply)));
    }
    pages
}

#[tokio::test]
async fn event_windows_by_id() {
    let node = TestNode::start();
    let conversation = conversation_with_events(&node, 12).await;
    let path = format!("/v0.1/conversations/{conversation}/events");

    let cases: [(&str, Vec<u64>); 9] = [
        ("", (1..=12).collect()),
        ("?start_id=3&end_id=5", vec![3, 4, 5]),
        ("?start_id=11", vec![11, 12]),
        ("?end_id=2", vec![1, 2]),
        ("?start_id=5&end_id=5", vec![5]),
        ("?start_id=13", vec![]),
        ("?start_id=0&end_id=1", vec![1]),
        ("?order=desc&start_id=3&end_id=5", vec![5, 4, 3]),
        ("?order=desc&page_size=2", vec![12, 11]),
    ];
    for (query, expected) in cases {
        let url = format!("{path}{query}");
        let reply = node.get(&url, &node.admin()).await;
        assert_eq!(reply.status, StatusCode::OK, "{url}: {}", reply.body);
        assert_eq!(event_ids(&reply), expected, "{url}");
    }

    let whole = node.get(&path, &node.admin()).await;
    assert_eq!(whole.body["page_size"], 100);
    assert_eq!(link(&whole, "next"), None);
    assert_eq!(link(&whole, "prev"), None);
}

#[tokio::test]
async fn event_window_bounds_are_checked() {
    let node = TestNode::start();
    let conversation = conversation_with_events(&node, 3).await;
    let path = format!("/v0.1/conversations/{conversation}/events");

    let reversed = format!("{path}?start_id=3&end_id=2");
    let reply = node.get(&reversed, &node.admin()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    let named = reply.body["invalid_parameters"][0]["name"].as_str();
    assert!(
        matches!(named, Some("start_id" | "end_id")),
        "{}",
        reply.body
    );

    for (parameter, value) in [
        ("start_id", "-1"),
        ("start_id", "one"),
        ("end_id", "1.5"),
        ("end_id", ""),
    ] {
        let url = format!("{path}?{parameter}={value}");
        let reply = node.get(&url, &node.admin()).await;
        assert_invalid_parameter(&reply, parameter, &url);
    }
}

#[tokio::test]
async fn event_walks_visit_each_event_once() {
    let node = TestNode::start();
    let conversation = conversation_with_events(&node, 12).await;
    let path = format!("/v0.1/conversations/{conversation}/events");

    for order in ["asc", "desc"] {
        for page_size in [1, 5, 12, 13] {
            let context = format!("{order} page_size={page_size}");
            let mut expected: Vec<u64> = (1..=12).collect();
            if order == "desc" {
                expected.reverse();
            }

            let first = format!("{path}?page_size={page_size}&order={order}");
            let forward = walk_events(&node, &first, "next").await;
            let seen: Vec<u64> = forward.iter().flat_map(|(_, ids)| ids.clone()).collect();
            assert_eq!(seen, expected, "{context}");
            assert!(
                forward.iter().all(|(_, ids)| ids.len() <= page_size),
                "{context}"
            );

            let (last, _) = forward.last().expect("a page");
            let mut backward = walk_events(&node, last, "prev").await;
            backward.reverse();
            let forward_ids: Vec<&Vec<u64>> = forward.iter().map(|(_, ids)| ids).collect();
            let backward_ids: Vec<&Vec<u64>> = backward.iter().map(|(_, ids)| ids).collect();
            assert_eq!(backward_ids, forward_ids, "{context}");
        }
    }
}

#[tokio::test]
async fn event_prev_link_does_not_repeat_events() {
    let node = TestNode::start();
    let conversation = conversation_with_events(&node, 12).await;
    let path = format!("/v0.1/conversations/{conversation}/events");

    // Windows that do not start on a page boundary: the events before them come back once.
    for (start, expected) in [
        (
            format!("{path}?start_id=3&page_size=5"),
            (1..=12).collect::<Vec<u64>>(),
        ),
        (
            format!("{path}?end_id=10&page_size=5&order=desc"),
            (1..=12).rev().collect(),
        ),
    ] {
        let forward = walk_events(&node, &start, "next").await;
        let backward = walk_events(&node, &start, "prev").await;
        let mut seen: Vec<u64> = backward
            .iter()
            .skip(1)
            .rev()
            .flat_map(|(_, ids)| ids.clone())
            .collect();
        seen.extend(forward.iter().flat_map(|(_, ids)| ids.clone()));
        assert_eq!(
            seen, expected,
            "{start}: back {backward:?}, forward {forward:?}"
        );
    }
}

#[tokio::test]
async fn event_links_keep_the_window() {
    let node = TestNode::start();
    let conversation = conversation_with_events(&node, 12).await;
    let path = format!("/v0.1/conversations/{conversation}/events");

    // A window of 4 to 9 in pages of 4 stays inside 4 to 9.
    let forward = walk_events(
        &node,
        &format!("{path}?start_id=4&end_id=9&page_size=4"),
        "next",
    )
    .await;
    let seen: Vec<u64> = forward.iter().flat_map(|(_, ids)| ids.clone()).collect();
    assert_eq!(seen, [4, 5, 6, 7, 8, 9]);

    let reply = node.get(&forward[0].0, &node.admin()).await;
    let this = link(&reply, "self").expect("self");
    let again = node.get(&this, &node.admin()).await;
    assert_eq!(event_ids(&again), [4, 5, 6, 7]);

    // The same window newest first, and back along the prev links.
    let forward = walk_events(
        &node,
        &format!("{path}?start_id=4&end_id=9&page_size=4&order=desc"),
        "next",
    )
    .await;
    let pages: Vec<&Vec<u64>> = forward.iter().map(|(_, ids)| ids).collect();
    assert_eq!(pages, [&vec![9, 8, 7, 6], &vec![5, 4]]);
    let (last, _) = forward.last().expect("a page");
    let backward = walk_events(&node, last, "prev").await;
    let pages: Vec<&Vec<u64>> = backward.iter().map(|(_, ids)| ids).collect();
    assert_eq!(pages[1], &vec![9, 8, 7, 6]);
}
