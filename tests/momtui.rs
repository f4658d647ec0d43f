//! The real momtui binary in a real terminal (tmux) against a real momd.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// One tmux server per test (its own socket): tests run in parallel, and a server that
/// exits when another test's last session ends must not take a starting session with it.
struct Tmux {
    session: String,
}

impl Tmux {
    /// Run a tmux command on this test's server (its socket is named after the session).
    fn run(&self, args: &[&str]) -> String {
        Tmux::run_on(&self.session, args)
    }

    fn run_on(socket: &str, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", socket])
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start `cmd` in a new 120x40 session. With `log`, everything the program writes to
    /// the terminal is copied there (the command waits a moment so nothing is missed).
    fn start(cmd: &str, log: Option<&Path>) -> Tmux {
        let session = format!("momtui-test-{}", rand_u64());
        let cmd = match log {
            Some(_) => format!("sleep 0.5; {cmd}"),
            None => cmd.to_string(),
        };
        Tmux::run_on(
            &session,
            &[
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                "120",
                "-y",
                "40",
                &cmd,
            ],
        );
        let tmux = Tmux { session };
        tmux.run(&["set-option", "-t", &tmux.session, "remain-on-exit", "on"]);
        if let Some(log) = log {
            let pipe = format!("cat >> {}", shell_path(log));
            tmux.run(&["pipe-pane", "-o", "-t", &tmux.session, &pipe]);
        }
        tmux
    }

    fn capture(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &self.session])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn format(&self, f: &str) -> String {
        self.run(&["display-message", "-p", "-t", &self.session, f])
            .trim()
            .to_string()
    }

    /// Wait until the pane shows `text`; on a timeout, say what it showed.
    fn wait_for(&self, text: &str) -> String {
        let last = std::cell::RefCell::new(String::new());
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(
                Duration::from_secs(15),
                &format!("{text:?} on screen"),
                || {
                    let screen = self.capture();
                    let hit = screen.contains(text);
                    *last.borrow_mut() = screen.clone();
                    hit.then_some(screen)
                },
            )
        }));
        found.unwrap_or_else(|_| panic!("{text:?} never appeared; the screen:\n{}", last.borrow()))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.session, "kill-server"])
            .output();
    }
}

fn has_tmux() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn shell_path(p: &Path) -> String {
    format!("'{}'", p.display())
}

#[test]
fn momtui_in_tmux_shows_topics_queues_and_payloads_then_quits_cleanly() {
    assert!(
        has_tmux(),
        "tmux is needed for this test (.ci/run installs it)"
    );
    let m = Momd::start();
    m.ctl_ok(&["publish", "demo.orders", "first", "-q"], None);
    m.ctl_ok(&["queue", "create", "work", "--bind", "demo.>"], None);
    let dir = tempfile::tempdir().expect("temp dir");
    let status_file = dir.path().join("status");
    let log = dir.path().join("terminal.log");
    let cmd = format!(
        "{} -s {}; echo \"exit=$?\" > {}",
        momtui_bin().display(),
        m.addr(),
        shell_path(&status_file)
    );
    let t = Tmux::start(&cmd, Some(&log));

    // Topics pane: the topic and its numbers.
    let screen = t.wait_for("demo.orders");
    assert!(screen.contains("connected"), "{screen}");
    // Subscriptions pane: the queue.
    t.keys(&["2"]);
    let screen = t.wait_for("work");
    assert!(screen.contains("demo.>"), "{screen}");
    // Stream pane: a payload published now appears.
    t.keys(&["4"]);
    t.wait_for("Stream >");
    m.ctl_ok(&["publish", "demo.orders", "hello-from-tmux", "-q"], None);
    t.wait_for("hello-from-tmux");
    // Help overlay, the cluster view, then quit.
    t.keys(&["?"]);
    t.wait_for("replay the selected topic");
    t.keys(&["Escape"]);
    // The cluster view: this momd is a single node.
    t.keys(&["n"]);
    t.wait_for("single node (not in cluster mode)");
    t.keys(&["Escape"]);
    t.keys(&["q"]);
    let status = wait_for(Duration::from_secs(10), "momtui to exit", || {
        std::fs::read_to_string(&status_file)
            .ok()
            .filter(|s| !s.is_empty())
    });
    assert_eq!(status.trim(), "exit=0");
    // The terminal was restored: tmux is back on the main screen, and what momtui wrote
    // last leaves the alternate screen, turns mouse reporting off and shows the cursor.
    wait_for(Duration::from_secs(5), "the main screen", || {
        (t.format("#{alternate_on}") == "0").then_some(())
    });
    let out = std::fs::read(&log).expect("the terminal log");
    let out = String::from_utf8_lossy(&out);
    let last = |seq: &str| out.rfind(seq);
    let entered = last("\x1b[?1049h").expect("momtui used the alternate screen");
    let left = last("\x1b[?1049l").expect("momtui left the alternate screen");
    assert!(left > entered, "the alternate screen was not left last");
    let shown = last("\x1b[?25h").expect("the cursor was shown");
    assert!(
        last("\x1b[?25l").is_none_or(|hidden| hidden < shown),
        "the cursor was left hidden"
    );
    assert!(
        last("\x1b[?1000l").is_some_and(|off| off > entered),
        "mouse reporting was left on"
    );
    let after = t.capture();
    assert!(
        !after.contains("Subscriptions"),
        "dashboard still on screen:\n{after}"
    );
}

#[test]
fn momtui_shows_reconnecting_when_the_broker_is_gone() {
    assert!(
        has_tmux(),
        "tmux is needed for this test (.ci/run installs it)"
    );
    let port = free_port();
    let t = Tmux::start(
        &format!("{} -s 127.0.0.1:{port}", momtui_bin().display()),
        None,
    );
    t.wait_for("reconnecting");
    t.keys(&["q"]);
    wait_for(Duration::from_secs(10), "momtui to exit", || {
        (t.format("#{pane_dead}") == "1").then_some(())
    });
}

#[test]
fn momtui_moves_to_the_next_server_of_its_list_when_its_broker_is_killed() {
    assert!(
        has_tmux(),
        "tmux is needed for this test (.ci/run installs it)"
    );
    let mut a = Momd::start();
    let b = Momd::start();
    let t = Tmux::start(
        &format!("{} -s {},{}", momtui_bin().display(), a.addr(), b.addr()),
        None,
    );
    // The header names the server of the list it is connected to.
    t.wait_for(&format!("mom {}  connected", a.addr()));
    a.kill9();
    t.wait_for(&format!("mom {}  connected", b.addr()));
    t.keys(&["q"]);
    wait_for(Duration::from_secs(10), "momtui to exit", || {
        (t.format("#{pane_dead}") == "1").then_some(())
    });
}

#[test]
fn momtui_restores_the_terminal_on_sigterm() {
    assert!(
        has_tmux(),
        "tmux is needed for this test (.ci/run installs it)"
    );
    let m = Momd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let status_file = dir.path().join("status");
    let log = dir.path().join("terminal.log");
    let cmd = format!(
        "{} -s {}; echo \"exit=$?\" > {}",
        momtui_bin().display(),
        m.addr(),
        shell_path(&status_file)
    );
    let t = Tmux::start(&cmd, Some(&log));
    t.wait_for("connected");
    // The pane runs a shell; momtui is its child.
    let shell = t.format("#{pane_pid}");
    let pid = wait_for(Duration::from_secs(5), "momtui's pid", || {
        let out = Command::new("ps")
            .args(["-o", "pid=", "--ppid", &shell])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .map(str::to_string)
    });
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = wait_for(Duration::from_secs(10), "momtui to exit", || {
        std::fs::read_to_string(&status_file)
            .ok()
            .filter(|s| !s.is_empty())
    });
    assert_eq!(status.trim(), "exit=0", "SIGTERM ends momtui cleanly");
    wait_for(Duration::from_secs(5), "the main screen", || {
        (t.format("#{alternate_on}") == "0").then_some(())
    });
    let out = String::from_utf8_lossy(&std::fs::read(&log).expect("the terminal log")).into_owned();
    let entered = out.rfind("\x1b[?1049h").expect("alternate screen used");
    assert!(out.rfind("\x1b[?1049l").is_some_and(|l| l > entered));
    assert!(out.rfind("\x1b[?25h").is_some_and(|l| l > entered));
}

/// Start momtui against `m` in tmux; the file it writes its exit status to.
fn start_momtui(m: &Momd, dir: &Path) -> (Tmux, std::path::PathBuf) {
    let status_file = dir.join("status");
    let cmd = format!(
        "{} -s {}; echo \"exit=$?\" > {}",
        momtui_bin().display(),
        m.addr(),
        shell_path(&status_file)
    );
    (Tmux::start(&cmd, None), status_file)
}

fn quits_with_0(t: &Tmux, status_file: &Path) {
    t.keys(&["q"]);
    let status = wait_for(Duration::from_secs(10), "momtui to exit", || {
        std::fs::read_to_string(status_file)
            .ok()
            .filter(|s| !s.is_empty())
    });
    assert_eq!(status.trim(), "exit=0");
    wait_for(Duration::from_secs(5), "the main screen", || {
        (t.format("#{alternate_on}") == "0").then_some(())
    });
}

#[test]
fn momtui_sorts_drills_into_a_queue_and_peeks_without_delivering() {
    assert!(
        has_tmux(),
        "tmux is needed for this test (.ci/run installs it)"
    );
    let m = Momd::start();
    m.ctl_ok(&["queue", "create", "jobs", "--bind", "b.hot"], None);
    m.ctl_ok(&["publish", "a.idle", "x", "-q"], None);
    m.ctl_ok(&["publish", "b.hot", "job-1", "job-2", "job-3", "-q"], None);
    let dir = tempfile::tempdir().expect("temp dir");
    let (t, status_file) = start_momtui(&m, dir.path());

    // By name first; Shift-M sorts by MSGS, most first.
    let screen = t.wait_for("b.hot");
    assert!(screen.find("a.idle") < screen.find("b.hot"), "{screen}");
    t.keys(&["M"]);
    let screen = t.wait_for("MSGS▼");
    let (hot, idle) = (screen.find("b.hot"), screen.find("a.idle"));
    assert!(hot.is_some() && hot < idle, "{screen}");

    // Pane 2, Enter: the queue's detail, and a peek at what it would deliver next.
    t.keys(&["2"]);
    t.wait_for("jobs");
    t.keys(&["Enter"]);
    t.wait_for("Queue jobs");
    let screen = t.wait_for("Next messages: 3");
    for p in ["job-1", "job-2", "job-3"] {
        assert!(screen.contains(p), "{screen}");
    }
    t.keys(&["j", "Enter"]);
    let screen = t.wait_for("b.hot#2");
    assert!(screen.contains("job-2"), "{screen}");
    t.keys(&["Escape"]);
    t.wait_for("Next messages: 3");
    t.keys(&["v"]);
    t.wait_for("Next messages: 3");
    // Peeking delivered nothing.
    let info: serde_json::Value =
        serde_json::from_slice(&m.ctl_ok(&["queue", "info", "jobs", "--json"], None))
            .expect("queue info --json");
    assert_eq!(info["unacked"], 0, "{info}");
    assert_eq!(info["delivered"], 0, "{info}");
    t.keys(&["Escape"]);
    t.wait_for("Subscriptions: 1 queues");
    quits_with_0(&t, &status_file);
}

#[test]
fn momtui_holds_one_passive_watch_however_often_the_stream_changes() {
    assert!(
        has_tmux(),
        "tmux is needed for this test (.ci/run installs it)"
    );
    let m = Momd::start();
    m.ctl_ok(&["publish", "b.hot", "one", "-q"], None);
    let dir = tempfile::tempdir().expect("temp dir");
    let (t, status_file) = start_momtui(&m, dir.path());
    t.wait_for("b.hot");
    // Enter streams the topic, r replays it, w and :watch take any pattern.
    t.keys(&["/"]);
    t.keys(&["-l", "hot"]);
    t.keys(&["Enter"]);
    t.wait_for("[filter: hot]");
    t.keys(&["Enter"]);
    t.wait_for("Stream b.hot");
    t.keys(&["1", "r"]);
    t.wait_for("Stream b.hot");
    for p in ["a.>", "b.*", "c.>"] {
        t.keys(&["w", "C-u"]);
        t.keys(&["-l", p]);
        t.keys(&["Enter"]);
        t.wait_for(&format!("Stream {p}"));
    }
    t.keys(&[":"]);
    t.keys(&["-l", "watch b.>"]);
    t.keys(&["Enter"]);
    t.wait_for("Stream b.>");
    let momtui = |s: &serde_json::Value| -> Vec<serde_json::Value> {
        s["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .filter(|c| c["name"] == "momtui")
            .cloned()
            .collect()
    };
    let stats = wait_for(Duration::from_secs(20), "momtui's one watch", || {
        let s = m.stats();
        let c = momtui(&s);
        (c.len() == 1 && c[0]["watch_patterns"] == serde_json::json!(["b.>"])).then_some(s)
    });
    let c = &momtui(&stats)[0];
    assert_eq!(c["watches"], 1, "{c}");
    // Passive: a publish to what it streams reached no watcher, says momctl.
    let out = m.ctl(&["publish", "b.hot", "two"], None);
    assert!(out.stderr.contains("reached no watcher"), "{}", out.stderr);
    // Its own watch is not counted in the WATCH column either.
    t.keys(&["1"]);
    let screen = t.wait_for("WATCH");
    let row = screen
        .lines()
        .find(|l| l.contains("b.hot"))
        .expect("the b.hot row");
    assert!(
        row.split_whitespace().rev().nth(2) == Some("0"),
        "WATCH 0 expected: {row}"
    );
    quits_with_0(&t, &status_file);
}
