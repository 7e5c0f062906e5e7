//! HTTP/2 connections on the engine of our own (`src/h2own/`): `onstream::fuzzing::h2_frames`
//! (the input layout and the invariants checked are in src/fuzzing.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| onstream::fuzzing::h2_frames(data));
