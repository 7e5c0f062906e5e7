//! lua-http's options table turned into `onstream::Options`.
//!
//! The Lua side (`onstream/server.lua`) has already checked what lua-http checks (a
//! `cq`, an `onstream`, a `ctx` that is not a luaossl context); here each field is read
//! with lua-http's meaning: times in seconds, `tls` nil/false/anything else, `version`
//! 1.0/1.1/2, `family` as cqueues' numbers or their names.

use std::{sync::Arc, time::Duration};

use mlua::prelude::*;
use onstream::{Family, Options, Tls, Version};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

pub(crate) fn from_table(_lua: &Lua, t: &LuaTable) -> LuaResult<Options> {
    let mut o = Options::new();
    if let Some(host) = t.get::<Option<String>>("host")? {
        o = o.host(host);
    }
    match t.get::<LuaValue>("port")? {
        LuaValue::Nil => {}
        v => {
            let port = match v {
                LuaValue::Integer(n) => n as f64,
                LuaValue::Number(n) => n,
                LuaValue::String(s) => s
                    .to_str()?
                    .parse::<f64>()
                    .map_err(|_| LuaError::runtime("port must be a number"))?,
                _ => return Err(LuaError::runtime("port must be a number")),
            };
            if !(0.0..=65535.0).contains(&port) || port.fract() != 0.0 {
                return Err(LuaError::runtime("port out of range"));
            }
            o = o.port(port as u16);
        }
    }
    if let Some(path) = t.get::<Option<String>>("path")? {
        o = o.path(path);
    }
    o = o.family(family(t.get("family")?)?);
    if let Some(mode) = t
        .get::<LuaValue>("mode")?
        .as_string()
        .map(|s| s.to_string_lossy())
    {
        let mode = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
            .map_err(|_| LuaError::runtime("mode must be an octal string such as \"0700\""))?;
        o = o.mode(mode);
    } else if let Some(mode) = t.get::<Option<u32>>("mode")? {
        o = o.mode(mode);
    }
    for (name, set) in [
        ("mask", Options::mask as fn(Options, bool) -> Options),
        ("unlink", Options::unlink),
        ("v6only", Options::v6only),
        ("reuseaddr", Options::reuseaddr),
        ("reuseport", Options::reuseport),
    ] {
        if let Some(on) = t.get::<Option<bool>>(name)? {
            o = set(o, on);
        }
    }
    o = o.tls(match t.get::<LuaValue>("tls")? {
        LuaValue::Nil => Tls::Auto,
        LuaValue::Boolean(false) => Tls::Off,
        _ => Tls::On,
    });
    if let Some(ctx) = t.get::<Option<LuaTable>>("ctx")? {
        o = o.tls_config(tls_config(&ctx)?);
    }
    o = o.version(match t.get::<Option<f64>>("version")? {
        None => Version::Any,
        Some(1.0) => Version::Http10,
        Some(1.1) => Version::Http1,
        Some(2.0) => Version::Http2,
        Some(v) => return Err(LuaError::runtime(format!("unknown HTTP version {v}"))),
    });
    if let Some(n) = t.get::<Option<f64>>("max_concurrent")? {
        o = o.max_concurrent(if n >= usize::MAX as f64 {
            usize::MAX
        } else {
            n.max(0.0) as usize
        });
    }
    for (name, set) in [
        (
            "connection_setup_timeout",
            Options::connection_setup_timeout as fn(Options, Duration) -> Options,
        ),
        ("intra_stream_timeout", Options::intra_stream_timeout),
        ("header_read_timeout", Options::header_read_timeout),
        ("body_read_timeout", Options::body_read_timeout),
        ("send_timeout", Options::send_timeout),
        ("close_timeout", Options::close_timeout),
    ] {
        if let Some(secs) = t.get::<Option<f64>>(name)? {
            o = set(o, seconds(secs));
        }
    }
    Ok(o)
}

/// The `send_timeout` the options table gives the server, or the library's default: the
/// `take_socket` bridges (`socket.rs`) hold their output to it too.
pub(crate) fn send_timeout(t: &LuaTable) -> LuaResult<Duration> {
    Ok(t.get::<Option<f64>>("send_timeout")?
        .map_or(onstream::DEFAULT_SEND_TIMEOUT, seconds))
}

/// Seconds as lua-http takes them: a number, negative meaning none, huge meaning forever.
pub(crate) fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
}

/// cqueues gives families as numbers (`socket.AF_INET`); lua-http's docs as names.
fn family(v: LuaValue) -> LuaResult<Family> {
    let name = match &v {
        LuaValue::Nil => return Ok(Family::Any),
        LuaValue::Integer(n) => match *n as i32 {
            libc::AF_INET => "AF_INET",
            libc::AF_INET6 => "AF_INET6",
            _ => "AF_UNSPEC",
        },
        LuaValue::Number(n) => match *n as i32 {
            libc::AF_INET => "AF_INET",
            libc::AF_INET6 => "AF_INET6",
            _ => "AF_UNSPEC",
        },
        LuaValue::String(s) => return family_name(&s.to_str()?),
        _ => return Err(LuaError::runtime("family must be a number or a name")),
    };
    family_name(name)
}

fn family_name(name: &str) -> LuaResult<Family> {
    match name {
        "AF_INET" | "inet" => Ok(Family::Inet),
        "AF_INET6" | "inet6" => Ok(Family::Inet6),
        "AF_UNSPEC" | "AF_UNIX" | "unix" => Ok(Family::Any),
        _ => Err(LuaError::runtime(format!("unknown family {name}"))),
    }
}

/// `ctx = { cert = …, key = … }`: PEM text, or paths of PEM files.
fn tls_config(ctx: &LuaTable) -> LuaResult<Arc<rustls::ServerConfig>> {
    let cert: LuaString = ctx
        .get::<Option<LuaString>>("cert")?
        .ok_or_else(|| LuaError::runtime("ctx.cert (PEM text or a path) is required"))?;
    let key: LuaString = ctx
        .get::<Option<LuaString>>("key")?
        .ok_or_else(|| LuaError::runtime("ctx.key (PEM text or a path) is required"))?;
    let pem = |s: &LuaString| -> LuaResult<Vec<u8>> {
        let bytes = s.as_bytes().to_vec();
        if bytes.windows(10).any(|w| w == b"-----BEGIN") {
            Ok(bytes)
        } else {
            let path = String::from_utf8_lossy(&bytes).into_owned();
            std::fs::read(&path).map_err(|e| LuaError::runtime(format!("{path}: {e}")))
        }
    };
    let cert_pem = pem(&cert)?;
    let key_pem = pem(&key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LuaError::runtime(format!("ctx.cert: {e}")))?;
    if chain.is_empty() {
        return Err(LuaError::runtime("ctx.cert holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| LuaError::runtime(format!("ctx.key: {e}")))?;
    onstream::tls::config_from_der(chain, key).map_err(LuaError::external)
}
