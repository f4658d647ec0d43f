//! Paged listings (docs/protocol.md section 2.5): one page of topics or queues (by name) or
//! of clients (by client id), for `topic_list`, `queue_list` and the sections of `stats`.
//! A page is walked from its cursor in the order the broker keeps anyway (the topic and
//! queue name maps are B-trees), so it costs the page, not the number of topics; it ends at
//! `limit` items, at the byte budget (so no reply nears the frame limit), or after
//! `MAX_SCANNED` names a filter passed over.

use std::collections::HashMap;
use std::ops::Bound;

use mom_proto::{
    encoded_len, ClientInfo, ErrorCode, ListReq, Listed, Page, QueueInfo, QueueList, ServerFrame,
    TopicInfo, TopicList, MAX_PAGE_BYTES,
};
use serde::Serialize;

use super::Broker;

/// Names one page may pass over for its filters before it answers, short (or empty) but
/// with `next`: a pattern that matches few of a million topics cannot hold the broker task
/// for the whole scan in one request.
const MAX_SCANNED: usize = 100_000;

/// One page: its items in order and the cursor of the next (none when the listing is done).
#[derive(Debug)]
pub(super) struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Paged<T> {
    fn empty() -> Paged<T> {
        Paged {
            items: Vec::new(),
            next: None,
        }
    }
}

/// Take a page from `entries` (name, source), which start at the page's cursor in order.
/// Every admitted name starts with `lead`, so the walk stops at the first that does not.
/// `next` is set only when an admitted item was left for the next page, or when the scan
/// stopped early: a page without `next` is the last.
fn take_page<N: AsRef<str>, S, T: Serialize + Listed>(
    entries: impl Iterator<Item = (N, S)>,
    page: &Page,
    lead: &str,
    budget: usize,
    mut build: impl FnMut(S) -> T,
) -> Paged<T> {
    let max = page.max_items();
    let mut out = Paged::empty();
    if max == 0 {
        return out;
    }
    let mut bytes = 0usize;
    let mut last_scanned: Option<String> = None;
    for (scanned, (name, source)) in entries.enumerate() {
        let name = name.as_ref();
        if !name.starts_with(lead) {
            break;
        }
        if scanned >= MAX_SCANNED {
            out.next = last_scanned;
            return out;
        }
        if !page.admits(name) {
            last_scanned = Some(name.to_string());
            continue;
        }
        if out.items.len() >= max {
            out.next = out.items.last().map(Listed::cursor);
            return out;
        }
        let item = build(source);
        let size = encoded_len(&item);
        // At least one item per page, so a listing always moves on; an item is capped
        // (`cap_strings`) well below a page, so even a lone one fits a frame.
        if !out.items.is_empty() && bytes.saturating_add(size) > budget {
            out.next = out.items.last().map(Listed::cursor);
            return out;
        }
        bytes = bytes.saturating_add(size);
        out.items.push(item);
        last_scanned = Some(name.to_string());
    }
    out
}

/// Keep the first strings of `v` that fit in `share` bytes (as encoded, about); returns how
/// many were left out.
fn cap_strings(v: &mut Vec<String>, share: usize) -> u64 {
    let mut used = 0usize;
    let keep = v
        .iter()
        .take_while(|s| {
            used = used.saturating_add(s.len() + 5);
            used <= share
        })
        .count();
    let omitted = v.len() - keep;
    v.truncate(keep);
    omitted as u64
}

/// Where a name-ordered walk starts: after the cursor, or at the lead if the cursor is
/// before it (every admitted name starts with the lead).
fn start<'a>(after: Option<&'a str>, lead: &'a str) -> Bound<&'a str> {
    match after {
        Some(a) if a >= lead => Bound::Excluded(a),
        _ => Bound::Included(lead),
    }
}

impl Broker {
    /// Bytes of items one page (one section of `stats`) may hold: 1 MiB, or a quarter of
    /// the frame limit if that is smaller, so the three sections of `stats` and its summary
    /// fit in one frame.
    pub(super) fn page_budget(&self) -> usize {
        MAX_PAGE_BYTES.min(self.cfg.max_frame / 4)
    }

    /// Bytes one item's lists (a client's watch patterns, a queue's bindings) may take.
    fn item_share(&self) -> usize {
        self.page_budget() / 4
    }

    pub(super) fn topic_page(&self, page: &Page) -> Result<Paged<TopicInfo>, String> {
        page.validate()?;
        let Some(lead) = page.lead() else {
            return Ok(Paged::empty());
        };
        let entries = self
            .core
            .topics
            .range_from(start(page.after.as_deref(), &lead))
            .map(|t| (&*t.name, t));
        // How many queues hold each topic: an index lookup per topic shown.
        Ok(take_page(entries, page, &lead, self.page_budget(), |t| {
            self.topic_info_with(t, self.queues_bound(t.id))
        }))
    }

    pub(super) fn queue_page(&self, page: &Page) -> Result<Paged<QueueInfo>, String> {
        page.validate()?;
        let Some(lead) = page.lead() else {
            return Ok(Paged::empty());
        };
        let share = self.item_share();
        let entries = self
            .queues
            .range_from(start(page.after.as_deref(), &lead))
            .map(|(name, q)| (name.as_str(), q));
        Ok(take_page(entries, page, &lead, self.page_budget(), |q| {
            let mut info = self.queue_info(q);
            info.omitted = cap_strings(&mut info.bindings, share);
            info
        }))
    }

    pub(super) fn client_page(&self, page: &Page) -> Result<Paged<ClientInfo>, String> {
        if page.prefix.is_some() || page.pattern.is_some() {
            return Err(
                "clients are listed by client id: prefix and pattern are for topics and queues"
                    .into(),
            );
        }
        let after = match page.after.as_deref() {
            None => None,
            Some(a) => Some(a.parse::<u64>().map_err(|_| {
                format!("clients' after must be a client id (a number), not {a:?}")
            })?),
        };
        // The page's clients: the smallest ids after the cursor (one more than a page, to
        // know whether another page follows), without sorting every connection.
        let mut ids: Vec<(u64, u64)> = self
            .sessions
            .iter()
            .map(|(session, s)| (s.client.client_id, *session))
            .filter(|(id, _)| after.is_none_or(|a| *id > a))
            .collect();
        let want = page.max_items().saturating_add(1);
        if ids.len() > want {
            ids.select_nth_unstable(want - 1);
            ids.truncate(want);
        }
        ids.sort_unstable();
        let consumers = self.consumers_by_session();
        let share = self.item_share();
        let entries = ids
            .into_iter()
            .map(|(id, session)| (id.to_string(), session));
        Ok(take_page(
            entries,
            page,
            "",
            self.page_budget(),
            |session| self.client_info(session, &consumers, share),
        ))
    }

    /// Each session's consumers (by consumer id) and waiting pulls, as `ClientInfo` names
    /// them: one pass over consumers for a whole page of clients.
    fn consumers_by_session(&self) -> HashMap<u64, Vec<String>> {
        let mut by: HashMap<u64, Vec<(u64, String)>> = HashMap::new();
        for (id, k) in &self.consumers {
            by.entry(k.session)
                .or_default()
                .push((*id, k.queue.clone()));
        }
        let mut out: HashMap<u64, Vec<String>> = by
            .into_iter()
            .map(|(session, mut v)| {
                v.sort_unstable();
                (session, v.into_iter().map(|(_, q)| q).collect())
            })
            .collect();
        for f in &self.fetches {
            out.entry(f.session)
                .or_default()
                .push(format!("{} (pull)", f.queue));
        }
        out
    }

    fn client_info(
        &self,
        session: u64,
        consumers: &HashMap<u64, Vec<String>>,
        share: usize,
    ) -> ClientInfo {
        let Some(s) = self.sessions.get(&session) else {
            return ClientInfo::default();
        };
        let mut c = s.client.clone();
        c.consumers = consumers.get(&session).cloned().unwrap_or_default();
        let counters = &s.outbox.counters;
        c.msgs_in = counters.msgs_in.load(std::sync::atomic::Ordering::Relaxed);
        c.msgs_out = counters.msgs_out.load(std::sync::atomic::Ordering::Relaxed);
        c.watches = s.watches.len() as u64;
        c.watch_patterns = s
            .watches
            .iter()
            .filter_map(|w| self.core.watches.get(*w))
            .map(|ps| ps.join(" "))
            .collect();
        c.omitted =
            cap_strings(&mut c.watch_patterns, share) + cap_strings(&mut c.consumers, share);
        c
    }

    /// `topic_list`: one page of topics.
    pub(super) fn topic_list(&self, session: u64, r: ListReq) {
        match self.topic_page(&r.page()) {
            Ok(p) => self.reply(
                session,
                ServerFrame::TopicList(TopicList {
                    id: r.id,
                    topics: p.items,
                    next: p.next,
                    total: self.core.topics.len() as u64,
                }),
            ),
            Err(e) => self.error(session, r.id, ErrorCode::BadRequest, e),
        }
    }

    /// `queue_list`: one page of queues. In cluster mode the others are asked how many
    /// consumers they have on the page's queues (consumers belong to their nodes).
    pub(super) fn queue_list(&self, session: u64, r: ListReq) {
        let p = match self.queue_page(&r.page()) {
            Ok(p) => p,
            Err(e) => return self.error(session, r.id, ErrorCode::BadRequest, e),
        };
        let mut list = QueueList {
            id: r.id,
            queues: p.items,
            next: p.next,
            total: self.queues.len() as u64,
        };
        let outbox = self.sessions.get(&session).map(|s| s.outbox.clone());
        match (self.cluster.clone(), outbox) {
            (Some(c), Some(outbox)) if !list.queues.is_empty() => {
                tokio::spawn(async move {
                    let names = list.queues.iter().map(|q| q.name.clone()).collect();
                    let elsewhere = c.consumers_elsewhere(names).await;
                    for (q, n) in list.queues.iter_mut().zip(elsewhere) {
                        q.consumers += n;
                    }
                    outbox.reply(ServerFrame::QueueList(list), true);
                });
            }
            _ => self.reply(session, ServerFrame::QueueList(list)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicInfo {
        TopicInfo {
            name: name.into(),
            ..TopicInfo::default()
        }
    }

    fn names(p: &Paged<TopicInfo>) -> Vec<&str> {
        p.items.iter().map(|t| t.name.as_str()).collect()
    }

    fn run(all: &[&str], page: &Page, budget: usize) -> Paged<TopicInfo> {
        let lead = page.lead().unwrap_or_default();
        let from = start(page.after.as_deref(), &lead);
        let entries = all
            .iter()
            .filter(|n| match from {
                Bound::Excluded(a) => **n > a,
                Bound::Included(a) => **n >= a,
                Bound::Unbounded => true,
            })
            .map(|n| (*n, *n));
        take_page(entries, page, &lead, budget, topic)
    }

    const ALL: &[&str] = &["a", "a.x", "a.y", "b.x", "b.y", "c"];

    #[test]
    fn pages_follow_each_other_and_the_last_has_no_next() {
        let mut page = Page {
            limit: Some(2),
            ..Page::default()
        };
        let mut seen = Vec::new();
        loop {
            let p = run(ALL, &page, usize::MAX);
            seen.extend(names(&p).iter().map(|s| s.to_string()));
            match p.next {
                Some(n) => page.after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ALL);
        // Exactly a page's worth left: the page that takes it says there is no more.
        page.after = Some("b.x".into());
        let p = run(ALL, &page, usize::MAX);
        assert_eq!((names(&p), p.next.as_deref()), (vec!["b.y", "c"], None));
    }

    #[test]
    fn a_pattern_walks_only_its_lead_and_a_limit_of_zero_lists_nothing() {
        let page = Page::first(None, None, Some("a.*".into()));
        let p = run(ALL, &page, usize::MAX);
        assert_eq!((names(&p), p.next.as_deref()), (vec!["a.x", "a.y"], None));
        let page = Page::first(Some(0), None, None);
        let p = run(ALL, &page, usize::MAX);
        assert!(p.items.is_empty() && p.next.is_none());
    }

    #[test]
    fn the_byte_budget_ends_a_page_but_never_before_its_first_item() {
        let p = run(ALL, &Page::default(), 1);
        assert_eq!((names(&p), p.next.as_deref()), (vec!["a"], Some("a")));
        let one = encoded_len(&topic("a.x"));
        let p = run(ALL, &Page::default(), 3 * one);
        assert_eq!(p.items.len(), 3);
        assert_eq!(p.next.as_deref(), Some("a.y"));
    }

    #[test]
    fn a_long_scan_answers_early_with_a_cursor() {
        let many: Vec<String> = (0..MAX_SCANNED + 10).map(|i| format!("t{i:07}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        // Nothing matches: the page stops after MAX_SCANNED names, empty, with a cursor.
        let page = Page::first(None, Some("u".into()), None);
        let entries = refs.iter().map(|n| (*n, *n));
        let p = take_page(entries, &page, "", usize::MAX, topic);
        assert!(p.items.is_empty());
        assert_eq!(p.next.as_deref(), Some(refs[MAX_SCANNED - 1]));
    }

    #[test]
    fn capped_lists_say_how_much_they_left_out() {
        let mut v: Vec<String> = (0..10).map(|i| format!("pattern.{i}")).collect();
        assert_eq!(cap_strings(&mut v, 3 * 14), 7);
        assert_eq!(v.len(), 3);
        let mut v = vec!["x".to_string()];
        assert_eq!(cap_strings(&mut v, 100), 0);
    }
}
