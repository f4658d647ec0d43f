//! TLS end to end: momd with a certificate made here (rcgen) for 127.0.0.1, signed by a CA
//! made here; the real momctl trusting that CA, taking any certificate (`--tls-insecure`),
//! trusting another CA, or not speaking TLS at all; and the reverse, a TLS client against a
//! plaintext port. Every refusal must be one clear line, not a hang.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{lines, momctl, numbered_lines, wait_for, Collector, Momd};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// Longest a refused client may take: the refusal must come at once, not at a timeout.
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

/// A CA and a server certificate it signed, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA named `ca_name`, and a server certificate for `names` (IPs or DNS names).
    fn new(ca_name: &str, names: &[&str]) -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("mom-tls-")
            .tempdir()
            .expect("temp dir");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);

        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut server = CertificateParams::new(names).expect("server params");
        server.distinguished_name.push(DnType::CommonName, "momd");
        let key = KeyPair::generate().expect("server key");
        let cert = server.signed_by(&key, &issuer).expect("server certificate");

        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("write PEM");
        };
        write("ca.pem", ca_cert.pem());
        write("cert.pem", cert.pem());
        write("key.pem", key.serialize_pem());
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// momd's flags for this certificate.
    fn momd_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path("cert.pem"),
            "--tls-key".into(),
            self.path("key.pem"),
        ]
    }
}

fn start_tls(pki: &Pki, extra: &[&str]) -> Momd {
    let mut args = pki.momd_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Momd::start_with(&args)
}

#[test]
fn publish_and_subscribe_over_tls_with_the_ca() {
    let pki = Pki::new("mom test CA", &["127.0.0.1"]);
    let m = start_tls(&pki, &[]);
    let ca = pki.path("ca.pem");
    // Enough to span many TLS records and several writes of the broker.
    let input = numbered_lines("m", 1, 3000);
    m.ctl_ok(&["--tls-ca", &ca, "publish", "orders"], Some(&input));
    let out = m.ctl_ok(
        &[
            "--tls-ca",
            &ca,
            "subscribe",
            "orders",
            "--from",
            "all",
            "--count",
            "3000",
        ],
        None,
    );
    assert_eq!(lines(&out), lines(&input));
    // A payload of 1 MiB crosses in one frame, many TLS records.
    let big = vec![b'x'; 1 << 20];
    m.ctl_ok(&["--tls-ca", &ca, "publish", "big", "--whole"], Some(&big));
    let got = m.ctl_ok(
        &[
            "--tls-ca",
            &ca,
            "subscribe",
            "big",
            "--from",
            "all",
            "--count",
            "1",
            "--raw",
        ],
        None,
    );
    assert!(got == big, "1 MiB back byte for byte ({} bytes)", got.len());
}

#[test]
fn subscribe_over_tls_reconnects_after_the_broker_is_killed() {
    let pki = Pki::new("mom test CA", &["127.0.0.1"]);
    let mut m = start_tls(&pki, &[]);
    let ca = pki.path("ca.pem");
    let sub = Collector::new(m.spawn_ctl(&["--tls-ca", &ca, "subscribe", "t"]));
    // The watch is set up once a publish reaches it.
    wait_for(Duration::from_secs(15), "the subscriber", || {
        m.ctl_ok(&["--tls-ca", &ca, "publish", "t", "before"], None);
        (sub.count() > 0).then_some(())
    });
    m.kill9();
    m.restart();
    wait_for(
        Duration::from_secs(30),
        "the message after the restart",
        || {
            m.ctl_ok(&["--tls-ca", &ca, "publish", "t", "after"], None);
            sub.lines().contains(&"after".to_string()).then_some(())
        },
    );
    let (_, err) = sub.kill();
    assert!(!err.contains("close_notify"), "{err}");
}

#[test]
fn tls_insecure_takes_any_certificate_and_says_so() {
    let pki = Pki::new("mom test CA", &["127.0.0.1"]);
    let m = start_tls(&pki, &[]);
    let out = m.ctl(&["--tls-insecure", "publish", "t"], Some(b"one\n"));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stderr.matches("--tls-insecure").count(),
        1,
        "one warning: {out:?}"
    );
    let out = m.ctl_ok(
        &[
            "--tls-insecure",
            "subscribe",
            "t",
            "--from",
            "all",
            "--count",
            "1",
        ],
        None,
    );
    assert_eq!(lines(&out), ["one"]);
}

#[test]
fn plaintext_client_on_the_tls_port_is_told_to_use_tls() {
    let pki = Pki::new("mom test CA", &["127.0.0.1"]);
    let m = start_tls(&pki, &[]);
    let out = m.ctl_timeout(&["topic", "ls"], None, REFUSED_WITHIN);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr
            .contains("the server speaks TLS: give --tls-ca FILE"),
        "{out:?}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "one line: {out:?}");
    // The refused handshake is no error of the broker's.
    assert!(!m.stderr().contains("ERROR"), "{}", m.stderr());
}

#[test]
fn tls_client_on_a_plaintext_port_is_told_the_server_does_not_speak_tls() {
    let pki = Pki::new("mom test CA", &["127.0.0.1"]);
    let m = Momd::start();
    let ca = pki.path("ca.pem");
    let out = m.ctl_timeout(&["--tls-ca", &ca, "topic", "ls"], None, REFUSED_WITHIN);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("the server does not speak TLS"),
        "{out:?}"
    );
}

#[test]
fn a_client_trusting_another_ca_is_refused() {
    let pki = Pki::new("mom test CA", &["127.0.0.1"]);
    let other = Pki::new("someone else's CA", &["127.0.0.1"]);
    let m = start_tls(&pki, &[]);
    let out = m.ctl_timeout(
        &["--tls-ca", &other.path("ca.pem"), "publish", "t"],
        Some(b"secret\n"),
        REFUSED_WITHIN,
    );
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("not signed by a CA in --tls-ca"),
        "{out:?}"
    );
    // Nothing got through.
    let ca = pki.path("ca.pem");
    let out = m.ctl(&["--tls-ca", &ca, "topic", "info", "t"], None);
    assert_eq!(out.code, 6, "topic t must not exist: {out:?}");
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    // Issued for a DNS name only: 127.0.0.1 is not in it.
    let pki = Pki::new("mom test CA", &["broker.example"]);
    let m = start_tls(&pki, &[]);
    let out = m.ctl_timeout(
        &["--tls-ca", &pki.path("ca.pem"), "topic", "ls"],
        None,
        REFUSED_WITHIN,
    );
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("not for the address given to -s"),
        "{out:?}"
    );
}

#[test]
fn listen_plain_serves_plaintext_beside_tls() {
    let pki = Pki::new("mom test CA", &["127.0.0.1"]);
    let plain = format!("127.0.0.1:{}", common::free_port());
    let m = start_tls(&pki, &["--listen-plain", &plain]);
    let ca = pki.path("ca.pem");
    m.ctl_ok(&["--tls-ca", &ca, "publish", "t"], Some(b"over tls\n"));
    let out = momctl(
        &[
            "-s",
            &plain,
            "subscribe",
            "t",
            "--from",
            "all",
            "--count",
            "1",
        ],
        None,
        common::CTL_TIMEOUT,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(lines(&out.stdout), ["over tls"]);
    // The plaintext port does not speak TLS, and the TLS port no plaintext.
    let out = momctl(
        &["-s", &plain, "--tls-ca", &ca, "topic", "ls"],
        None,
        REFUSED_WITHIN,
    );
    assert!(out.stderr.contains("does not speak TLS"), "{out:?}");
    let out = m.ctl_timeout(&["topic", "ls"], None, REFUSED_WITHIN);
    assert!(out.stderr.contains("the server speaks TLS"), "{out:?}");
}

#[test]
fn momd_names_a_missing_or_bad_certificate_file_at_start() {
    let pki = Pki::new("mom test CA", &["127.0.0.1"]);
    let data = tempfile::tempdir().expect("temp dir");
    let start = |cert: &str, key: &str| {
        let out = Command::new(common::momd_bin())
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .args(["--tls-cert", cert, "--tls-key", key])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("running momd");
        assert!(!out.status.success(), "momd started with {cert} and {key}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing: PathBuf = pki.dir.path().join("nowhere.pem");
    let missing = missing.display().to_string();
    let err = start(&missing, &pki.path("key.pem"));
    assert!(
        err.contains("--tls-cert") && err.contains(&missing),
        "{err}"
    );
    // The certificate where the key should be.
    let err = start(&pki.path("cert.pem"), &pki.path("cert.pem"));
    assert!(
        err.contains("--tls-key") && err.contains("no private key"),
        "{err}"
    );
}

/// `--tls` trusts the system's CA certificates (here SSL_CERT_FILE names the test CA, as it
/// names a system bundle elsewhere); a context can carry it.
#[test]
fn tls_with_the_system_roots_and_from_a_context() {
    let pki = Pki::new("mom test CA", &["127.0.0.1"]);
    let m = start_tls(&pki, &[]);
    let addr = m.addr();
    let ca = pki.path("ca.pem");
    let cfg = tempfile::tempdir().expect("config dir");
    let cfg = cfg.path().to_string_lossy().into_owned();
    let env = [
        ("SSL_CERT_FILE", ca.as_str()),
        ("MOM_CONFIG_DIR", cfg.as_str()),
    ];
    let out = common::momctl_env(
        &["-s", &addr, "--tls", "publish", "t", "one"],
        None,
        common::CTL_TIMEOUT,
        &env,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let out = common::momctl_env(
        &["-s", &addr, "--tls", "context", "add", "secure", "--use"],
        None,
        common::CTL_TIMEOUT,
        &env,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let out = common::momctl_env(
        &["subscribe", "t", "--from", "all", "--count", "1"],
        None,
        common::CTL_TIMEOUT,
        &env,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(lines(&out.stdout), ["one"]);
    // Without the CA in the system roots, the certificate is refused.
    let out = common::momctl_env(
        &["-s", &addr, "--tls", "topic", "ls"],
        None,
        common::CTL_TIMEOUT,
        &[
            ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
            ("MOM_CONFIG_DIR", cfg.as_str()),
        ],
    );
    assert_eq!(out.code, 4, "{out:?}");
}
