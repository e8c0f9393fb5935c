//! Paging of lists by creation sequence, with opaque cursors.

use std::collections::BTreeMap;
use std::ops::Bound;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::RoomError;
use crate::event::{Event, EventQuery, Order};

/// Number of items in a page of a list when the request names no size.
pub const DEFAULT_PAGE_SIZE: usize = 10;

/// Largest page of any list, the event log included.
pub const MAX_PAGE_SIZE: usize = 100;

/// Version tag of the cursor format, so that a later format can reject old cursors cleanly.
const CURSOR_VERSION: &str = "v1";

/// A request for one page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// Number of items, 1 to [`MAX_PAGE_SIZE`].
    pub page_size: usize,
    /// Oldest first (`Asc`) or newest first (`Desc`), by creation.
    pub order: Order,
    /// A `next` or `prev` cursor of an earlier page of the same list in the same order, or
    /// `None` for the first page.
    pub cursor: Option<String>,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            page_size: DEFAULT_PAGE_SIZE,
            order: Order::Asc,
            cursor: None,
        }
    }
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Cursor of the page after this one, `None` on the last page.
    pub next: Option<String>,
    /// Cursor of the page before this one, `None` on the first page.
    pub prev: Option<String>,
}

impl<T> Page<T> {
    /// Turns the keys of a page into items, leaving out keys whose item is gone.
    pub(crate) fn filter_map<U>(self, f: impl FnMut(T) -> Option<U>) -> Page<U> {
        Page {
            items: self.items.into_iter().filter_map(f).collect(),
            next: self.next,
            prev: self.prev,
        }
    }
}

/// One page of a conversation's event log, with the queries of its neighbours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// The query of the following page in the same order, `None` at the end of the log.
    pub next: Option<EventQuery>,
    /// The query of the preceding page in the same order, `None` at the start. It requests
    /// fewer events than this page did when fewer precede this page.
    pub prev: Option<EventQuery>,
}

/// The side of a position that a cursor points to, in the list's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    After,
    Before,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::After => "after",
            Direction::Before => "before",
        }
    }
}

/// Checks a page size: 1 to [`MAX_PAGE_SIZE`].
pub(crate) fn check_page_size(page_size: usize) -> Result<(), RoomError> {
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(RoomError::InvalidField {
            field: "page_size",
            reason: format!("must be between 1 and {MAX_PAGE_SIZE}"),
        });
    }
    Ok(())
}

fn encode_cursor(list: &str, order: Order, direction: Direction, seq: u64) -> String {
    let text = format!(
        "{CURSOR_VERSION}|{list}|{}|{}|{seq}",
        order.as_str(),
        direction.as_str()
    );
    URL_SAFE_NO_PAD.encode(text)
}

/// Decodes a cursor and checks that it was made for this list and order.
fn decode_cursor(cursor: &str, list: &str, order: Order) -> Result<(Direction, u64), RoomError> {
    let invalid = |reason: &str| RoomError::InvalidCursor(reason.to_owned());
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid("not a cursor of this API"))?;
    let text = String::from_utf8(bytes).map_err(|_| invalid("not a cursor of this API"))?;

    // Split from the right, because the list name contains ids from requests, which may
    // contain `|` themselves.
    let mut parts = text.rsplitn(4, '|');
    let (Some(seq), Some(direction), Some(cursor_order), Some(head)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not a cursor of this API"));
    };
    let Some((version, cursor_list)) = head.split_once('|') else {
        return Err(invalid("not a cursor of this API"));
    };
    if version != CURSOR_VERSION {
        return Err(invalid("made by another version of the node"));
    }
    if cursor_list != list {
        return Err(invalid("made for another list"));
    }
    if cursor_order != order.as_str() {
        return Err(invalid(&format!(
            "made for order {cursor_order}, not {}",
            order.as_str()
        )));
    }
    let direction = match direction {
        "after" => Direction::After,
        "before" => Direction::Before,
        _ => return Err(invalid("not a cursor of this API")),
    };
    let seq = seq
        .parse()
        .map_err(|_| invalid("not a cursor of this API"))?;
    Ok((direction, seq))
}

/// Selects a page of `items`, which are keyed by creation sequence number. `list` names the
/// list (and its owner, such as the conversation of a member list) so that a cursor of one list
/// is rejected by another.
pub(crate) fn select_page<K: Clone>(
    items: &BTreeMap<u64, K>,
    list: &str,
    request: &PageRequest,
) -> Result<Page<K>, RoomError> {
    check_page_size(request.page_size)?;
    let position = match &request.cursor {
        Some(cursor) => Some(decode_cursor(cursor, list, request.order)?),
        None => None,
    };

    // Translate the list-order position into a range of sequence numbers, and take the items
    // nearest that position first.
    let ascending = request.order == Order::Asc;
    let (range, towards_start): ((Bound<u64>, Bound<u64>), bool) = match position {
        None => ((Bound::Unbounded, Bound::Unbounded), false),
        Some((Direction::After, seq)) if ascending => {
            ((Bound::Excluded(seq), Bound::Unbounded), false)
        }
        Some((Direction::After, seq)) => ((Bound::Unbounded, Bound::Excluded(seq)), false),
        Some((Direction::Before, seq)) if ascending => {
            ((Bound::Unbounded, Bound::Excluded(seq)), true)
        }
        Some((Direction::Before, seq)) => ((Bound::Excluded(seq), Bound::Unbounded), true),
    };
    let in_range = items.range(range);
    let mut selected: Vec<(u64, K)> = if ascending != towards_start {
        in_range
            .take(request.page_size)
            .map(|(seq, key)| (*seq, key.clone()))
            .collect()
    } else {
        in_range
            .rev()
            .take(request.page_size)
            .map(|(seq, key)| (*seq, key.clone()))
            .collect()
    };
    if towards_start {
        selected.reverse();
    }

    let (Some(first), Some(last)) = (selected.first(), selected.last()) else {
        return Ok(Page {
            items: Vec::new(),
            next: None,
            prev: None,
        });
    };
    let (first, last) = (first.0, last.0);
    let (has_before, has_after) = if ascending {
        (
            items.range(..first).next().is_some(),
            items.range(after(last)).next().is_some(),
        )
    } else {
        (
            items.range(after(first)).next().is_some(),
            items.range(..last).next().is_some(),
        )
    };

    let order = request.order;
    Ok(Page {
        items: selected.into_iter().map(|(_, key)| key).collect(),
        next: has_after.then(|| encode_cursor(list, order, Direction::After, last)),
        prev: has_before.then(|| encode_cursor(list, order, Direction::Before, first)),
    })
}

/// Converts a page size computed from event ids, which is at most the requested size.
fn page_size_of(size: u64) -> usize {
    usize::try_from(size).unwrap_or(usize::MAX)
}

fn after(seq: u64) -> (Bound<u64>, Bound<u64>) {
    (Bound::Excluded(seq), Bound::Unbounded)
}

/// Resolves an event query against a log whose ids are 1 to `last_event_id` without gaps:
/// returns the range to read, and the queries of the neighbouring pages.
pub(crate) fn event_window(
    query: &EventQuery,
    last_event_id: u64,
) -> (Option<(u64, u64)>, Option<EventQuery>, Option<EventQuery>) {
    let low = query.start_id.unwrap_or(1).max(1);
    let high = query.end_id.unwrap_or(u64::MAX).min(last_event_id);
    if low > high {
        return (None, None, None);
    }

    // Page sizes are at most MAX_PAGE_SIZE when they come from a request, but the internal
    // reads use usize::MAX, so clamp before the arithmetic.
    let size = u64::try_from(query.page_size).unwrap_or(u64::MAX).max(1);
    match query.order {
        Order::Asc => {
            let first = low;
            let last = high.min(first.saturating_add(size - 1));
            let next = (last < high).then(|| EventQuery {
                start_id: Some(last + 1),
                ..*query
            });
            // Near the start of the log fewer than `size` events precede this page, and a
            // full page from event 1 would repeat some of this one, so that page is smaller.
            let prev = (first > 1).then(|| EventQuery {
                start_id: Some(first.saturating_sub(size).max(1)),
                page_size: page_size_of(size.min(first - 1)),
                ..*query
            });
            (Some((first, last)), next, prev)
        }
        Order::Desc => {
            let first = high;
            let last = low.max(first.saturating_sub(size - 1));
            let next = (last > low).then(|| EventQuery {
                end_id: Some(last - 1),
                ..*query
            });
            // Likewise near the newest event: the page covers only the events after this one.
            let prev = (first < last_event_id).then(|| EventQuery {
                end_id: Some(first.saturating_add(size).min(last_event_id)),
                page_size: page_size_of(size.min(last_event_id - first)),
                ..*query
            });
            (Some((last, first)), next, prev)
        }
    }
}
