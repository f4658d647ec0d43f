//! Topic names and patterns (DESIGN.md, Concepts): dot-separated tokens, `*` for exactly one
//! token, a final `>` for one or more.

/// Longest topic name or pattern, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name is {0} bytes long; the limit is 255")]
    TooLong(usize),
    #[error("topic name {0:?} has an empty token (two dots, or a dot at an end)")]
    EmptyToken(String),
    #[error("topic name {0:?} contains whitespace or a control character")]
    Whitespace(String),
    #[error("topic name {0:?} contains a wildcard ('*' or '>'); wildcards belong in patterns")]
    Wildcard(String),
    #[error("pattern {0:?}: '*' and '>' must be whole tokens, and '>' only the last one")]
    BadWildcard(String),
    #[error("topic {0:?} is reserved for the broker (names starting with '$')")]
    Reserved(String),
}

fn check_common(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(NameError::Whitespace(name.to_string()));
    }
    if name.split('.').any(str::is_empty) {
        return Err(NameError::EmptyToken(name.to_string()));
    }
    Ok(())
}

/// Validate a concrete topic name (any topic, reserved ones included).
pub fn validate_topic(name: &str) -> Result<(), NameError> {
    check_common(name)?;
    if name.contains(['*', '>']) {
        return Err(NameError::Wildcard(name.to_string()));
    }
    Ok(())
}

/// Validate a topic name a client may publish to: not reserved.
pub fn validate_publish_topic(name: &str) -> Result<(), NameError> {
    validate_topic(name)?;
    if name.starts_with('$') {
        return Err(NameError::Reserved(name.to_string()));
    }
    Ok(())
}

/// Validate a pattern.
pub fn validate_pattern(pattern: &str) -> Result<(), NameError> {
    check_common(pattern)?;
    let mut tokens = pattern.split('.').peekable();
    while let Some(tok) = tokens.next() {
        let last = tokens.peek().is_none();
        let bad = match tok {
            "*" => false,
            ">" => !last,
            t => t.contains(['*', '>']),
        };
        if bad {
            return Err(NameError::BadWildcard(pattern.to_string()));
        }
    }
    Ok(())
}

/// Does `pattern` (assumed valid) match the topic `topic`? A pattern whose first token is a
/// wildcard does not match reserved topics (`$sys.…`): those must be named explicitly.
pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut pt = pattern.split('.');
    let mut tt = topic.split('.');
    let mut first = true;
    loop {
        match (pt.next(), tt.next()) {
            (None, None) => return true,
            (Some(">"), Some(t)) => return !(first && t.starts_with('$')),
            (Some("*"), Some(t)) => {
                if first && t.starts_with('$') {
                    return false;
                }
            }
            (Some(p), Some(t)) => {
                if p != t {
                    return false;
                }
            }
            _ => return false,
        }
        first = false;
    }
}

/// Does pattern `inner` match only topics that pattern `outer` matches too (both assumed
/// valid)? A user allowed `outer` may then watch `inner`. Topic names are patterns too.
pub fn pattern_within(inner: &str, outer: &str) -> bool {
    let mut it = inner.split('.');
    let mut ot = outer.split('.');
    let mut first = true;
    loop {
        match (it.next(), ot.next()) {
            (None, None) => return true,
            // `>` covers one or more tokens: whatever remains of `inner`, which is at least
            // this one (a `>` of `inner` included), but no reserved topic from the start.
            (Some(i), Some(">")) => return !(first && i.starts_with('$')),
            (Some(">"), Some(_)) => return false,
            (Some(i), Some("*")) => {
                if first && i.starts_with('$') {
                    return false;
                }
            }
            (Some(i), Some(o)) => {
                if i != o {
                    return false;
                }
            }
            _ => return false,
        }
        first = false;
    }
}

/// Is `pattern` a plain topic name (no wildcard)?
pub fn is_literal(pattern: &str) -> bool {
    !pattern.split('.').any(|t| t == "*" || t == ">")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_within_patterns() {
        assert!(pattern_within("orders.eu", "orders.>"));
        assert!(pattern_within("orders.*", "orders.>"));
        assert!(pattern_within("orders.>", "orders.>"));
        assert!(pattern_within("orders.eu.>", "orders.*.>"));
        assert!(!pattern_within("orders.>", "orders.*"));
        assert!(!pattern_within("orders", "orders.>"));
        assert!(!pattern_within(">", "orders.>"));
        assert!(pattern_within("a.b", "*.b"));
        assert!(!pattern_within("*.b", "a.b"));
        assert!(pattern_within("x", ">"));
        assert!(!pattern_within("$sys.events", ">"));
        assert!(!pattern_within("$sys.events", "*.events"));
        assert!(pattern_within("$sys.events", "$sys.>"));
        assert!(pattern_within("$inbox.7.x", "$inbox.>"));
    }

    #[test]
    fn names() {
        assert!(validate_topic("orders.eu.created").is_ok());
        assert!(validate_topic("ünïcode.ok").is_ok());
        assert_eq!(validate_topic(""), Err(NameError::Empty));
        assert!(matches!(
            validate_topic("a..b"),
            Err(NameError::EmptyToken(_))
        ));
        assert!(matches!(
            validate_topic(".a"),
            Err(NameError::EmptyToken(_))
        ));
        assert!(matches!(
            validate_topic("a b"),
            Err(NameError::Whitespace(_))
        ));
        assert!(matches!(validate_topic("a.*"), Err(NameError::Wildcard(_))));
        assert!(matches!(
            validate_topic(&"a".repeat(256)),
            Err(NameError::TooLong(256))
        ));
        assert!(validate_topic(&"a".repeat(255)).is_ok());
        assert!(matches!(
            validate_publish_topic("$sys.x"),
            Err(NameError::Reserved(_))
        ));
    }

    #[test]
    fn patterns() {
        assert!(validate_pattern("orders.*.created").is_ok());
        assert!(validate_pattern("orders.>").is_ok());
        assert!(validate_pattern(">").is_ok());
        assert!(validate_pattern("orders.>.x").is_err());
        assert!(validate_pattern("orders.a*").is_err());
        assert!(matches("orders.*.created", "orders.eu.created"));
        assert!(!matches("orders.*.created", "orders.eu.x.created"));
        assert!(matches("orders.>", "orders.eu"));
        assert!(matches("orders.>", "orders.eu.x"));
        assert!(!matches("orders.>", "orders"));
        assert!(matches("orders", "orders"));
        assert!(!matches("orders", "orders.eu"));
        assert!(matches(">", "a.b.c"));
        assert!(!matches(">", "$sys.events"));
        assert!(!matches("*.events", "$sys.events"));
        assert!(matches("$sys.>", "$sys.events"));
        assert!(is_literal("a.b") && !is_literal("a.*"));
    }
}
