//! Numbers for people: shared by momctl's tables and momtui.

/// Bytes in a binary unit: `512 B`, `9.8 KiB`, `1.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_in_units() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(10_420), "10.2 KiB");
        assert_eq!(super::bytes(3 << 30), "3.0 GiB");
    }
}
