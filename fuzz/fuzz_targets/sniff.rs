//! The connection sniffer (TLS ClientHello, HTTP/2 preface): `onstream::fuzzing::sniff`
//! (the input layout and the invariants checked are in src/fuzzing.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| onstream::fuzzing::sniff(data));
