//! Chunked request bodies: `onstream::fuzzing::chunked` (the input layout and the
//! invariants checked are in src/fuzzing.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| onstream::fuzzing::chunked(data));
