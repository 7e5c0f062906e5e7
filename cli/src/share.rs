//! What the banner offers for sharing: the URLs the server answers on (every interface
//! address when it listens on all of them, so the one to give a phone or a colleague is
//! there to copy), `--qr` to print the first LAN URL as a QR code in the terminal, and
//! `--open` to open a browser on the first URL.

use std::net::{IpAddr, SocketAddr};

use qrcode::{render::unicode::Dense1x2, QrCode};

/// The hosts a server bound to `addr` answers on, to show in URLs: `localhost` first for
/// an unspecified address, then each interface address that can reach it (IPv4 for
/// `0.0.0.0`; both families for `::`), loopback and link-local IPv6 left out (a
/// link-local URL needs a zone a browser will not take).
pub fn hosts(addr: SocketAddr) -> Vec<String> {
    if !addr.ip().is_unspecified() {
        return vec![addr.ip().to_string()];
    }
    let mut hosts = vec!["localhost".to_owned()];
    let interfaces = if_addrs::get_if_addrs().unwrap_or_default();
    let mut ips: Vec<IpAddr> = interfaces
        .iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback())
        .filter(|ip| match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => addr.is_ipv6() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    // IPv4 first: the address people expect to type.
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips.dedup();
    hosts.extend(ips.iter().map(|ip| match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }));
    hosts
}

/// The host of the URL to share: the first one that is neither `localhost` nor a
/// loopback address, if any.
pub fn lan_host(hosts: &[String]) -> Option<&str> {
    hosts
        .iter()
        .map(String::as_str)
        .find(|h| *h != "localhost" && !h.starts_with("127.") && *h != "[::1]" && *h != "::1")
}

/// `text` as a QR code drawn with half blocks, two modules per character cell, with
/// the quiet zone the standard asks for (dark on light: most terminals' dark
/// background needs the inverted colours a reader expects, so light modules are drawn).
pub fn qr(text: &str) -> Option<String> {
    let code = QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// Opens `url` in the user's browser (`$BROWSER`, else the desktop's default), without
/// waiting for it; a failure is only reported.
pub fn open(url: &str) {
    if let Err(e) = webbrowser::open(url) {
        eprintln!("onstream: cannot open a browser on {url}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a QR code drawn by [`qr`] back into a bitmap and decodes it (rqrr), so the
    /// code printed is one a phone reads, not only one that looks like a QR code.
    fn decode(drawn: &str) -> String {
        let rows: Vec<Vec<char>> = drawn.lines().map(|l| l.chars().collect()).collect();
        let width = rows.iter().map(Vec::len).max().unwrap();
        let height = rows.len() * 2;
        // The drawing is inverted (light modules drawn): a drawn half is a light module.
        let dark = |x: usize, y: usize| -> bool {
            let c = rows[y / 2].get(x).copied().unwrap_or(' ');
            let (upper, lower) = match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (false, false),
            };
            let drawn = if y % 2 == 0 { upper } else { lower };
            !drawn
        };
        // Each module 4×4 pixels: rqrr wants more than one pixel per module.
        let scale = 4;
        let mut img =
            rqrr::PreparedImage::prepare_from_bitmap(width * scale, height * scale, |x, y| {
                dark(x / scale, y / scale)
            });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code");
        grids[0].decode().unwrap().1
    }

    #[test]
    fn the_qr_code_decodes_to_the_url() {
        let url = "http://192.168.1.20:8000/";
        assert_eq!(decode(&qr(url).unwrap()), url);
        let v6 = "https://[2001:db8::1]:8443/";
        assert_eq!(decode(&qr(v6).unwrap()), v6);
    }

    #[test]
    fn a_specific_address_is_its_only_host() {
        let addr: SocketAddr = "10.1.2.3:80".parse().unwrap();
        assert_eq!(hosts(addr), ["10.1.2.3"]);
    }

    #[test]
    fn all_interfaces_list_localhost_first_and_no_loopback_or_link_local() {
        for addr in ["0.0.0.0:8000", "[::]:8000"] {
            let hosts = hosts(addr.parse().unwrap());
            assert_eq!(hosts[0], "localhost");
            for h in &hosts[1..] {
                assert!(
                    !h.starts_with("127.") && h != "[::1]" && !h.starts_with("[fe80"),
                    "{h}"
                );
            }
        }
        let v4_only = hosts("0.0.0.0:8000".parse().unwrap());
        assert!(v4_only.iter().all(|h| !h.starts_with('[')), "{v4_only:?}");
    }

    #[test]
    fn the_lan_host_is_the_first_that_is_not_loopback() {
        let hosts = ["localhost", "192.168.1.20", "10.0.0.2"].map(String::from);
        assert_eq!(lan_host(&hosts), Some("192.168.1.20"));
        assert_eq!(lan_host(&["localhost".to_owned()]), None);
    }
}
