//! The subcommands of users, tokens and contexts: `login`, `logout`, `whoami`, `user`,
//! `context`.

use std::time::Duration;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user (admins only). The password is asked for without echo, or read from
    /// stdin with --password-stdin, or taken from MOM_NEW_PASSWORD.
    #[command(
        after_help = "Examples:\n  momctl user add alice --publish 'orders.>' --subscribe 'orders.>' --subscribe '$inbox.>'\n  \
momctl user add ops --admin --password-stdin < ops.pw"
    )]
    Add {
        name: String,
        /// The user may do everything, users included.
        #[arg(long)]
        admin: bool,
        /// Topic pattern the user may publish to (repeatable).
        #[arg(long = "publish", value_name = "PATTERN")]
        publish: Vec<String>,
        /// Topic pattern the user may watch and consume (repeatable).
        #[arg(long = "subscribe", value_name = "PATTERN")]
        subscribe: Vec<String>,
        /// Read the new user's password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user (admins only); its connections end.
    Rm { name: String },
    /// List users (admins only), never their passwords.
    Ls,
    /// Show one user (itself, or any for an admin).
    Info { name: String },
    /// Set a user's password (itself, or any for an admin).
    Passwd {
        name: String,
        /// Read the new password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Allow a user more patterns (admins only).
    #[command(after_help = "Example:\n  momctl user grant alice --publish 'audit.*'")]
    Grant {
        name: String,
        #[arg(long = "publish", value_name = "PATTERN")]
        publish: Vec<String>,
        #[arg(long = "subscribe", value_name = "PATTERN")]
        subscribe: Vec<String>,
    },
    /// Take patterns away from a user (admins only).
    #[command(after_help = "Example:\n  momctl user revoke alice --publish 'audit.*'")]
    Revoke {
        name: String,
        #[arg(long = "publish", value_name = "PATTERN")]
        publish: Vec<String>,
        #[arg(long = "subscribe", value_name = "PATTERN")]
        subscribe: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ContextCmd {
    /// Save a context: a server (or a list of them), a user and TLS settings under a name.
    #[command(
        after_help = "Examples:\n  momctl context add prod -s broker:7878 --user alice --tls-ca ca.pem\n  momctl context add cluster -s node1:7878,node2:7878,node3:7878 --use"
    )]
    Add {
        name: String,
        /// Make it the current context too (used when no --context is given).
        #[arg(long = "use")]
        use_it: bool,
    },
    /// Make a context the current one (used when no --context is given).
    Use { name: String },
    /// List contexts; the current one is marked.
    Ls,
    /// Remove a context.
    Rm { name: String },
    /// Show a context (the current one by default).
    Show { name: Option<String> },
}

/// `momctl login` flags.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Read the password from the first line of stdin (else MOM_PASSWORD, else a prompt
    /// without echo).
    #[arg(long)]
    pub password_stdin: bool,
    /// Ask for a token valid this long (at most the server's --token-ttl).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
}
