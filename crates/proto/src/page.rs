//! Paged listings: `topic_list`, `queue_list` and the sections of `stats` (docs/protocol.md
//! section 2.5). Items come in a stable order (topics and queues by name, clients by id), a
//! page at a time; a reply's `next` is the cursor the following request gives as `after`,
//! and no `next` means the listing is complete. The broker caps a page by `limit` and by
//! encoded bytes, so no listing can grow past the frame limit.

use serde::{Deserialize, Serialize};

use crate::message::ClientInfo;
use crate::queue::QueueInfo;
use crate::topic;
use crate::topic_admin::TopicInfo;

/// Items a page holds when the request names no `limit`.
pub const DEFAULT_PAGE_LIMIT: u32 = 1000;
/// Most items of one page; a larger `limit` is taken as this.
pub const MAX_PAGE_LIMIT: u32 = 10_000;
/// Most encoded bytes of the items of one page (one section of `stats`), whatever `limit`
/// says. A server with a small frame limit uses a quarter of it instead.
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// Which page of a listing to return. Every field is optional: an empty `Page` asks for
/// the first `DEFAULT_PAGE_LIMIT` items.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Page {
    /// Start after this cursor: the `next` of the previous page (for topics and queues the
    /// last name it held; for clients a client id in decimal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Most items wanted (at most `MAX_PAGE_LIMIT`); 0 asks for none of them, only the
    /// counts. Absent: `DEFAULT_PAGE_LIMIT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only names starting with these bytes (topics and queues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Only names this pattern matches (topics and queues; `*` and `>` as in a watch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

impl Page {
    /// The first page with these filters.
    pub fn first(limit: Option<u32>, prefix: Option<String>, pattern: Option<String>) -> Page {
        Page {
            after: None,
            limit,
            prefix,
            pattern,
        }
    }

    /// Items this page may hold: `limit`, or the default, at most `MAX_PAGE_LIMIT`.
    pub fn max_items(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_PAGE_LIMIT).min(MAX_PAGE_LIMIT) as usize
    }

    /// Check the filters; the error says what is wrong in the client's terms.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = &self.pattern {
            topic::validate_pattern(p).map_err(|e| format!("page pattern: {e}"))?;
        }
        Ok(())
    }

    /// Does a name pass the page's filters (prefix and pattern)?
    pub fn admits(&self, name: &str) -> bool {
        self.prefix.as_deref().is_none_or(|p| name.starts_with(p))
            && self
                .pattern
                .as_deref()
                .is_none_or(|p| topic::matches(p, name))
    }

    /// What every admitted name starts with: the longer of `prefix` and the pattern's
    /// literal lead (its tokens before the first wildcard). `None` when the two cannot both
    /// hold, so nothing is admitted. A server starts its ordered scan there and stops at the
    /// first name without it.
    pub fn lead(&self) -> Option<String> {
        let from_pattern = self
            .pattern
            .as_deref()
            .map(literal_lead)
            .unwrap_or_default();
        let prefix = self.prefix.as_deref().unwrap_or_default();
        if prefix.starts_with(&from_pattern) {
            Some(prefix.to_string())
        } else if from_pattern.starts_with(prefix) {
            Some(from_pattern)
        } else {
            None
        }
    }
}

/// The literal start of a pattern: its tokens before the first wildcard, with the dot that
/// follows them when a wildcard comes next (`a.b.*` → `a.b.`, `a.b` → `a.b`, `*.x` → ``).
pub fn literal_lead(pattern: &str) -> String {
    let mut lead = String::new();
    for tok in pattern.split('.') {
        if tok == "*" || tok == ">" {
            if !lead.is_empty() {
                lead.push('.');
            }
            return lead;
        }
        if !lead.is_empty() {
            lead.push('.');
        }
        lead.push_str(tok);
    }
    lead
}

/// A listing request: `topic_list` or `queue_list`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListReq {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

impl ListReq {
    pub fn new(id: u64, page: Page) -> ListReq {
        ListReq {
            id,
            after: page.after,
            limit: page.limit,
            prefix: page.prefix,
            pattern: page.pattern,
        }
    }

    pub fn page(&self) -> Page {
        Page {
            after: self.after.clone(),
            limit: self.limit,
            prefix: self.prefix.clone(),
            pattern: self.pattern.clone(),
        }
    }
}

/// The `stats` request: a summary, and one page of each section. A section left out gets
/// its first page (`DEFAULT_PAGE_LIMIT` items); `limit: 0` leaves it empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatsReq {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Page>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Page>,
    /// Clients, by client id; `prefix` and `pattern` are refused here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Page>,
}

impl StatsReq {
    /// Only the summary: every section empty.
    pub fn summary(id: u64) -> StatsReq {
        let none = Some(Page {
            limit: Some(0),
            ..Page::default()
        });
        StatsReq {
            id,
            topics: none.clone(),
            queues: none.clone(),
            clients: none,
        }
    }
}

/// The items of one listing and how to page through it, whatever their kind.
pub trait Listed {
    /// The cursor a page ending with this item gives as `next`.
    fn cursor(&self) -> String;
}

impl Listed for TopicInfo {
    fn cursor(&self) -> String {
        self.name.clone()
    }
}

impl Listed for QueueInfo {
    fn cursor(&self) -> String {
        self.name.clone()
    }
}

impl Listed for ClientInfo {
    fn cursor(&self) -> String {
        self.client_id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(prefix: Option<&str>, pattern: Option<&str>) -> Page {
        Page::first(None, prefix.map(Into::into), pattern.map(Into::into))
    }

    #[test]
    fn leads() {
        assert_eq!(literal_lead("a.b.*"), "a.b.");
        assert_eq!(literal_lead("a.>"), "a.");
        assert_eq!(literal_lead("a.b"), "a.b");
        assert_eq!(literal_lead("*.b"), "");
        assert_eq!(page(None, None).lead().as_deref(), Some(""));
        assert_eq!(page(Some("dev"), None).lead().as_deref(), Some("dev"));
        assert_eq!(page(None, Some("dev.*")).lead().as_deref(), Some("dev."));
        assert_eq!(
            page(Some("dev.d1"), Some("dev.*")).lead().as_deref(),
            Some("dev.d1")
        );
        assert_eq!(
            page(Some("d"), Some("dev.*")).lead().as_deref(),
            Some("dev.")
        );
        assert_eq!(page(Some("x"), Some("dev.*")).lead(), None);
    }

    #[test]
    fn admits_by_prefix_and_pattern() {
        let p = page(Some("devices.d1"), Some("devices.*.telemetry"));
        assert!(p.admits("devices.d12.telemetry"));
        assert!(!p.admits("devices.d2.telemetry"));
        assert!(!p.admits("devices.d12.status"));
        assert!(page(None, None).admits("$sys.events"));
        assert!(!page(None, Some(">")).admits("$sys.events"));
    }

    #[test]
    fn limits() {
        assert_eq!(Page::default().max_items(), DEFAULT_PAGE_LIMIT as usize);
        let big = Page {
            limit: Some(u32::MAX),
            ..Page::default()
        };
        assert_eq!(big.max_items(), MAX_PAGE_LIMIT as usize);
        assert!(page(None, Some("a.>.b")).validate().is_err());
        assert!(page(None, Some("a.*")).validate().is_ok());
    }
}
