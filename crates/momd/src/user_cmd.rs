//! `momd user add|rm|ls|passwd`: users on a stopped momd's data dir (the first admin before
//! the broker is ever on a network, or a lost admin password). It takes the data dir's lock,
//! so it refuses politely while a momd uses it. Exit codes: 0 done, 1 refused (exists, not
//! found, a bad name or pattern), 3 cannot run.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::auth::{self, Auth, AuthConfig};
use crate::config::UserCmd;
use crate::lock;
use crate::store::Store;
use crate::verify::EXIT_CANNOT_CHECK;

/// The password of a new user or a `passwd`: stdin's first line, MOM_PASSWORD, or a prompt
/// without echo. Never the command line (it would show in `ps`).
fn password(from_stdin: bool, name: &str) -> anyhow::Result<String> {
    let pw = if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else if let Ok(p) = std::env::var("MOM_PASSWORD") {
        p
    } else {
        let first = rpassword::prompt_password(format!("password for {name}: "))
            .context("no terminal to ask for the password: use --password-stdin or MOM_PASSWORD")?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            bail!("the two passwords differ");
        }
        first
    };
    if pw.is_empty() {
        bail!("an empty password");
    }
    Ok(pw)
}

pub fn run(data: &Path, cmd: UserCmd) -> ExitCode {
    match run_inner(data, cmd) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("momd user: {e:#}");
            ExitCode::from(EXIT_CANNOT_CHECK)
        }
    }
}

/// Ok(false): refused, the reason printed.
fn run_inner(data: &Path, cmd: UserCmd) -> anyhow::Result<bool> {
    // A cluster's users live in its metadata group, the same on every node: a change to one
    // node's copy here would be lost, or differ from the others.
    if let Some(id) = crate::cluster::identity::read(data)? {
        eprintln!(
            "momd user: {} is the data dir of node {} of cluster {:?}, whose users are the \
             cluster's: use `momctl user …` against any running node (a cluster without users \
             takes an admin from 127.0.0.1: `momctl -s 127.0.0.1:PORT user add root --admin`)",
            data.display(),
            id.node_id,
            id.cluster_id
        );
        return Ok(false);
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let _lock = lock::lock(data)
        .context("momd user works only on a stopped momd; while it runs, use `momctl user`")?;
    let store = Store::open(data, 16 << 20)
        .with_context(|| format!("opening the store in {}", data.display()))?;
    let auth = Auth::open(
        store.db(),
        data,
        AuthConfig {
            allow_anonymous: false,
            token_ttl: Duration::from_secs(3600),
            max_connections_per_user: 1,
        },
    )?;
    let now = crate::broker::now_ms();
    let res = match cmd {
        UserCmd::Add {
            name,
            admin,
            publish,
            subscribe,
            password_stdin,
        } => {
            if let Err((_, msg)) = auth::users_check_name(&name) {
                eprintln!("momd user: {msg}");
                return Ok(false);
            }
            let pw = password(password_stdin, &name)?;
            let hash = auth::hash_password(&pw).map_err(anyhow::Error::msg)?;
            auth.add_user(&name, hash, admin, &publish, &subscribe, now)
                .map(|u| {
                    let role = if u.admin { "admin" } else { "user" };
                    println!("added {role} {}", u.name);
                })
        }
        UserCmd::Rm { name } => auth.remove_user(&name).map(|()| println!("removed {name}")),
        UserCmd::Ls => {
            for u in auth.list_users() {
                let role = if u.admin { "admin" } else { "user" };
                println!(
                    "{}\t{role}\tpublish {}\tsubscribe {}",
                    u.name,
                    list(&u.publish),
                    list(&u.subscribe)
                );
            }
            Ok(())
        }
        UserCmd::Passwd {
            name,
            password_stdin,
        } => {
            if auth.user(&name).is_none() {
                eprintln!("momd user: no user {name:?}");
                return Ok(false);
            }
            let pw = password(password_stdin, &name)?;
            let hash = auth::hash_password(&pw).map_err(anyhow::Error::msg)?;
            auth.set_password(&name, hash)
                .map(|_| println!("password of {name} set"))
        }
    };
    store.flush().context("writing the users")?;
    match res {
        Ok(()) => Ok(true),
        Err((_, msg)) => {
            eprintln!("momd user: {msg}");
            Ok(false)
        }
    }
}

fn list(p: &[String]) -> String {
    if p.is_empty() {
        "-".into()
    } else {
        p.join(",")
    }
}
