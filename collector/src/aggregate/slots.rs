//! A series' history: time slots, fine while recent, coarser with age.
//!
//! Samples land in the slot of their own time (`time_ms / slot_ms`). A
//! slot of a busy series is a sketch of about a thousand values; keeping
//! every one of the baseline horizon's slots (180 at the defaults) cost
//! some 200 KiB per busy series. So slots merge as they age ([`Steps`]):
//!
//! - the current slot and the one before, where nearly every sample
//!   lands, are kept as they are;
//! - older slots merge into one block per *window step* (a fifth of
//!   `aggregate.window`, 60 s at the defaults) while any of that step is
//!   inside the candidate window, so the window slides a step at a time;
//! - steps wholly older than the window merge into one block per *history
//!   step* (a third of `aggregate.baseline_horizon`, a multiple of the
//!   window step; 600 s at the defaults).
//!
//! Merging adds bucket counts, so a block's sketch is exactly the sketch of
//! its slots' values: every quantile keeps the sketch's relative error; only
//! where a stretch of time begins is coarser. A stretch ([`Slots::summary`])
//! holds every block that overlaps it, so the candidate window holds up to
//! one window step more than `aggregate.window`, and the horizon up to one
//! history step more; nothing inside a stretch is ever left out. Blocks
//! never straddle a history step's boundary, so a stretch that starts on
//! one ([`Slots::since`]) holds the same data whichever blocks have merged.
//!
//! A sample later than its slot's merge still lands in the block holding
//! its time, or in a slot of its own that merges at the next step.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::Sketch;

/// One block of a series' history: the slots `start .. start + width`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Slot {
    /// The first slot index it holds (`time_ms / slot_ms`).
    pub(super) start: u64,
    /// Slot indexes held, at least 1.
    pub(super) width: u32,
    pub(super) latency: Sketch,
    pub(super) outcomes: [u64; 3],
    pub(super) db_calls: u64,
    /// Its requests read from histogram points, if any (boxed: most slots
    /// have none and pay one pointer).
    pub(super) binned: Option<Box<Binned>>,
}

/// Requests of a slot read from histogram points.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Binned {
    pub(super) requests: u64,
    /// The largest relative error of their reported latencies.
    pub(super) resolution: f64,
}

impl Slot {
    fn new(start: u64) -> Self {
        Self {
            start,
            width: 1,
            ..Self::default()
        }
    }

    /// One past the last slot index it holds.
    pub(super) fn end(&self) -> u64 {
        self.start + u64::from(self.width)
    }

    /// Requests it holds.
    pub(super) fn requests(&self) -> u64 {
        self.outcomes.iter().sum()
    }

    /// Takes in `later`, the next block: exact, counts add.
    fn absorb(&mut self, later: Slot) {
        self.width = u32::try_from(later.end() - self.start).unwrap_or(u32::MAX);
        self.latency.merge(&later.latency);
        for (sum, n) in self.outcomes.iter_mut().zip(later.outcomes) {
            *sum += n;
        }
        self.db_calls += later.db_calls;
        if let Some(b) = later.binned {
            let mine = self.binned.get_or_insert_with(Box::default);
            mine.requests += b.requests;
            mine.resolution = mine.resolution.max(b.resolution);
        }
    }
}

/// How slots coarsen with age, in slots (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Steps {
    /// Slots of the candidate window.
    window: u64,
    /// Slots per window step.
    window_step: u64,
    /// Slots per history step, a multiple of `window_step`.
    history_step: u64,
}

impl Steps {
    /// The steps for a window and horizon of these many slots: window
    /// steps of a fifth of the window, history steps of a third of the
    /// horizon (whole window steps), at least one slot each.
    pub(crate) fn new(window_slots: u64, horizon_slots: u64) -> Self {
        let window_step = (window_slots / 5).max(1);
        let history_step = (horizon_slots / 3 / window_step).max(1) * window_step;
        Self {
            window: window_slots.max(1),
            window_step,
            history_step,
        }
    }

    /// The block the data of slot `slot` belongs in at `now_slot`:
    /// (coarseness, first slot of the block). Coarseness only grows with
    /// age, and each block lies inside one of the next coarser.
    fn unit(&self, slot: u64, now_slot: u64) -> (u8, u64) {
        if slot + 1 >= now_slot {
            return (0, slot);
        }
        let step = slot / self.window_step * self.window_step;
        let window_oldest = (now_slot + 1).saturating_sub(self.window);
        if step + self.window_step <= window_oldest {
            (2, slot / self.history_step * self.history_step)
        } else {
            (1, step)
        }
    }
}

/// A series' blocks, in time order, never overlapping.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct Slots(VecDeque<Slot>);

impl Slots {
    /// The block holding slot `index`, made (one slot wide) if none does.
    /// The newest block is nearly always it; a late sample lands in the
    /// block of its own time.
    pub(super) fn slot_mut(&mut self, index: u64) -> &mut Slot {
        let at = match self.0.back() {
            Some(last) if last.start <= index && index < last.end() => self.0.len() - 1,
            Some(last) if last.start > index => {
                let i = self.0.partition_point(|s| s.start <= index);
                if i > 0 && self.0[i - 1].end() > index {
                    i - 1
                } else {
                    self.0.insert(i, Slot::new(index));
                    i
                }
            }
            _ => {
                if self.0.capacity() == 0 {
                    // Most series of a wide fleet see one slot; VecDeque
                    // would reserve four.
                    self.0 = VecDeque::with_capacity(1);
                }
                self.0.push_back(Slot::new(index));
                self.0.len() - 1
            }
        };
        &mut self.0[at]
    }

    /// Whether a sample of slot `index` opens a new newest block.
    pub(super) fn opens(&self, index: u64) -> bool {
        self.0.back().is_none_or(|last| last.end() <= index)
    }

    /// Merges the blocks that belong together at `now_slot` (see
    /// [`Steps`]); cheap when none do.
    pub(super) fn compact(&mut self, steps: &Steps, now_slot: u64) {
        let blocks = &mut self.0;
        if blocks.len() < 2 {
            return;
        }
        let mut kept = 0;
        let mut unit = steps.unit(blocks[0].start, now_slot);
        let mut merged = false;
        for i in 1..blocks.len() {
            let next = steps.unit(blocks[i].start, now_slot);
            if next == unit {
                let later = std::mem::take(&mut blocks[i]);
                blocks[kept].absorb(later);
                merged = true;
            } else {
                if merged {
                    blocks[kept].latency.shrink_to_fit();
                    merged = false;
                }
                kept += 1;
                unit = next;
                blocks.swap(kept, i);
            }
        }
        if merged {
            blocks[kept].latency.shrink_to_fit();
        }
        blocks.truncate(kept + 1);
        // A series holds a dozen or so blocks: spare room for more than
        // the next two would be a tenth of it.
        if blocks.capacity() > blocks.len() + 2 {
            blocks.shrink_to(blocks.len() + 2);
        }
    }

    /// Drops the blocks wholly older than slot `oldest`.
    pub(super) fn expire(&mut self, oldest: u64) {
        while self.0.front().is_some_and(|s| s.end() <= oldest) {
            self.0.pop_front();
        }
    }

    /// The blocks overlapping slots `oldest ..`, newest first.
    pub(super) fn newer_than(&self, oldest: u64) -> impl Iterator<Item = &Slot> {
        self.0.iter().rev().take_while(move |s| s.end() > oldest)
    }

    /// Every block, newest first.
    pub(super) fn newest_first(&self) -> impl Iterator<Item = &Slot> {
        self.0.iter().rev()
    }

    /// The blocks starting at or after slot `start` rounded down to its
    /// history step, newest first: the same data whichever blocks have
    /// merged, so a stretch begun there (an evidence epoch) never shrinks
    /// or grows at its old end as it ages.
    pub(super) fn since<'a>(
        &'a self,
        steps: &Steps,
        start: u64,
    ) -> impl Iterator<Item = &'a Slot> + 'a {
        let from = start / steps.history_step * steps.history_step;
        self.0.iter().rev().take_while(move |s| s.start >= from)
    }

    /// Whether the blocks are in order, never overlap and each holds at
    /// least one slot (a state read from a snapshot).
    pub(super) fn check(&self) -> Result<(), &'static str> {
        if self
            .0
            .iter()
            .any(|s| s.width == 0 || s.start.checked_add(u64::from(s.width)).is_none())
        {
            return Err("a series has an empty or overflowing slot");
        }
        if !self
            .0
            .iter()
            .zip(self.0.iter().skip(1))
            .all(|(a, b)| a.end() <= b.start)
        {
            return Err("a series' slots are out of order");
        }
        self.0.iter().try_for_each(|s| s.latency.check())
    }

    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<Slot>()
            + self
                .0
                .iter()
                .map(|s| s.latency.heap_bytes() + s.binned.as_ref().map_or(0, |_| 16))
                .sum::<usize>()
    }

    /// Number of blocks.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The blocks' (start, width), oldest first.
    #[cfg(test)]
    pub(super) fn extents(&self) -> Vec<(u64, u32)> {
        self.0.iter().map(|s| (s.start, s.width)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults in slots: 10 s slots, a 300 s window, a 1800 s horizon.
    fn defaults() -> Steps {
        Steps::new(30, 180)
    }

    #[test]
    fn default_steps_are_a_minute_and_ten_minutes() {
        let steps = defaults();
        assert_eq!((steps.window_step, steps.history_step), (6, 60));
        // Steps never reach zero, and history steps are whole window steps.
        for (w, h) in [(1, 1), (4, 4), (7, 100), (1000, 10_000), (30, 31)] {
            let s = Steps::new(w, h);
            assert!(
                s.window_step >= 1 && s.history_step >= s.window_step,
                "{s:?}"
            );
            assert_eq!(s.history_step % s.window_step, 0, "{s:?}");
        }
    }

    #[test]
    fn slots_merge_by_age_into_window_then_history_steps() {
        let steps = defaults();
        let mut slots = Slots::default();
        // One value per slot over two horizons, compacting as the
        // collector does once per slot.
        for now in 0..400u64 {
            slots.slot_mut(now).latency.record(50.0);
            slots.slot_mut(now).outcomes[0] += 1;
            slots.compact(&steps, now);
        }
        let now = 399;
        let extents = slots.extents();
        // Every slot is still there: merging never loses a request.
        assert_eq!(slots.newest_first().map(Slot::requests).sum::<u64>(), 400);
        // The current and the previous slot as they are; the rest of the
        // current window step merged (396..=397).
        assert_eq!(
            &extents[extents.len() - 3..],
            &[(396, 2), (398, 1), (399, 1)]
        );
        // The window (slots 370..=399) in whole window steps back to 366.
        let window: Vec<_> = extents
            .iter()
            .filter(|e| e.0 + u64::from(e.1) > 370)
            .collect();
        assert_eq!(window[0], &(366, 6));
        assert!(window.iter().rev().skip(3).all(|e| e.1 == 6), "{window:?}");
        // Older: history steps of 60 slots (the newest one still filling).
        let old: Vec<_> = extents
            .iter()
            .filter(|e| e.0 + u64::from(e.1) <= 366)
            .collect();
        assert_eq!(
            old[..6],
            [
                &(0, 60),
                &(60, 60),
                &(120, 60),
                &(180, 60),
                &(240, 60),
                &(300, 60)
            ]
        );
        assert_eq!(old[6..], [&(360, 6)]);
        assert!(slots.len() <= 3 + 5 + 7, "{extents:?}");
        // A compaction at the same slot changes nothing.
        let before = slots.extents();
        slots.compact(&steps, now);
        assert_eq!(slots.extents(), before);
        slots.check().unwrap();
    }

    #[test]
    fn merged_blocks_keep_the_sketchs_relative_error() {
        let steps = defaults();
        let mut slots = Slots::default();
        let mut values = Vec::new();
        // A lognormal-ish spread over two decades, 200 values per slot.
        for now in 0..180u64 {
            for i in 0..200u64 {
                let x = ((now * 200 + i).wrapping_mul(2_654_435_761) % 10_000) as f64 / 10_000.0;
                let v = 10f64.powf(1.0 + 2.0 * x);
                slots.slot_mut(now).latency.record(v);
                values.push(v);
            }
            slots.compact(&steps, now);
        }
        assert!(slots.len() < 20, "{:?}", slots.extents());
        let mut all = Sketch::new();
        for s in slots.newest_first() {
            all.merge(&s.latency);
        }
        values.sort_by(f64::total_cmp);
        for q in [0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999] {
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            let want = values[rank - 1];
            let got = all.quantile(q).unwrap();
            let err = (got - want).abs() / want;
            assert!(
                err <= super::super::sketch::RELATIVE_ERROR + 1e-12,
                "q={q} want={want} got={got} err={err}"
            );
        }
    }

    #[test]
    fn a_late_sample_lands_in_the_block_of_its_time_or_a_slot_that_merges_there() {
        let steps = defaults();
        let mut slots = Slots::default();
        for now in [0, 100, 200, 300] {
            slots.slot_mut(now).outcomes[0] += 1;
            slots.compact(&steps, now);
        }
        // Slot 100 was merged into the history step 60..: a sample of
        // slot 90 (a gap before it) gets a slot of its own, then merges.
        slots.slot_mut(90).outcomes[0] += 1;
        let extents = slots.extents();
        assert!(extents.contains(&(90, 1)), "{extents:?}");
        slots.compact(&steps, 301);
        let extents = slots.extents();
        // A block spans from its first slot with data to its last.
        assert!(extents.contains(&(90, 11)), "{extents:?}");
        // One of slot 95 now lands inside that block.
        slots.slot_mut(95).outcomes[0] += 1;
        assert_eq!(slots.extents(), extents);
        let held: u64 = slots.since(&steps, 60).map(Slot::requests).sum();
        // 60.. holds 90, 95, 100, 200 and 300.
        assert_eq!(held, 5);
    }

    #[test]
    fn a_stretch_from_a_history_step_holds_the_same_data_as_it_ages() {
        let steps = defaults();
        let mut slots = Slots::default();
        let mut seen = Vec::new();
        for now in 0..240u64 {
            slots.slot_mut(now).outcomes[0] += 1;
            slots.compact(&steps, now);
            // From slot 70, rounded down to its history step (60).
            seen.push(slots.since(&steps, 70).map(Slot::requests).sum::<u64>());
        }
        // Before slot 60 nothing; from it, every slot since 60 exactly.
        for (now, held) in seen.iter().enumerate() {
            assert_eq!(*held, (now as u64 + 1).saturating_sub(60), "at {now}");
        }
    }

    #[test]
    fn damaged_blocks_are_refused() {
        let mut slots = Slots::default();
        slots.slot_mut(5);
        slots.slot_mut(9);
        slots.check().unwrap();
        slots.0[0].width = 0;
        assert!(slots.check().is_err());
        slots.0[0].width = 5;
        assert!(slots.check().is_err(), "5..10 overlaps 9");
        slots.0[0].width = 4;
        slots.check().unwrap();
        slots.0[1].start = u64::MAX;
        slots.0[1].width = 2;
        assert!(slots.check().is_err());
    }
}
