//! `momctl context add|use|ls|rm|show`: connection settings saved under a name.

use momctl::profile::{self, Context};

use super::{CmdResult, Failure};
use crate::cli::ContextCmd;
use crate::output;

/// What `context add` saves: the global flags of this run.
pub struct Given {
    pub server: String,
    pub user: Option<String>,
    pub tls_ca: Option<std::path::PathBuf>,
    pub tls_insecure: bool,
    pub tls: bool,
}

fn fail(e: String) -> Failure {
    Failure::new(1, e)
}

pub fn run(cmd: ContextCmd, given: Given, json: bool) -> CmdResult {
    let mut all = profile::load_contexts().map_err(fail)?;
    match cmd {
        ContextCmd::Add { name, use_it } => {
            let tls_ca = match given.tls_ca {
                // A relative path would mean another file from another directory.
                Some(p) => Some(
                    std::fs::canonicalize(&p)
                        .map_err(|e| Failure::new(2, format!("--tls-ca {}: {e}", p.display())))?,
                ),
                None => None,
            };
            all.contexts.insert(
                name.clone(),
                Context {
                    server: given.server,
                    user: given.user,
                    tls_ca,
                    tls_insecure: given.tls_insecure,
                    tls: given.tls,
                },
            );
            if use_it {
                all.current = Some(name.clone());
            }
            profile::save_contexts(&all).map_err(fail)?;
            outln!("saved context {name}");
        }
        ContextCmd::Use { name } => {
            if !all.contexts.contains_key(&name) {
                return Err(Failure::new(6, format!("no context {name:?}")));
            }
            all.current = Some(name.clone());
            profile::save_contexts(&all).map_err(fail)?;
            outln!("using context {name}");
        }
        ContextCmd::Ls => {
            for (name, c) in &all.contexts {
                let current = all.current.as_deref() == Some(name.as_str());
                if json {
                    output::print_json(&serde_json::json!({
                        "name": name, "current": current, "server": c.server,
                        "user": c.user, "tls_ca": c.tls_ca, "tls_insecure": c.tls_insecure, "tls": c.tls,
                    }))?;
                } else {
                    let mark = if current { "*" } else { " " };
                    let user = c.user.as_deref().unwrap_or("-");
                    outln!("{mark} {name:<16} {:<24} {user}", c.server);
                }
            }
        }
        ContextCmd::Rm { name } => {
            if all.contexts.remove(&name).is_none() {
                return Err(Failure::new(6, format!("no context {name:?}")));
            }
            if all.current.as_deref() == Some(name.as_str()) {
                all.current = None;
            }
            profile::save_contexts(&all).map_err(fail)?;
            outln!("removed context {name}");
        }
        ContextCmd::Show { name } => {
            let Some(name) = name.or(all.current.clone()) else {
                return Err(Failure::new(
                    6,
                    "no current context (see `momctl context use`)",
                ));
            };
            let Some(c) = all.contexts.get(&name) else {
                return Err(Failure::new(6, format!("no context {name:?}")));
            };
            if json {
                output::print_json(c)?;
            } else {
                outln!("context:  {name}");
                outln!("server:   {}", c.server);
                outln!("user:     {}", c.user.as_deref().unwrap_or("-"));
                if let Some(ca) = &c.tls_ca {
                    outln!("tls ca:   {}", ca.display());
                }
                if c.tls {
                    outln!("tls:      with the system's CA certificates");
                }
                if c.tls_insecure {
                    outln!("tls:      insecure (the certificate is not checked)");
                }
            }
        }
    }
    Ok(())
}
