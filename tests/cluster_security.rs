//! Who may be a peer, end to end with three real momd processes: a cluster secret every
//! node must prove it holds, and TLS on the peer link with certificates of the cluster's
//! CA (made here with rcgen).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::cluster::{all_lines, cluster_args, leader, peer_list, poll, status};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

#[test]
fn with_a_cluster_secret_the_nodes_form_and_a_node_without_it_is_kept_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret");
    let other = dir.path().join("other");
    std::fs::write(
        &secret,
        "Vm0wd2QyUXlVWGxWV0d4V1YwZDRWMVl3WkRSV01WbDNXa1JTVjAxV2JETlhhMUpUVmpBeFYySkVU\n",
    )
    .expect("secret");
    std::fs::write(&other, "another secret, long enough to be one\n").expect("secret");
    let (list, addrs) = peer_list(3);
    let with = |args: Vec<String>, file: &std::path::Path| -> Momd {
        let mut args = args;
        args.extend([
            "--cluster-secret-file".to_string(),
            file.display().to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Momd::start_with(&args)
    };
    let nodes: Vec<Momd> = (1..=3u64)
        .map(|id| with(cluster_args(id, &addrs[id as usize - 1], &list), &secret))
        .collect();
    let all = [1, 2, 3];
    poll(Duration::from_secs(20), "a leader", || {
        leader(&nodes[0], &all)
    });
    nodes[0].ctl_ok(&["publish", "s.t", "-q", "kept"], None);
    assert_eq!(all_lines(&nodes[2], "s.t", 1), vec!["kept".to_string()]);

    // Node 4 holds another secret: the members refuse it, and it is not added.
    let addr4 = format!("127.0.0.4:{}", free_port());
    let _four = with(cluster_args(4, &addr4, &list), &other);
    let out = nodes[1].ctl_timeout(
        &["cluster", "join", "4", &addr4],
        None,
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 7, "{out:?}");
    assert!(
        out.stderr.contains("does not hold this cluster's secret"),
        "{out:?}"
    );
    let st = status(&nodes[0]).expect("status");
    assert_eq!(st["nodes"].as_array().map(Vec::len), Some(3), "{st}");
    nodes[0].ctl_ok(&["publish", "s.t", "-q", "still"], None);

    // A secret too short to be one: momd does not start.
    let short = dir.path().join("short");
    std::fs::write(&short, "tiny\n").expect("secret");
    let err = refused_at_start(
        5,
        &list,
        vec![
            "--cluster-secret-file".to_string(),
            short.display().to_string(),
        ],
    );
    assert!(err.contains("at least 16 bytes"), "{err}");
}

/// Node `id` of the cluster of `list` with `extra` flags does not start: its stderr.
fn refused_at_start(id: u64, list: &str, extra: Vec<String>) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = cluster_args(id, &format!("127.0.0.{id}:{}", free_port()), list);
    args.extend(extra);
    args.extend([
        "--data".to_string(),
        dir.path().join("data").display().to_string(),
        "--listen".to_string(),
        format!("127.0.0.1:{}", free_port()),
    ]);
    let out = std::process::Command::new(momd_bin())
        .args(&args)
        .output()
        .expect("momd");
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A CA, and PEM files of certificates it signed, in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = ca.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write");
        Pki {
            dir,
            issuer: Issuer::new(ca, key),
        }
    }

    /// `--peer-tls-*` for a node whose peer listener is on `ip`, with a certificate of this
    /// CA naming it.
    fn node_args(&self, id: u64, ip: &str) -> Vec<String> {
        let params = CertificateParams::new(vec![ip.to_string()]).expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        let path = |f: &str| self.dir.path().join(format!("{id}-{f}"));
        std::fs::write(path("cert.pem"), cert.pem()).expect("write");
        std::fs::write(path("key.pem"), key.serialize_pem()).expect("write");
        vec![
            "--peer-tls-cert".into(),
            path("cert.pem").display().to_string(),
            "--peer-tls-key".into(),
            path("key.pem").display().to_string(),
            "--peer-tls-ca".into(),
            self.dir.path().join("ca.pem").display().to_string(),
        ]
    }
}

fn start(mut args: Vec<String>, extra: Vec<String>) -> Momd {
    args.extend(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Momd::start_with(&args)
}

#[test]
fn with_peer_tls_the_nodes_form_and_a_node_of_another_ca_or_in_plaintext_is_kept_out() {
    let pki = Pki::new("mom cluster CA");
    let (list, addrs) = peer_list(3);
    let nodes: Vec<Momd> = (1..=3u64)
        .map(|id| {
            let ip = format!("127.0.0.{id}");
            start(
                cluster_args(id, &addrs[id as usize - 1], &list),
                pki.node_args(id, &ip),
            )
        })
        .collect();
    let all = [1, 2, 3];
    poll(Duration::from_secs(20), "a leader", || {
        leader(&nodes[0], &all)
    });
    nodes[0].ctl_ok(&["publish", "tls.t", "-q", "over tls"], None);
    assert_eq!(
        all_lines(&nodes[2], "tls.t", 1),
        vec!["over tls".to_string()]
    );

    // The peer port speaks TLS only: a plaintext hello gets no answer of the peer protocol
    // (a TLS alert, or the connection closed).
    let mut raw = std::net::TcpStream::connect(&addrs[0]).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let hello = [0u8, 0, 0, 5, 0x81, 0xa1, b'a', 0xa1, b'b'];
    let _ = raw.write_all(&hello);
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(
        got.is_empty() || got[0] == 0x15,
        "a plaintext peer got {got:?}"
    );

    // Node 4 has a certificate of another CA: not added, and the cluster goes on.
    let other = Pki::new("another CA");
    let addr4 = format!("127.0.0.4:{}", free_port());
    let _four = start(
        cluster_args(4, &addr4, &list),
        other.node_args(4, "127.0.0.4"),
    );
    let out = nodes[1].ctl_timeout(
        &["cluster", "join", "4", &addr4],
        None,
        Duration::from_secs(60),
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("TLS"), "{out:?}");
    let st = status(&nodes[0]).expect("status");
    assert_eq!(st["nodes"].as_array().map(Vec::len), Some(3), "{st}");

    // Node 5 without TLS: not added either.
    let addr5 = format!("127.0.0.5:{}", free_port());
    let _five = start(cluster_args(5, &addr5, &list), Vec::new());
    let out = nodes[1].ctl_timeout(
        &["cluster", "join", "5", &addr5],
        None,
        Duration::from_secs(60),
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("TLS"), "{out:?}");
    nodes[0].ctl_ok(&["publish", "tls.t", "-q", "still"], None);
    assert_eq!(all_lines(&nodes[1], "tls.t", 2).len(), 2);

    // Half the flags: momd does not start, and says what goes together.
    let half = pki.node_args(6, "127.0.0.6").into_iter().take(2).collect();
    let err = refused_at_start(6, &list, half);
    assert!(err.contains("go together"), "{err}");
}
