//! WebSocket frames from a client: `onstream::fuzzing::ws_frame` (the input layout and
//! the invariants checked are in src/fuzzing.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| onstream::fuzzing::ws_frame(data));
