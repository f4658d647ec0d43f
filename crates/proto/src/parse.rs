//! Values people type on both sides, parsed one way: broker addresses and byte sizes
//! (`momd --listen localhost:7000 --max-bytes 1GiB`, `momctl -s broker`).

/// The port momd listens on when an address names none.
pub const DEFAULT_PORT: u16 = 7878;

/// `host`, `host:port`, `ip`, `ip:port`, `[v6]` or `[v6]:port`; a missing port is 7878.
/// Returns `host:port` ready for name resolution.
pub fn addr(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty address: expected HOST or HOST:PORT".into());
    }
    // A bare IPv6 address has colons but no brackets.
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(format!("[{s}]:{DEFAULT_PORT}"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: missing ']' after the IPv6 address"))?;
        match after.strip_prefix(':') {
            Some(p) => (format!("[{h}]"), Some(p)),
            None if after.is_empty() => (format!("[{h}]"), None),
            None => return Err(format!("{s:?}: expected [IPV6]:PORT")),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(format!("{s:?}: expected HOST or HOST:PORT"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{s:?}: the port must be a number from 0 to 65535"))?,
    };
    Ok(format!("{host}:{port}"))
}

/// A byte size: a number with an optional unit (B, KB/KiB, MB/MiB, GB/GiB, TB/TiB; case
/// does not matter, K/M/G/T alone are decimal).
pub fn size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        u => {
            return Err(format!(
                "{s:?}: unknown size unit {u:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_the_default_port() {
        assert_eq!(addr("127.0.0.1").unwrap(), "127.0.0.1:7878");
        assert_eq!(addr("localhost:7000").unwrap(), "localhost:7000");
        assert_eq!(addr("broker").unwrap(), "broker:7878");
        assert_eq!(addr("::1").unwrap(), "[::1]:7878");
        assert_eq!(addr("[::1]").unwrap(), "[::1]:7878");
        assert_eq!(addr("[::1]:9").unwrap(), "[::1]:9");
        assert!(addr("").is_err());
        assert!(addr("host:port").is_err());
        assert!(addr("host:70000").is_err());
        assert!(addr("[::1").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("10").unwrap(), 10);
        assert_eq!(size("1GiB").unwrap(), 1 << 30);
        assert_eq!(size("2 MB").unwrap(), 2_000_000);
        assert_eq!(size("5k").unwrap(), 5000);
        assert!(size("1XB").is_err());
        assert!(size("GiB").is_err());
        assert!(size("99999999999TiB").is_err());
    }
}
