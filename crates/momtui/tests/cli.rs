//! momtui's command line, without a terminal.

use std::process::Command;

#[test]
fn help_exits_0_and_names_the_keys_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_momtui"))
        .arg("--help")
        .output()
        .expect("momtui runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--server") && text.contains("--buffer") && text.contains("Press ?"));
}

#[test]
fn refuses_to_draw_when_stdout_is_not_a_terminal() {
    let out = Command::new(env!("CARGO_BIN_EXE_momtui"))
        .args(["-s", "127.0.0.1:1"])
        .output()
        .expect("momtui runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a terminal"));
}
