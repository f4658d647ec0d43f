//! The real momtui binary in a real terminal (tmux) against a real momd.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

struct Tmux {
    session: String,
}

impl Tmux {
    fn run(args: &[&str]) -> String {
        let out = Command::new("tmux").args(args).output().expect("tmux runs");
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
        Tmux::run(&[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "120",
            "-y",
            "40",
            &cmd,
        ]);
        Tmux::run(&["set-option", "-t", &session, "remain-on-exit", "on"]);
        if let Some(log) = log {
            let pipe = format!("cat >> {}", shell_path(log));
            Tmux::run(&["pipe-pane", "-o", "-t", &session, &pipe]);
        }
        Tmux { session }
    }

    fn capture(&self) -> String {
        Tmux::run(&["capture-pane", "-p", "-t", &self.session])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        Tmux::run(&args);
    }

    fn format(&self, f: &str) -> String {
        Tmux::run(&["display-message", "-p", "-t", &self.session, f])
            .trim()
            .to_string()
    }

    /// Wait until the pane shows `text`.
    fn wait_for(&self, text: &str) -> String {
        wait_for(
            Duration::from_secs(15),
            &format!("{text:?} on screen"),
            || {
                let screen = self.capture();
                screen.contains(text).then_some(screen)
            },
        )
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
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
    // Help overlay, then quit.
    t.keys(&["?"]);
    t.wait_for("replay the selected topic");
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
