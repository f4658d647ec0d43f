//! `momctl client ls`: the connections to the broker, by client id.

use mom_proto::{ClientInfo, Page};
use momctl::client::{Client, ConnectOptions};

use super::listing::{print_pages, Table, Widths};
use super::CmdResult;
use crate::cli::ClientCmd;
use crate::output::human_time;

pub async fn run(opts: &ConnectOptions, cmd: ClientCmd, json: bool) -> CmdResult {
    let client = Client::connect(opts).await?;
    match cmd {
        ClientCmd::Ls { limit } => {
            let limit = limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
            print_pages(&client, Page::default(), limit, |_: &ClientInfo| true, json).await
        }
    }
}

impl Table for ClientInfo {
    const NAMES: (&'static str, &'static str) = ("client", "clients");

    /// The name and user columns, as wide as their longest entry (names are as long as
    /// their commands, `momctl recv jobs`).
    fn widths(rows: &[Self]) -> Widths {
        let w = |f: fn(&ClientInfo) -> &str| {
            rows.iter()
                .map(|c| f(c).chars().count())
                .max()
                .unwrap_or(4)
                .max(4)
        };
        Widths([w(|c| &c.name), w(|c| &c.user)])
    }

    fn header(w: Widths) -> CmdResult {
        let [nw, uw] = w.0;
        outln!(
            "{:>6}  {:<nw$}  {:<uw$}  {:<21}  {:<20}  {:>10}  {:>10}",
            "CLIENT",
            "NAME",
            "USER",
            "ADDRESS",
            "SINCE",
            "IN",
            "OUT"
        );
        Ok(())
    }

    fn row(&self, w: Widths) -> CmdResult {
        let [nw, uw] = w.0;
        outln!(
            "{:>6}  {:<nw$}  {:<uw$}  {:<21}  {:<20}  {:>10}  {:>10}",
            self.client_id,
            self.name,
            self.user,
            self.addr,
            human_time(self.since),
            self.msgs_in,
            self.msgs_out
        );
        Ok(())
    }
}
