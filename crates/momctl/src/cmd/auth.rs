//! `momctl login`, `logout`, `whoami` and `user …`: tokens and users. No secret needs the
//! command line: passwords come from a prompt without echo, from stdin, or from the
//! environment.

use std::io::BufRead;

use mom_proto::UserInfo;
use momctl::client::{Client, ConnectOptions, Grants};
use momctl::profile::{self, SavedToken};

use super::{CmdResult, Failure};
use crate::cli::{LoginArgs, UserCmd};
use crate::output::{self, human_time};

fn first_stdin_line() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// A password: stdin's first line, else `env`, else a prompt without echo (twice for a new
/// one).
fn password(from_stdin: bool, env: &str, prompt: &str, confirm: bool) -> Result<String, Failure> {
    let pw = if from_stdin {
        first_stdin_line()?
    } else if let Some(p) = std::env::var(env).ok().filter(|p| !p.is_empty()) {
        p
    } else {
        let first = rpassword::prompt_password(prompt).map_err(|_| {
            Failure::new(
                2,
                format!("no terminal to ask for the password: use --password-stdin or {env}"),
            )
        })?;
        if confirm {
            let again = rpassword::prompt_password("again: ")?;
            if again != first {
                return Err(Failure::new(2, "the two passwords differ"));
            }
        }
        first
    };
    if pw.is_empty() {
        return Err(Failure::new(2, "an empty password"));
    }
    Ok(pw)
}

pub async fn login(opts: &ConnectOptions, a: LoginArgs, json: bool, now_ms: u64) -> CmdResult {
    let Some(user) = opts.user.clone() else {
        return Err(Failure::new(
            2,
            "login needs a user: --user NAME or MOM_USER",
        ));
    };
    let mut opts = opts.clone();
    opts.token = None;
    opts.password = Some(match opts.password.take() {
        Some(p) if !a.password_stdin => p,
        _ => password(
            a.password_stdin,
            "MOM_PASSWORD",
            &format!("password for {user}: "),
            false,
        )?,
    });
    let client = Client::connect(&opts).await?;
    let ttl = a.ttl.map_or(0, |d| d.as_millis() as u64);
    let t = client.token_create(ttl).await?;
    let mut tokens = profile::load_tokens().map_err(|e| Failure::new(1, e))?;
    let server = tokens.entry(opts.server_list()).or_default();
    server.last = t.user.clone();
    server.users.insert(
        t.user.clone(),
        SavedToken {
            user: t.user.clone(),
            token: t.token,
            expires: t.expires,
        },
    );
    profile::save_tokens(&tokens).map_err(|e| Failure::new(1, e))?;
    if json {
        output::print_json(&serde_json::json!({
            "server": opts.server_list(), "user": t.user, "expires": t.expires
        }))?;
    } else {
        outln!(
            "logged in to {} as {}; token saved, valid until {} ({} from now)",
            opts.server_list(),
            t.user,
            human_time(t.expires),
            humantime::format_duration(std::time::Duration::from_secs(
                t.expires.saturating_sub(now_ms) / 1000
            ))
        );
    }
    Ok(())
}

pub async fn logout(opts: &ConnectOptions, now_ms: u64) -> CmdResult {
    let mut tokens = profile::load_tokens().map_err(|e| Failure::new(1, e))?;
    let Some(saved) = tokens
        .get(&opts.server_list())
        .and_then(|t| t.pick(opts.user.as_deref()))
        .cloned()
    else {
        return Err(Failure::new(
            1,
            format!("not logged in to {}", opts.server_list()),
        ));
    };
    // An expired token needs no revoking: the server refuses it anyway.
    if saved.expires > now_ms {
        let mut o = opts.clone();
        o.user = Some(saved.user.clone());
        o.password = None;
        o.token = Some(saved.token.clone());
        let client = Client::connect(&o).await?;
        client.token_revoke(None).await?;
    }
    if let Some(server) = tokens.get_mut(&opts.server_list()) {
        server.users.remove(&saved.user);
        if server.last == saved.user {
            server.last = server.users.keys().next().cloned().unwrap_or_default();
        }
        if server.users.is_empty() {
            tokens.remove(&opts.server_list());
        }
    }
    profile::save_tokens(&tokens).map_err(|e| Failure::new(1, e))?;
    outln!(
        "logged out of {} (user {}); the token is revoked",
        opts.server_list(),
        saved.user
    );
    Ok(())
}

pub async fn whoami(opts: &ConnectOptions, json: bool) -> CmdResult {
    let client = Client::connect(opts).await?;
    let w = client.welcome();
    let saved = profile::load_tokens()
        .ok()
        .and_then(|t| {
            t.get(&opts.server_list())?
                .pick(opts.user.as_deref())
                .cloned()
        })
        .filter(|s| opts.token.as_deref() == Some(s.token.as_str()));
    if json {
        output::print_json(&serde_json::json!({
            "server": client.server(), "server_id": w.server_id, "user": w.user,
            "client_id": w.client_id, "token_expires": saved.as_ref().map(|s| s.expires),
        }))?;
        return Ok(());
    }
    outln!(
        "{} at {} (server id {})",
        w.user,
        client.server(),
        w.server_id
    );
    match (saved, &opts.token, &opts.password) {
        (Some(s), _, _) => outln!(
            "with the saved token, valid until {}",
            human_time(s.expires)
        ),
        (None, Some(_), _) => outln!("with the token given"),
        (None, None, Some(_)) => outln!("with a password"),
        (None, None, None) => outln!("without credentials (a server without users)"),
    }
    Ok(())
}

fn print_user(u: &UserInfo, json: bool) -> CmdResult {
    if json {
        return Ok(output::print_json(u)?);
    }
    let list = |p: &[String]| {
        if p.is_empty() {
            "-".to_string()
        } else {
            p.join(" ")
        }
    };
    let role = if u.admin { "admin" } else { "user" };
    outln!(
        "{:<16} {:<5}  publish: {}  subscribe: {}",
        u.name,
        role,
        list(&u.publish),
        list(&u.subscribe)
    );
    Ok(())
}

pub async fn user(opts: &ConnectOptions, cmd: UserCmd, json: bool) -> CmdResult {
    let client = Client::connect(opts).await?;
    match cmd {
        UserCmd::Add {
            name,
            admin,
            publish,
            subscribe,
            password_stdin,
        } => {
            let pw = password(
                password_stdin,
                "MOM_NEW_PASSWORD",
                &format!("password for the new user {name}: "),
                true,
            )?;
            let u = client
                .user_add(&name, &pw, admin, Grants { publish, subscribe })
                .await?;
            print_user(&u, json)
        }
        UserCmd::Rm { name } => {
            client.user_rm(&name).await?;
            if !json {
                outln!("removed user {name}");
            }
            Ok(())
        }
        UserCmd::Ls => {
            for u in client.user_list().await? {
                print_user(&u, json)?;
            }
            Ok(())
        }
        UserCmd::Info { name } => print_user(&client.user_info(&name).await?, json),
        UserCmd::Passwd {
            name,
            password_stdin,
        } => {
            let pw = password(
                password_stdin,
                "MOM_NEW_PASSWORD",
                &format!("new password for {name}: "),
                true,
            )?;
            client.user_passwd(&name, &pw).await?;
            if !json {
                outln!("password of {name} set");
            }
            Ok(())
        }
        UserCmd::Grant {
            name,
            publish,
            subscribe,
        } => print_user(
            &client
                .user_grants(&name, true, Grants { publish, subscribe })
                .await?,
            json,
        ),
        UserCmd::Revoke {
            name,
            publish,
            subscribe,
        } => print_user(
            &client
                .user_grants(&name, false, Grants { publish, subscribe })
                .await?,
            json,
        ),
    }
}
