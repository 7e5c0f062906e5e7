//! The HTTP/2 engine's HPACK encoder (`src/h2own/hpack.rs`) against loona-hpack's decoder:
//! `onstream::fuzzing::h2_hpack_response` (the input layout and the invariants checked are
//! in src/fuzzing.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| onstream::fuzzing::h2_hpack_response(data));
