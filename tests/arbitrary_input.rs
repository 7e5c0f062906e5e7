//! Property test over the wire: whatever bytes a client sends — random, or HTTP-shaped
//! with bad lengths, codings, versions and truncations — the server answers with
//! well-formed responses or nothing, closes once the client has half-closed, never
//! reports the input through `step`, and keeps serving others.

mod common;

use std::{io::Write, net::Shutdown, time::Duration};

use common::*;
use onstream::{Tls, Version};
use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, TestRunner},
};

/// One HTTP-shaped request built from plausible and hostile parts.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "", "G ET", "OPTIONS"]);
    let target = prop::sample::select(vec!["/", "/a?b=c", "*", "http://x/y", "", "/%00", "/ /"]);
    let version = prop::sample::select(vec![
        "HTTP/1.1",
        "HTTP/1.0",
        "HTTP/2.0",
        "HTTP/1.",
        "HTTP/1.1 ",
        "http/1.1",
    ]);
    let name = prop::sample::select(vec![
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Expect",
        "Connection",
        "X-A",
        "Bad Name",
        "",
        " Host",
    ]);
    let value = prop::sample::select(vec![
        "x",
        "5",
        "0",
        "-1",
        "abc",
        "1, 2",
        "chunked",
        "gzip, chunked",
        "chunked, chunked",
        "100-continue",
        "close",
        "keep-alive",
        "",
        "99999999999999999999",
    ]);
    let body = prop_oneof![
        vec(any::<u8>(), 0..24),
        prop::sample::select(vec![
            "5\r\nhello\r\n0\r\n\r\n",
            "zz\r\n",
            "0\r\n\r\n",
            "3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n"
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    let eol = prop::sample::select(vec!["\r\n", "\n"]);
    (method, target, version, vec((name, value), 0..6), eol, body).prop_map(
        |(m, t, v, headers, eol, body)| {
            let mut out = format!("{m} {t} {v}{eol}").into_bytes();
            for (n, val) in headers {
                out.extend_from_slice(format!("{n}: {val}{eol}").as_bytes());
            }
            out.extend_from_slice(eol.as_bytes());
            out.extend_from_slice(&body);
            out
        },
    )
}

/// Client input: pure noise, or one to three HTTP-shaped requests, cut short at a random
/// point or not.
fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..200),
        (
            vec(request(), 1..4),
            any::<prop::sample::Index>(),
            any::<bool>()
        )
            .prop_map(|(reqs, cut, truncate)| {
                let mut all = reqs.concat();
                if truncate && !all.is_empty() {
                    all.truncate(cut.index(all.len()));
                }
                all
            }),
    ]
}

/// Any input gets zero or more well-formed responses and a close within 3 s of the
/// client's half-close; afterwards the server is healthy and holds no connection. (A
/// cleartext HTTP/1-only server: with TLS or HTTP/2 sniffing, noise that starts like a
/// ClientHello or the h2 preface is rightly answered in those protocols instead.)
#[test]
fn any_input_gets_well_formed_responses_or_a_close() {
    let server = TestServer::start(|o| o.tls(Tls::Off).version(Version::Http1), path_echo);
    let addr = server.addr();
    let config = Config {
        cases: 200,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    TestRunner::new(config)
        .run(&input(), |bytes| {
            let mut c = connect(addr);
            let _ = c.write_all(&bytes);
            let _ = c.shutdown(Shutdown::Write);
            let got = read_to_close(&mut c, Duration::from_secs(3));
            prop_assert!(
                got.is_ok(),
                "the server did not close after the client's half-close"
            );
            let got = got.unwrap();
            // Every byte the server sent must parse as complete responses.
            let parsed = std::panic::catch_unwind(|| parse_responses(&got));
            prop_assert!(
                parsed.is_ok(),
                "malformed output: {:?}",
                String::from_utf8_lossy(&got)
            );
            for res in parsed.unwrap() {
                prop_assert!((100..600).contains(&res.status));
            }
            Ok(())
        })
        .unwrap();

    assert_eq!(hyper_get(addr, "/after").body, "/after");
    assert!(
        server.wait_connections(0, Duration::from_secs(2)),
        "connections leaked"
    );
    assert!(
        server.step_errors().is_empty(),
        "step returned: {:?}",
        server.step_errors()
    );
}

/// With the default options (TLS and HTTP/2 sniffed per connection), any input still ends
/// in a close within 3 s of the client's half-close, and the server stays healthy.
#[test]
fn any_input_to_a_sniffing_server_ends_in_a_close() {
    let server = TestServer::start(|o| o, path_echo);
    let addr = server.addr();
    let config = Config {
        cases: 100,
        failure_persistence: None,
        max_shrink_iters: 100,
        ..Config::default()
    };
    let tls_or_h2 = prop_oneof![
        vec(any::<u8>(), 0..200).prop_map(|mut v| {
            v.insert(0, 0x16);
            v
        }),
        vec(any::<u8>(), 0..200)
            .prop_map(|v| [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), v].concat()),
        input(),
    ];
    TestRunner::new(config)
        .run(&tls_or_h2, |bytes| {
            let mut c = connect(addr);
            let _ = c.write_all(&bytes);
            let _ = c.shutdown(Shutdown::Write);
            prop_assert!(
                read_to_close(&mut c, Duration::from_secs(3)).is_ok(),
                "the server did not close after the client's half-close"
            );
            Ok(())
        })
        .unwrap();
    assert_eq!(hyper_get(addr, "/after").body, "/after");
    assert!(
        server.wait_connections(0, Duration::from_secs(2)),
        "connections leaked"
    );
    assert!(
        server.step_errors().is_empty(),
        "step returned: {:?}",
        server.step_errors()
    );
}
