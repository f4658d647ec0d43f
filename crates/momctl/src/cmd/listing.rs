//! Listings printed as they come, a page at a time (`topic ls`, `queue ls`, `client ls`):
//! one JSON object per line with `--json`, else a table. Memory stays one page, however
//! many topics the broker holds.

use mom_proto::Page;
use momctl::client::{Client, Pager, Section};
use serde::Serialize;

use super::CmdResult;
use crate::output;

/// Widths of a table's text columns (those sized to their content), in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Widths(pub [usize; 2]);

impl Widths {
    /// Wide enough for both.
    fn max(self, o: Widths) -> Widths {
        Widths([self.0[0].max(o.0[0]), self.0[1].max(o.0[1])])
    }
}

/// A kind of item printed as a table row.
pub trait Table: Section + Serialize {
    /// What one and several of them are called on stderr.
    const NAMES: (&'static str, &'static str);
    /// Widths of the text columns for these rows (at least their headings').
    fn widths(rows: &[Self]) -> Widths;
    fn header(w: Widths) -> CmdResult;
    fn row(&self, w: Widths) -> CmdResult;
}

/// A whole table of rows already fetched.
pub fn print_table<T: Table>(rows: &[T]) -> CmdResult {
    let w = T::widths(rows);
    T::header(w)?;
    for r in rows {
        r.row(w)?;
    }
    Ok(())
}

/// Print what `page` asks for, following pages until the listing is complete or `limit`
/// rows that `keep` admits were printed; says on stderr when the limit left some out. The
/// table's text columns are as wide as the widest entry seen so far.
pub async fn print_pages<T: Table>(
    client: &Client,
    page: Page,
    limit: Option<usize>,
    keep: impl Fn(&T) -> bool,
    json: bool,
) -> CmdResult {
    let mut pager = Pager::<T>::new(page, limit);
    let mut width: Option<Widths> = None;
    let mut shown = 0usize;
    while let Some(rows) = pager.next_page(client, &keep).await? {
        shown += rows.len();
        if json {
            for r in &rows {
                output::print_json(r)?;
            }
            continue;
        }
        if rows.is_empty() {
            continue;
        }
        let w = width.unwrap_or_default().max(T::widths(&rows));
        if width.is_none() {
            T::header(w)?;
        }
        width = Some(w);
        for r in &rows {
            r.row(w)?;
        }
    }
    if !json && width.is_none() {
        T::header(T::widths(&[]))?;
    }
    if pager.more() {
        let (one, many) = T::NAMES;
        eprintln!(
            "momctl: showing the first {shown} {}; more exist (a larger --limit shows more, \
             none shows all)",
            if shown == 1 { one } else { many }
        );
    }
    Ok(())
}
