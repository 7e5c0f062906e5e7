//! HTTP/1 request heads: `onstream::fuzzing::h1_head` (the input layout and the
//! invariants checked are in src/fuzzing.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| onstream::fuzzing::h1_head(data));
