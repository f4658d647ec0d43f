//! The flags as clap parses them, and the checks `Args::check` makes of them together.

use super::*;

#[test]
fn http_addresses_default_to_port_7879() {
    let addr = |s: &str| parse_http_listen(s).map(|a| a.to_string());
    assert_eq!(addr("127.0.0.1"), Ok("127.0.0.1:7879".into()));
    assert_eq!(addr("127.0.0.1:8080"), Ok("127.0.0.1:8080".into()));
    assert_eq!(addr("::1"), Ok("[::1]:7879".into()));
    assert_eq!(addr("[::1]"), Ok("[::1]:7879".into()));
    assert_eq!(addr("[::1]:8080"), Ok("[::1]:8080".into()));
    assert!(addr("127.0.0.1:http").is_err());
}

#[test]
fn peer_lists_parse_and_refuse_what_is_wrong() {
    let p = parse_peers("1=127.0.0.1:7901, 2=127.0.0.1:7902,3=localhost:7903").expect("valid");
    assert_eq!(p.0.len(), 3);
    assert_eq!(p.0[&3], "localhost:7903");
    assert!(parse_peers("1=127.0.0.1:7901,1=127.0.0.1:7902").is_err());
    assert!(parse_peers("0=127.0.0.1:7901").is_err());
    assert!(parse_peers("x=127.0.0.1:7901").is_err());
    assert!(parse_peers("1=127.0.0.1").is_err());
    assert!(parse_peers("1=127.0.0.1:7901,").is_err());
    let args = |extra: &[&str]| {
        let mut v = vec!["momd"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).expect("parses")
    };
    let full = [
        "--cluster-id",
        "demo",
        "--node-id",
        "2",
        "--peer-listen",
        "127.0.0.1:7902",
        "--peers",
        "1=127.0.0.1:7901,2=127.0.0.1:7902,3=127.0.0.1:7903",
    ];
    assert_eq!(args(&full).check(), Ok(()));
    assert!(args(&full[..4]).check().is_err(), "all four or none");
    let mut wrong = full;
    wrong[5] = "127.0.0.1:7909";
    assert!(args(&wrong).check().unwrap_err().contains("peer_listen is"));
    let mut joiner = full;
    joiner[3] = "4";
    joiner[5] = "127.0.0.1:7904";
    assert_eq!(args(&joiner).check(), Ok(()), "a new node, to be joined");
    let mut groups = full.to_vec();
    groups.extend(["--data-groups", "3"]);
    assert_eq!(args(&groups).check(), Ok(()));
    assert_eq!(args(&groups).data_groups, Some(3));
    let e = args(&["--data-groups", "3"]).check().unwrap_err();
    assert!(e.contains("data_groups is for cluster mode"), "{e}");
    for bad in ["0", "65", "x"] {
        let mut v = vec!["momd"];
        v.extend_from_slice(&full);
        v.extend(["--data-groups", bad]);
        assert!(Args::try_parse_from(v).is_err(), "--data-groups {bad}");
    }
}

#[test]
fn fsync_modes_parse() {
    assert_eq!("always".parse::<FsyncMode>(), Ok(FsyncMode::Always));
    assert_eq!("never".parse::<FsyncMode>(), Ok(FsyncMode::Never));
    assert_eq!(
        "batch=5".parse::<FsyncMode>(),
        Ok(FsyncMode::Batch(Duration::from_millis(5)))
    );
    assert!("batch=0".parse::<FsyncMode>().is_err());
    assert!("sometimes".parse::<FsyncMode>().is_err());
    assert_eq!(
        FsyncMode::Batch(Duration::from_millis(5)).to_string(),
        "batch=5"
    );
}

#[test]
fn listen_takes_what_momctl_takes() {
    let parse = |s: &str| parse_listen(s).map(|a| a.to_string());
    assert_eq!(parse("127.0.0.1:7000").as_deref(), Ok("127.0.0.1:7000"));
    assert_eq!(parse("127.0.0.1:0").as_deref(), Ok("127.0.0.1:0"));
    assert_eq!(parse("127.0.0.1").as_deref(), Ok("127.0.0.1:7878"));
    assert_eq!(parse("[::1]:7000").as_deref(), Ok("[::1]:7000"));
    assert_eq!(parse("::1").as_deref(), Ok("[::1]:7878"));
    let local = parse_listen("localhost:7000").expect("localhost resolves");
    assert!(local.ip().is_loopback() && local.port() == 7000, "{local}");
    assert!(parse_listen("127.0.0.1:port").is_err());
    assert!(parse_listen("").is_err());
}

#[test]
fn sizes_take_units_and_plain_numbers() {
    let args = |extra: &[&str]| {
        let mut v = vec!["momd"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v)
    };
    let a = args(&[
        "--max-bytes",
        "1GiB",
        "--max-frame",
        "16MiB",
        "--max-payload",
        "2097152",
        "--watch-buffer",
        "512KiB",
        "--listen",
        "localhost",
    ])
    .expect("valid flags");
    assert_eq!(a.max_bytes, 1 << 30);
    assert_eq!(a.max_frame, 16 << 20);
    assert_eq!(a.max_payload, 2 << 20);
    assert_eq!(a.watch_buffer, 512 << 10);
    assert_eq!(a.listen.port(), 7878);
    let d = args(&[]).expect("defaults");
    assert_eq!(d.listen.to_string(), mom_proto::DEFAULT_ADDR);
    assert_eq!(d.max_frame, mom_proto::DEFAULT_MAX_FRAME);
    assert!(args(&["--max-bytes", "1 lightyear"]).is_err());
}
