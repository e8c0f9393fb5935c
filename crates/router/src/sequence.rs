//! Sequence number unwrapping and per-subscription renumbering.
//!
//! Subscribers must see continuous sequence numbers wherever the router drops packets on
//! purpose, or they would NACK packets that will never come. Real upstream loss must stay
//! visible as a gap so that they do NACK it. Each subscription therefore maps the track's
//! extended sequence numbers through an offset that shrinks by one for every packet the
//! router drops, and remembers recent offsets so that late packets map to the output they
//! would have had in order.

use std::collections::VecDeque;

/// The extended sequence number given to a track's first packet. It leaves room below for
/// reordered packets, which are at most half the 16-bit space older than the highest.
const FIRST_EXTENDED: u64 = 1 << 32;

/// How far behind the highest sequence number a late packet is still forwarded, and how far
/// back duplicates are detected.
pub(crate) const REORDER_WINDOW: u64 = 256;

/// Each drop run starts a range, and two runs are separated by at least one forwarded
/// packet, so a window contains at most half as many ranges, plus the range it starts in.
const MAX_OFFSET_RANGES: usize = REORDER_WINDOW as usize / 2 + 1;

/// Extends 16-bit RTP sequence numbers of one track to 64 bits.
#[derive(Debug, Default)]
pub(crate) struct SequenceUnwrapper {
    highest: Option<u64>,
}

impl SequenceUnwrapper {
    /// Returns the extended sequence number closest to the highest seen so far, and makes it
    /// the highest if it is newer.
    ///
    /// NOTE: a jump of half the 16-bit space or more reads as an old packet. RFC 3550 keeps
    /// sequence numbers of one SSRC continuous, so only a broken publisher triggers it.
    /// Returns the highest extended sequence number seen, if any packet was seen.
    pub(crate) fn highest(&self) -> Option<u64> {
        self.highest
    }

    pub(crate) fn extend(&mut self, sequence_number: u16) -> u64 {
        let Some(highest) = self.highest else {
            let extended = FIRST_EXTENDED + u64::from(sequence_number);
            self.highest = Some(extended);
            return extended;
        };
        // The reinterpretation as i16 picks the nearer direction around the 16-bit circle.
        let delta = sequence_number.wrapping_sub(highest as u16) as i16;
        let extended = highest.saturating_add_signed(i64::from(delta));
        if extended > highest {
            self.highest = Some(extended);
        }
        extended
    }
}

/// Position of a packet's extended sequence number relative to a subscription's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Newer than every packet seen.
    New,
    /// Older than the highest, but within the window and not yet seen.
    Late,
    /// Already forwarded.
    Duplicate,
    /// Older than the window or the subscription's start, or in a slot the router already
    /// dropped and gave to later packets.
    TooOld,
}

/// From `first` on, until the next range, output = input + `offset` (modulo 2^16).
#[derive(Clone, Copy, Debug)]
struct OffsetRange {
    first: u64,
    offset: u16,
}

/// One bit per extended sequence number in the reorder window.
#[derive(Clone, Debug, Default)]
struct WindowBitmap {
    words: [u64; (REORDER_WINDOW / 64) as usize],
}

impl WindowBitmap {
    fn position(extended: u64) -> (usize, u64) {
        let slot = extended % REORDER_WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    fn contains(&self, extended: u64) -> bool {
        let (word, bit) = Self::position(extended);
        self.words.get(word).is_some_and(|value| value & bit != 0)
    }

    fn insert(&mut self, extended: u64) {
        let (word, bit) = Self::position(extended);
        if let Some(value) = self.words.get_mut(word) {
            *value |= bit;
        }
    }

    fn remove(&mut self, extended: u64) {
        let (word, bit) = Self::position(extended);
        if let Some(value) = self.words.get_mut(word) {
            *value &= !bit;
        }
    }

    fn clear(&mut self) {
        self.words = [0; (REORDER_WINDOW / 64) as usize];
    }
}

/// Renumbers one subscription's packets, from the packet it started at on.
#[derive(Clone, Debug)]
pub(crate) struct SequenceRewriter {
    /// The extended sequence number of the first forwarded packet. Older ones are too old.
    floor: u64,
    /// The highest extended sequence number forwarded or dropped by the router.
    highest: u64,
    /// Sorted by `first`, and never empty.
    ranges: VecDeque<OffsetRange>,
    forwarded: WindowBitmap,
    /// Slots the router dropped on purpose: late packets for them are not forwarded, because
    /// later packets already took their output sequence numbers.
    dropped: WindowBitmap,
}

impl SequenceRewriter {
    /// Starts renumbering at the packet with `extended`, which is forwarded as
    /// `sequence_number`.
    pub(crate) fn start(extended: u64, sequence_number: u16) -> Self {
        let mut ranges = VecDeque::new();
        ranges.push_back(OffsetRange {
            first: extended,
            offset: sequence_number.wrapping_sub(extended as u16),
        });
        let mut forwarded = WindowBitmap::default();
        forwarded.insert(extended);
        Self {
            floor: extended,
            highest: extended,
            ranges,
            forwarded,
            dropped: WindowBitmap::default(),
        }
    }

    pub(crate) fn classify(&self, extended: u64) -> Arrival {
        if extended > self.highest {
            Arrival::New
        } else if extended < self.floor || self.highest - extended >= REORDER_WINDOW {
            Arrival::TooOld
        } else if self.forwarded.contains(extended) {
            Arrival::Duplicate
        } else if self.dropped.contains(extended) {
            Arrival::TooOld
        } else {
            Arrival::Late
        }
    }

    /// Returns the output sequence number for a `New` or `Late` packet and records it as
    /// forwarded, or `None` if no offset range covers it any more.
    pub(crate) fn forward(&mut self, extended: u64) -> Option<u16> {
        let offset = self.offset_for(extended)?;
        if extended > self.highest {
            self.advance(extended);
        }
        self.forwarded.insert(extended);
        Some((extended as u16).wrapping_add(offset))
    }

    /// Records that the router dropped a `New` or `Late` packet on purpose.
    ///
    /// Packets after a new one are renumbered one lower, so the drop leaves no gap. A late
    /// one leaves its gap, because later packets already went out with their numbers.
    pub(crate) fn drop_packet(&mut self, extended: u64) {
        if extended <= self.highest {
            self.dropped.insert(extended);
            return;
        }
        self.advance(extended);
        self.dropped.insert(extended);

        let Some(last) = self.ranges.back_mut() else {
            return;
        };
        let offset = last.offset.wrapping_sub(1);
        let first = extended.saturating_add(1);
        if last.first == extended {
            // The last range starts at this very packet, so no output used it: extend the
            // current drop run instead of adding a range.
            *last = OffsetRange { first, offset };
            return;
        }
        self.ranges.push_back(OffsetRange { first, offset });
        if self.ranges.len() > MAX_OFFSET_RANGES {
            self.ranges.pop_front();
            if let Some(front) = self.ranges.front() {
                self.floor = self.floor.max(front.first);
            }
        }
    }

    /// Returns the highest extended sequence number forwarded or dropped so far.
    pub(crate) fn highest(&self) -> u64 {
        self.highest
    }

    /// Returns the output sequence number the next in-order packet would get.
    pub(crate) fn next_sequence_number(&self) -> u16 {
        let offset = self.ranges.back().map_or(0, |range| range.offset);
        (self.highest.wrapping_add(1) as u16).wrapping_add(offset)
    }

    fn offset_for(&self, extended: u64) -> Option<u16> {
        self.ranges
            .iter()
            .rev()
            .find(|range| range.first <= extended)
            .map(|range| range.offset)
    }

    fn advance(&mut self, extended: u64) {
        let gap = extended - self.highest;
        if gap >= REORDER_WINDOW {
            self.forwarded.clear();
            self.dropped.clear();
        } else {
            // The slots entering the window held sequence numbers one window older.
            for slot in self.highest + 1..=extended {
                self.forwarded.remove(slot);
                self.dropped.remove(slot);
            }
        }
        self.highest = extended;

        // A range can go once the next one starts at or below the oldest in-window number.
        let oldest_in_window = (extended + 1).saturating_sub(REORDER_WINDOW);
        while self
            .ranges
            .get(1)
            .is_some_and(|next| next.first <= oldest_in_window)
        {
            self.ranges.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = FIRST_EXTENDED;

    #[test]
    fn unwrapper_counts_forward_across_wrap() {
        let mut unwrapper = SequenceUnwrapper::default();
        let first = unwrapper.extend(65534);
        assert_eq!(unwrapper.extend(65535), first + 1);
        assert_eq!(unwrapper.extend(0), first + 2);
        assert_eq!(unwrapper.extend(1), first + 3);
    }

    #[test]
    fn unwrapper_places_reordered_before_wrap() {
        let mut unwrapper = SequenceUnwrapper::default();
        let first = unwrapper.extend(2);
        assert_eq!(unwrapper.extend(65535), first - 3);
        assert_eq!(unwrapper.extend(3), first + 1);
        // The late packet did not lower the highest.
        assert_eq!(unwrapper.extend(4), first + 2);
    }

    #[test]
    fn unwrapper_follows_long_run() {
        let mut unwrapper = SequenceUnwrapper::default();
        let first = unwrapper.extend(100);
        let mut sequence_number = 100u16;
        for step in 1..=200_000u64 {
            sequence_number = sequence_number.wrapping_add(1);
            assert_eq!(unwrapper.extend(sequence_number), first + step);
        }
    }

    #[test]
    fn unwrapper_half_space_jump_reads_as_old() {
        let mut unwrapper = SequenceUnwrapper::default();
        let first = unwrapper.extend(0);
        assert_eq!(unwrapper.extend(32768), first - 32768);
        assert_eq!(unwrapper.extend(32767), first + 32767);
    }

    #[test]
    fn rewriter_in_order() {
        let mut rewriter = SequenceRewriter::start(BASE, 1000);
        for step in 1..10 {
            assert_eq!(rewriter.classify(BASE + step), Arrival::New);
            assert_eq!(rewriter.forward(BASE + step), Some(1000 + step as u16));
        }
        assert_eq!(rewriter.next_sequence_number(), 1010);
    }

    #[test]
    fn rewriter_drop_leaves_no_gap() {
        let mut rewriter = SequenceRewriter::start(BASE, 10);
        rewriter.drop_packet(BASE + 1);
        rewriter.drop_packet(BASE + 2);
        assert_eq!(rewriter.forward(BASE + 3), Some(11));
        rewriter.drop_packet(BASE + 4);
        assert_eq!(rewriter.forward(BASE + 5), Some(12));
        assert_eq!(rewriter.next_sequence_number(), 13);
    }

    #[test]
    fn rewriter_upstream_loss_keeps_gap() {
        let mut rewriter = SequenceRewriter::start(BASE, 10);
        assert_eq!(rewriter.forward(BASE + 3), Some(13));
        rewriter.drop_packet(BASE + 4);
        assert_eq!(rewriter.forward(BASE + 6), Some(15));
    }

    #[test]
    fn rewriter_late_packet_uses_its_range() {
        let mut rewriter = SequenceRewriter::start(BASE, 10);
        // BASE+1 is late, BASE+2 is dropped, BASE+3 moves down to fill the drop.
        rewriter.drop_packet(BASE + 2);
        assert_eq!(rewriter.forward(BASE + 3), Some(12));
        assert_eq!(rewriter.classify(BASE + 1), Arrival::Late);
        assert_eq!(rewriter.forward(BASE + 1), Some(11));
    }

    #[test]
    fn rewriter_detects_duplicates() {
        let mut rewriter = SequenceRewriter::start(BASE, 0);
        assert_eq!(rewriter.forward(BASE + 1), Some(1));
        assert_eq!(rewriter.classify(BASE), Arrival::Duplicate);
        assert_eq!(rewriter.classify(BASE + 1), Arrival::Duplicate);
    }

    #[test]
    fn rewriter_late_into_dropped_slot_is_too_old() {
        let mut rewriter = SequenceRewriter::start(BASE, 0);
        rewriter.drop_packet(BASE + 1);
        assert_eq!(rewriter.forward(BASE + 2), Some(1));
        assert_eq!(rewriter.classify(BASE + 1), Arrival::TooOld);
    }

    #[test]
    fn rewriter_late_drop_keeps_numbers() {
        let mut rewriter = SequenceRewriter::start(BASE, 0);
        assert_eq!(rewriter.forward(BASE + 2), Some(2));
        assert_eq!(rewriter.classify(BASE + 1), Arrival::Late);
        rewriter.drop_packet(BASE + 1);
        assert_eq!(rewriter.classify(BASE + 1), Arrival::TooOld);
        assert_eq!(rewriter.forward(BASE + 3), Some(3));
    }

    #[test]
    fn rewriter_rejects_before_start() {
        let rewriter = SequenceRewriter::start(BASE, 0);
        assert_eq!(rewriter.classify(BASE - 1), Arrival::TooOld);
    }

    #[test]
    fn rewriter_window_edge() {
        let mut rewriter = SequenceRewriter::start(BASE, 0);
        let highest = BASE + 1000;
        assert_eq!(rewriter.forward(highest), Some(1000));
        assert_eq!(
            rewriter.classify(highest - REORDER_WINDOW + 1),
            Arrival::Late
        );
        assert_eq!(rewriter.classify(highest - REORDER_WINDOW), Arrival::TooOld);
    }

    #[test]
    fn rewriter_window_forgets_old_bits() {
        let mut rewriter = SequenceRewriter::start(BASE, 0);
        // A forwarded slot one window back must not mark the new number as a duplicate.
        assert_eq!(rewriter.forward(BASE + REORDER_WINDOW - 1), Some(255));
        assert_eq!(rewriter.classify(BASE + REORDER_WINDOW), Arrival::New);
        assert_eq!(rewriter.forward(BASE + REORDER_WINDOW + 1), Some(257));
        assert_eq!(rewriter.classify(BASE + REORDER_WINDOW), Arrival::Late);
    }

    #[test]
    fn rewriter_output_wraps() {
        let mut rewriter = SequenceRewriter::start(BASE, 65534);
        assert_eq!(rewriter.forward(BASE + 1), Some(65535));
        rewriter.drop_packet(BASE + 2);
        assert_eq!(rewriter.forward(BASE + 3), Some(0));
        assert_eq!(rewriter.forward(BASE + 4), Some(1));
    }

    #[test]
    fn rewriter_alternating_drops_stay_in_window() {
        let mut rewriter = SequenceRewriter::start(BASE, 0);
        let mut expected = 0u16;
        let mut late = Vec::new();
        for step in 1..=2000u64 {
            let extended = BASE + step * 3;
            // Every third number is held back to arrive late. Of the other two, one is
            // forwarded and one dropped.
            late.push(extended - 2);
            rewriter.drop_packet(extended - 1);
            expected = expected.wrapping_add(2);
            assert_eq!(rewriter.forward(extended), Some(expected));
        }
        assert!(rewriter.ranges.len() <= MAX_OFFSET_RANGES);
        // The most recent late packets still map into the gaps they left.
        let highest = BASE + 6000;
        for extended in late
            .iter()
            .rev()
            .take_while(|e| highest - **e < REORDER_WINDOW)
        {
            let output = rewriter.forward(*extended);
            let in_order = ((extended - BASE) / 3 * 2) as u16;
            assert_eq!(
                output,
                Some(in_order.wrapping_add(1)),
                "extended {extended}"
            );
        }
    }
}
