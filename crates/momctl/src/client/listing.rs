//! Paged listings (docs/protocol.md section 2.5): topics, queues and clients a page at a
//! time, a [`Pager`] that follows the pages, and `stats` with its sections followed.

use std::future::Future;
use std::marker::PhantomData;

use mom_proto::{
    ClientFrame, ClientInfo, ListReq, Listed, Page, QueueInfo, QueueList, ServerFrame, Stats,
    StatsReq, TopicInfo, TopicList, MAX_PAGE_LIMIT,
};

use super::{unexpected, Client, Result};

/// One page as the broker answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct PageOf<T> {
    pub items: Vec<T>,
    /// The next page's cursor; `None` when the listing is complete.
    pub next: Option<String>,
    /// How many the broker holds in all, whatever the filters.
    pub total: u64,
}

/// What can be listed a page at a time.
pub trait Section: Listed + Sized + Send + 'static {
    /// Ask the broker for one page.
    fn fetch(client: &Client, page: Page) -> impl Future<Output = Result<PageOf<Self>>> + Send;
}

impl Section for TopicInfo {
    fn fetch(client: &Client, page: Page) -> impl Future<Output = Result<PageOf<Self>>> + Send {
        client.topic_page(page)
    }
}

impl Section for QueueInfo {
    fn fetch(client: &Client, page: Page) -> impl Future<Output = Result<PageOf<Self>>> + Send {
        client.queue_page(page)
    }
}

impl Section for ClientInfo {
    fn fetch(client: &Client, page: Page) -> impl Future<Output = Result<PageOf<Self>>> + Send {
        client.client_page(page)
    }
}

/// Follows the pages of a listing: each call to [`Pager::next_page`] asks for one, until
/// the broker says the listing is complete or `max` items were taken.
#[derive(Debug, Clone)]
pub struct Pager<T> {
    page: Page,
    left: usize,
    done: bool,
    more: bool,
    total: u64,
    _items: PhantomData<fn() -> T>,
}

impl<T: Section> Pager<T> {
    /// Page through what `page` asks for (its `after` and filters), at most `max` items
    /// (all with `None`).
    pub fn new(page: Page, max: Option<usize>) -> Pager<T> {
        Pager {
            page,
            left: max.unwrap_or(usize::MAX),
            done: max == Some(0),
            more: false,
            total: 0,
            _items: PhantomData,
        }
    }

    /// The next page's items that `keep` admits, or `None` once the listing is done. A page
    /// may be empty while more follow.
    pub async fn next_page(
        &mut self,
        client: &Client,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Option<Vec<T>>> {
        if self.done {
            return Ok(None);
        }
        let mut page = self.page.clone();
        // Big pages, few round trips: the broker caps a page by bytes anyway.
        page.limit = Some(self.left.min(MAX_PAGE_LIMIT as usize) as u32);
        let got = T::fetch(client, page).await?;
        self.total = got.total;
        let mut items: Vec<T> = got.items.into_iter().filter(|t| keep(t)).collect();
        if items.len() > self.left {
            // More than asked for: stop after what was wanted, and go on from there.
            items.truncate(self.left);
            self.left = 0;
            self.page.after = items.last().map(Listed::cursor);
            self.done = true;
            self.more = true;
            return Ok(Some(items));
        }
        self.left -= items.len();
        match got.next {
            None => self.done = true,
            Some(next) => {
                self.page.after = Some(next);
                if self.left == 0 {
                    self.done = true;
                    self.more = true;
                }
            }
        }
        Ok(Some(items))
    }

    /// Every remaining item `keep` admits, as one list.
    pub async fn collect(&mut self, client: &Client, keep: impl Fn(&T) -> bool) -> Result<Vec<T>> {
        let mut all = Vec::new();
        while let Some(items) = self.next_page(client, &keep).await? {
            all.extend(items);
        }
        Ok(all)
    }

    /// Items were left because `max` was reached (what `--limit` stopped).
    pub fn more(&self) -> bool {
        self.more
    }

    /// Where the pages stopped when `max` was reached: the cursor to go on from.
    pub fn cursor(&self) -> Option<&str> {
        self.more.then_some(self.page.after.as_deref()).flatten()
    }

    /// How many the broker holds in all, as of the last page.
    pub fn total(&self) -> u64 {
        self.total
    }
}

impl Client {
    /// One page of topics.
    pub async fn topic_page(&self, page: Page) -> Result<PageOf<TopicInfo>> {
        match self
            .request(|id| ClientFrame::TopicList(ListReq::new(id, page)))
            .await?
        {
            ServerFrame::TopicList(TopicList {
                topics,
                next,
                total,
                ..
            }) => Ok(PageOf {
                items: topics,
                next,
                total,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// One page of queues.
    pub async fn queue_page(&self, page: Page) -> Result<PageOf<QueueInfo>> {
        match self
            .request(|id| ClientFrame::QueueList(ListReq::new(id, page)))
            .await?
        {
            ServerFrame::QueueList(QueueList {
                queues,
                next,
                total,
                ..
            }) => Ok(PageOf {
                items: queues,
                next,
                total,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// One page of connections (the clients section of `stats`, nothing else asked).
    pub async fn client_page(&self, page: Page) -> Result<PageOf<ClientInfo>> {
        let mut req = StatsReq::summary(0);
        req.clients = Some(page);
        let s = self.stats_page(req).await?;
        Ok(PageOf {
            items: s.clients,
            next: s.clients_next,
            total: s.totals.connections,
        })
    }

    /// `stats` as asked: the summary and one page of each section (`req.id` is set here).
    pub async fn stats_page(&self, mut req: StatsReq) -> Result<Stats> {
        match self
            .request(|id| {
                req.id = id;
                ClientFrame::Stats(req)
            })
            .await?
        {
            ServerFrame::Stats(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Every topic, all pages followed.
    pub async fn topic_list(&self) -> Result<Vec<TopicInfo>> {
        Pager::new(Page::default(), None)
            .collect(self, |_| true)
            .await
    }

    /// Every queue, all pages followed.
    pub async fn queue_list(&self) -> Result<Vec<QueueInfo>> {
        Pager::new(Page::default(), None)
            .collect(self, |_| true)
            .await
    }

    /// The summary and every topic, queue and client, all pages followed.
    pub async fn stats(&self) -> Result<Stats> {
        self.stats_limited(None).await
    }

    /// The summary and at most `max` items of each section. A section cut short keeps its
    /// cursor in `topics_next` / `queues_next` / `clients_next`.
    pub async fn stats_limited(&self, max: Option<usize>) -> Result<Stats> {
        let all = Page::default();
        self.stats_sections([all.clone(), all.clone(), all], max)
            .await
    }

    /// The summary and, for each section (topics, queues, clients), what its page asks for
    /// (a cursor, filters), at most `max` items (all with `None`): one `stats` request,
    /// then the following pages of a section only when the broker cut it short (its byte
    /// cap). Each `*_next` is where the section goes on after the items taken.
    pub async fn stats_sections(&self, pages: [Page; 3], max: Option<usize>) -> Result<Stats> {
        let first = |p: &Page| Page {
            limit: Some(max.unwrap_or(usize::MAX).min(MAX_PAGE_LIMIT as usize) as u32),
            ..p.clone()
        };
        let [topics, queues, clients] = pages;
        let mut s = self
            .stats_page(StatsReq {
                id: 0,
                topics: Some(first(&topics)),
                queues: Some(first(&queues)),
                clients: Some(first(&clients)),
            })
            .await?;
        s.topics_next = self
            .follow(&mut s.topics, s.topics_next.take(), topics, max)
            .await?;
        s.queues_next = self
            .follow(&mut s.queues, s.queues_next.take(), queues, max)
            .await?;
        s.clients_next = self
            .follow(&mut s.clients, s.clients_next.take(), clients, max)
            .await?;
        Ok(s)
    }

    /// Take the pages after `next` until `rows` holds `max` items or the listing ends;
    /// returns the cursor after what was taken (none when the listing ended).
    async fn follow<T: Section>(
        &self,
        rows: &mut Vec<T>,
        next: Option<String>,
        page: Page,
        max: Option<usize>,
    ) -> Result<Option<String>> {
        let Some(after) = next else {
            return Ok(None);
        };
        let left = max.map(|m| m.saturating_sub(rows.len()));
        if left == Some(0) {
            return Ok(Some(after));
        }
        let page = Page {
            after: Some(after),
            ..page
        };
        let mut pager = Pager::<T>::new(page, left);
        rows.extend(pager.collect(self, |_| true).await?);
        Ok(pager.cursor().map(str::to_string))
    }
}
