//! Arbitrary bytes, split at newlines, as a batch of input lines to an in-memory node, checked by
//! the same checker as the proptest side (tests/check_lines/mod.rs, included by path): no panic,
//! well-formed replies, exactly one reply per answerable line, in order, from the node's current
//! id, and none to any other line.
//!
//! The first byte picks how the lines are cut into batches (one `handle_lines` call each), as
//! tests/fuzz_lines.rs replays this target's corpus.

#![no_main]

#[path = "../../tests/check_lines/mod.rs"]
mod check_lines;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let lines: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let per_batch = if mode >= 128 {
        usize::MAX
    } else {
        1 + mode as usize % 8
    };
    let mut checker = check_lines::Checker::new();
    for batch in lines.chunks(per_batch) {
        if let Err(e) = checker.batch(batch) {
            panic!("{e}");
        }
    }
});
