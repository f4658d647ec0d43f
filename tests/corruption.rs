//! Damaged data files: a flipped byte in the middle of a segment never deletes acknowledged
//! messages or gives their seqs again; it is reported at start, by `momd verify`, and
//! `momd repair` moves it aside. A torn tail is still cut quietly.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{lines, momd_bin, numbered_lines, Momd};

const BATCHES: u64 = 5;
const PER_BATCH: u64 = 1000;

/// Publish a little to `other`, then BATCHES acknowledged batches of numbered lines to
/// `orders` (whose records then end the log). Returns every line of `orders`.
fn publish_batches(m: &Momd) -> Vec<String> {
    m.ctl_ok(&["publish", "other", "-q"], Some(b"kept\n"));
    let mut all = Vec::new();
    for b in 0..BATCHES {
        let input = numbered_lines("order-", b * PER_BATCH + 1, (b + 1) * PER_BATCH);
        m.ctl_ok(&["publish", "orders", "-q"], Some(&input));
        all.extend(lines(&input));
    }
    assert_eq!(m.topic_info("orders")["last_seq"], BATCHES * PER_BATCH);
    all
}

/// The newest segment file of the log: where `orders`'s records are.
fn orders_segment(data: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .expect("log dir")
        .map(|f| f.expect("entry").path())
        .collect();
    segs.sort();
    segs.pop().expect("a segment file")
}

fn stored(m: &Momd, topic: &str) -> Vec<String> {
    lines(&m.ctl_ok(
        &[
            "subscribe",
            topic,
            "--from",
            "all",
            "--until-end",
            "--timeout",
            "30s",
        ],
        None,
    ))
}

fn momd(args: &[&str], data: &Path) -> Output {
    Command::new(momd_bin())
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("MOMD_DATA")
        .output()
        .expect("running momd")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_flipped_byte_mid_segment_keeps_every_intact_acked_message_and_its_seqs() {
    let mut m = Momd::start();
    let acked = publish_batches(&m);

    // verify refuses while momd holds the data dir.
    let busy = momd(&["verify"], &m.data_dir());
    assert_eq!(busy.status.code(), Some(3), "{}", text(&busy.stderr));
    assert!(
        text(&busy.stderr).contains("in use"),
        "{}",
        text(&busy.stderr)
    );

    m.sigterm(Duration::from_secs(20));
    let seg = orders_segment(&m.data_dir());
    let mut bytes = std::fs::read(&seg).expect("read segment");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&seg, bytes).expect("write segment");

    m.restart();
    let log = m.stderr();
    assert!(
        log.contains("damaged record kept") && log.contains("topic=orders"),
        "damage not reported at start:\n{log}"
    );
    assert!(
        !log.contains("torn by a crash"),
        "damage called a torn tail:\n{log}"
    );
    let info = m.topic_info("orders");
    assert_eq!(
        info["last_seq"],
        BATCHES * PER_BATCH,
        "the last seq went back"
    );
    assert_eq!(stored(&m, "other"), vec!["kept"]);

    // Every message still readable is one that was acked, in order; only the damaged
    // record's (one batch here) is missing.
    let now = stored(&m, "orders");
    assert_eq!(now.len() as u64, (BATCHES - 1) * PER_BATCH);
    // The damage is counted where operators look: the topic's and the broker's stats.
    assert_eq!(m.topic_info("orders")["damaged"], PER_BATCH);
    assert_eq!(m.stats()["totals"]["damaged"], PER_BATCH);
    let info = text(&m.ctl_ok(&["topic", "info", "orders"], None));
    let line = format!("damaged:    {PER_BATCH} messages on disk cannot be read");
    assert!(info.contains(&line), "{info}");
    let mut it = acked.iter();
    for l in &now {
        assert!(it.any(|a| a == l), "{l} out of order or never published");
    }

    // A new publish continues after the highest seq ever given.
    m.ctl_ok(&["publish", "orders", "-q"], Some(b"after-damage\n"));
    assert_eq!(m.topic_info("orders")["last_seq"], BATCHES * PER_BATCH + 1);
    m.sigterm(Duration::from_secs(20));

    let v = momd(&["verify"], &m.data_dir());
    let out = text(&v.stdout);
    assert_eq!(v.status.code(), Some(1), "{out}{}", text(&v.stderr));
    let seg_name = seg.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        out.lines()
            .any(|l| l.starts_with("damaged: topic \"orders\"") && l.contains(&seg_name)),
        "{out}"
    );
    assert!(out.contains("1 damaged range"), "{out}");

    let r = momd(&["repair"], &m.data_dir());
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}{}",
        text(&r.stdout),
        text(&r.stderr)
    );
    assert!(
        text(&r.stdout).contains("moved aside"),
        "{}",
        text(&r.stdout)
    );
    assert!(m.data_dir().join("damaged").join("NOTES").exists());

    let v = momd(&["verify"], &m.data_dir());
    assert_eq!(v.status.code(), Some(0), "{}", text(&v.stdout));
    assert!(text(&v.stdout).contains("no damage"), "{}", text(&v.stdout));

    m.restart();
    assert!(
        !m.stderr().contains("damaged record kept"),
        "{}",
        m.stderr()
    );
    let mut want = now.clone();
    want.push("after-damage".into());
    assert_eq!(stored(&m, "orders"), want);
    assert!(
        m.topic_info("orders").get("damaged").is_none(),
        "moved aside: none left"
    );
    assert_eq!(m.stats()["totals"]["damaged"], 0);
    assert_eq!(stored(&m, "other"), vec!["kept"]);
    m.ctl_ok(&["publish", "orders", "-q"], Some(b"after-repair\n"));
    assert_eq!(m.topic_info("orders")["last_seq"], BATCHES * PER_BATCH + 2);
}

#[test]
fn garbage_after_the_last_record_is_cut_quietly_after_kill_9() {
    let mut m = Momd::start();
    let acked = publish_batches(&m);
    m.kill9();
    let seg = orders_segment(&m.data_dir());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open segment");
    std::io::Write::write_all(&mut f, b"MR\x02\x00 half a record that was never indexed")
        .expect("append");
    drop(f);
    m.restart();
    assert!(!m.stderr().contains("damaged"), "{}", m.stderr());
    assert_eq!(stored(&m, "orders"), acked);
    m.ctl_ok(&["publish", "orders", "-q"], Some(b"next\n"));
    assert_eq!(m.topic_info("orders")["last_seq"], BATCHES * PER_BATCH + 1);
    m.sigterm(Duration::from_secs(20));
    let v = momd(&["verify"], &m.data_dir());
    assert_eq!(v.status.code(), Some(0), "{}", text(&v.stdout));
}

#[test]
fn a_last_record_cut_short_is_damage_kept_and_its_seqs_never_given_again() {
    let mut m = Momd::start();
    let acked = publish_batches(&m);
    m.kill9();
    // The newest record cut short after the index named it. momd syncs a record before
    // its index entry, so a crash cannot do this: the file was damaged (truncated), and
    // acknowledged messages are in that record. They are reported, not cut quietly.
    // (Records of `$sys.events` follow it in the log: cut inside the last message of
    // `orders`, which takes them too.)
    let seg = orders_segment(&m.data_dir());
    let bytes = std::fs::read(&seg).expect("read segment");
    let last = format!("order-{}", BATCHES * PER_BATCH);
    let at = bytes
        .windows(last.len())
        .rposition(|w| w == last.as_bytes())
        .expect("the last message in the log") as u64;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open segment");
    f.set_len(at).expect("truncate");
    drop(f);
    m.restart();
    let log = m.stderr();
    assert!(log.contains("damaged record kept, not cut"), "{log}");
    let total = BATCHES * PER_BATCH;
    let info = m.topic_info("orders");
    assert_eq!(info["last_seq"], total, "{info}");
    assert_eq!(info["damaged"], PER_BATCH, "{info}\n{log}");
    let kept = (BATCHES - 1) * PER_BATCH;
    assert_eq!(stored(&m, "orders"), acked[..kept as usize].to_vec());
    // New messages get new seqs, in a new segment file.
    m.ctl_ok(&["publish", "orders", "-q"], Some(b"next\n"));
    assert_eq!(m.topic_info("orders")["last_seq"], total + 1);
    m.sigterm(Duration::from_secs(20));
    let v = momd(&["verify"], &m.data_dir());
    assert_eq!(v.status.code(), Some(1), "{}", text(&v.stdout));
}

#[test]
fn bytes_after_the_newest_indexed_record_are_a_torn_write_cut_quietly() {
    let mut m = Momd::start();
    let acked = publish_batches(&m);
    m.kill9();
    // A crash while a record was being appended, before its index entry: never
    // acknowledged, so it goes, and nothing else.
    let seg = orders_segment(&m.data_dir());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open segment");
    std::io::Write::write_all(&mut f, &[0x4d; 700]).expect("append");
    drop(f);
    m.restart();
    let log = m.stderr();
    assert!(!log.contains("damaged"), "{log}");
    assert_eq!(m.topic_info("orders")["last_seq"], BATCHES * PER_BATCH);
    assert_eq!(stored(&m, "orders"), acked);
    m.sigterm(Duration::from_secs(20));
    let v = momd(&["verify"], &m.data_dir());
    assert_eq!(v.status.code(), Some(0), "{}", text(&v.stdout));
}
