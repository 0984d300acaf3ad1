//! Plain `http://` to a server that is not on this machine sends the token (and every file)
//! in clear: [`warn_once`] says so, once per process, on stderr (the CLI's terminal, or the
//! mount daemon's log). Loopback (`localhost`, 127.0.0.0/8, `::1`) is not warned about.

use std::sync::atomic::{AtomicBool, Ordering};

static WARNED: AtomicBool = AtomicBool::new(false);

/// Whether `url` is plain http to a host that is not loopback.
pub fn is_cleartext(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url.trim()) else {
        return false;
    };
    if parsed.scheme() != "http" {
        return false;
    }
    match parsed.host() {
        Some(url::Host::Domain(d)) => !d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => !ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => !ip.is_loopback(),
        None => false,
    }
}

/// Warn (once per process) when `url` sends the token in clear.
pub fn warn_once(url: &str) {
    if is_cleartext(url) && !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "cec: warning: {url} is plain http: the token and the files travel in clear, readable and changeable by anyone on the way; use https"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_off_this_machine_is_cleartext() {
        assert!(is_cleartext("http://cells.example.com"));
        assert!(is_cleartext("http://192.168.1.5:8080/"));
        assert!(!is_cleartext("https://cells.example.com"));
        assert!(!is_cleartext("http://localhost:8080"));
        assert!(!is_cleartext("http://127.0.0.1:8080"));
        assert!(!is_cleartext("http://127.9.9.9"));
        assert!(!is_cleartext("http://[::1]:8080"));
    }
}
