//! A list of servers to fail over between (`-s a:7801,b:7801`): how it is written, in which
//! order its servers are tried, and how the reasons of servers that all failed are said in
//! one line.

/// Parse `HOST[:PORT],HOST[:PORT],…` into addresses ready for name resolution (the port
/// defaults to 7878), in the order given. An empty entry (`a,,b`, a trailing comma), a bad
/// address or a server listed twice is refused, naming it.
pub fn parse_servers(list: &str) -> Result<Vec<String>, String> {
    let entries: Vec<&str> = list.split(',').collect();
    if entries.len() == 1 {
        return mom_proto::parse::addr(list).map(|a| vec![a]);
    }
    let mut servers: Vec<String> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        if entry.trim().is_empty() {
            let which = if i + 1 == entries.len() {
                "ends with a comma".to_string()
            } else if i == 0 {
                "starts with a comma".to_string()
            } else {
                format!("has an empty entry (number {})", i + 1)
            };
            return Err(format!(
                "server list {list:?} {which}: expected HOST[:PORT],HOST[:PORT],…"
            ));
        }
        let addr = mom_proto::parse::addr(entry)
            .map_err(|e| format!("server list {list:?}, entry {}: {e}", i + 1))?;
        if servers.contains(&addr) {
            return Err(format!("server list {list:?} names {addr} twice"));
        }
        servers.push(addr);
    }
    Ok(servers)
}

/// [`parse_servers`] for a command line: the list written back in canonical form
/// (`broker,10.0.0.2:7000` → `broker:7878,10.0.0.2:7000`), what a context saves and what
/// `momctl login` keys its token by.
pub fn server_list_arg(list: &str) -> Result<String, String> {
    parse_servers(list).map(|s| s.join(","))
}

/// `servers` turned to start `skip` places after `server` (from the first when it is not
/// listed), each one once.
pub(super) fn rotated(servers: &[String], server: &str, skip: usize) -> Vec<String> {
    let start = servers
        .iter()
        .position(|s| s == server)
        .map_or(0, |i| i + skip);
    let n = servers.len().max(1);
    (0..servers.len())
        .map(|k| servers[(start + k) % n].clone())
        .collect()
}

/// A reason short enough to stand beside others on one line: without the OS's error
/// number, lower case like the rest of momctl's messages (`Connection refused (os error
/// 111)` → `connection refused`).
pub(super) fn compact(reason: &str) -> String {
    let mut r = reason.trim();
    if let Some(i) = r.rfind(" (os error ") {
        if r.ends_with(')') {
            r = &r[..i];
        }
    }
    let mut chars = r.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => first
            .to_lowercase()
            .chain(r[first.len_utf8()..].chars())
            .collect(),
        _ => r.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_split_at_commas_and_each_server_gets_the_default_port() {
        assert_eq!(
            parse_servers("127.0.0.1:7801,127.0.0.1:7802,broker").unwrap(),
            ["127.0.0.1:7801", "127.0.0.1:7802", "broker:7878"]
        );
        assert_eq!(
            parse_servers(" a:1 , [::1]:2,::1").unwrap(),
            ["a:1", "[::1]:2", "[::1]:7878"]
        );
        assert_eq!(
            server_list_arg("a,b:9").as_deref(),
            Ok("a:7878,b:9"),
            "written back in canonical form"
        );
    }

    #[test]
    fn one_server_is_a_list_of_one_and_keeps_its_old_errors() {
        assert_eq!(parse_servers("127.0.0.1").unwrap(), ["127.0.0.1:7878"]);
        assert_eq!(
            parse_servers("127.0.0.1:x").unwrap_err(),
            mom_proto::parse::addr("127.0.0.1:x").unwrap_err()
        );
        assert!(parse_servers("").is_err());
    }

    #[test]
    fn empty_entries_are_refused_and_named() {
        let e = parse_servers("a,,b").unwrap_err();
        assert!(e.contains("empty entry (number 2)"), "{e}");
        let e = parse_servers("a,b,").unwrap_err();
        assert!(e.contains("ends with a comma"), "{e}");
        let e = parse_servers(",a").unwrap_err();
        assert!(e.contains("starts with a comma"), "{e}");
        let e = parse_servers("a, ,b").unwrap_err();
        assert!(e.contains("empty entry"), "{e}");
        assert!(parse_servers(",").is_err());
    }

    #[test]
    fn a_bad_address_in_a_list_is_named_by_its_place() {
        let e = parse_servers("a:1,b:port,c").unwrap_err();
        assert!(e.contains("entry 2") && e.contains("b:port"), "{e}");
        let e = parse_servers("a,b:70000").unwrap_err();
        assert!(e.contains("entry 2") && e.contains("65535"), "{e}");
        let e = parse_servers("a,[::1").unwrap_err();
        assert!(e.contains("entry 2"), "{e}");
        let e = parse_servers("a,b c").unwrap_err();
        assert!(e.contains("entry 2"), "{e}");
    }

    #[test]
    fn a_server_listed_twice_is_refused() {
        let e = parse_servers("a:1,b,a:1").unwrap_err();
        assert!(e.contains("a:1 twice"), "{e}");
        // The same after the default port is filled in.
        assert!(parse_servers("a,a:7878").is_err());
    }

    #[test]
    fn rotation_starts_after_the_server_that_failed_and_comes_back_to_it_last() {
        let s: Vec<String> = ["a", "b", "c"].iter().map(|x| x.to_string()).collect();
        assert_eq!(rotated(&s, "a", 1), ["b", "c", "a"]);
        assert_eq!(rotated(&s, "b", 1), ["c", "a", "b"]);
        assert_eq!(rotated(&s, "c", 1), ["a", "b", "c"]);
        assert_eq!(rotated(&s, "b", 0), ["b", "c", "a"]);
        assert_eq!(rotated(&s, "elsewhere", 1), ["a", "b", "c"]);
        assert_eq!(rotated(&s[..1], "a", 1), ["a"]);
        assert!(rotated(&[], "a", 1).is_empty());
    }

    #[test]
    fn reasons_are_made_compact() {
        assert_eq!(
            compact("Connection refused (os error 111)"),
            "connection refused"
        );
        assert_eq!(compact("no answer in 5s"), "no answer in 5s");
        assert_eq!(compact("TLS handshake failed"), "TLS handshake failed");
        assert_eq!(
            compact("the server closed the connection"),
            "the server closed the connection"
        );
    }
}
