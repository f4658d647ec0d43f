//! How deeply a MessagePack body nests, found without recursion.
//!
//! serde decodes an internally tagged enum (every frame here) by buffering the body into a
//! tree first, recursively: a body of a million nested arrays overflows the stack of the
//! thread decoding it before any depth limit of the decoder is reached. No frame of this
//! protocol nests more than a few levels, so a body nesting deeper than [`MAX_DEPTH`] is
//! refused before it is decoded.
//!
//! The same walk tells whether a body has the plain shape a client frame can be decoded in
//! without that buffering (`decode.rs`).

/// Deepest nesting of arrays and maps a frame body may have.
pub const MAX_DEPTH: usize = 32;

/// Bytes to skip after a marker, for markers followed by a fixed-size value or by a length.
enum Next {
    /// A scalar of this many more bytes.
    Skip(usize),
    /// A string, bin or ext whose length takes this many bytes (plus `extra`: ext's type).
    Len { len_bytes: usize, extra: usize },
    /// An array or map of this many items (a map counts keys and values).
    Items(u64),
    /// An array or map whose item count takes this many bytes.
    ItemsLen { len_bytes: usize, per_item: u64 },
}

fn classify(m: u8) -> Option<Next> {
    Some(match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Next::Skip(0),
        0x80..=0x8f => Next::Items(2 * u64::from(m & 0x0f)),
        0x90..=0x9f => Next::Items(u64::from(m & 0x0f)),
        0xa0..=0xbf => Next::Skip(usize::from(m & 0x1f)),
        0xc4 | 0xd9 => Next::Len {
            len_bytes: 1,
            extra: 0,
        },
        0xc5 | 0xda => Next::Len {
            len_bytes: 2,
            extra: 0,
        },
        0xc6 | 0xdb => Next::Len {
            len_bytes: 4,
            extra: 0,
        },
        0xc7 => Next::Len {
            len_bytes: 1,
            extra: 1,
        },
        0xc8 => Next::Len {
            len_bytes: 2,
            extra: 1,
        },
        0xc9 => Next::Len {
            len_bytes: 4,
            extra: 1,
        },
        0xca => Next::Skip(4),
        0xcb => Next::Skip(8),
        0xcc | 0xd0 => Next::Skip(1),
        0xcd | 0xd1 => Next::Skip(2),
        0xce | 0xd2 => Next::Skip(4),
        0xcf | 0xd3 => Next::Skip(8),
        0xd4 => Next::Skip(2),
        0xd5 => Next::Skip(3),
        0xd6 => Next::Skip(5),
        0xd7 => Next::Skip(9),
        0xd8 => Next::Skip(17),
        0xdc => Next::ItemsLen {
            len_bytes: 2,
            per_item: 1,
        },
        0xdd => Next::ItemsLen {
            len_bytes: 4,
            per_item: 1,
        },
        0xde => Next::ItemsLen {
            len_bytes: 2,
            per_item: 2,
        },
        0xdf => Next::ItemsLen {
            len_bytes: 4,
            per_item: 2,
        },
        0xc1 => return None,
    })
}

/// The big-endian length of `n` bytes at `pos`, and the position after it; None when the
/// body ends first.
fn length_at(body: &[u8], pos: usize, n: usize) -> Option<(u64, usize)> {
    let end = pos.saturating_add(n);
    let bytes = body.get(pos..end)?;
    Some((bytes.iter().fold(0, |v, b| (v << 8) | u64::from(*b)), end))
}

/// Does `body` nest arrays and maps deeper than `max`? Truncated or invalid bodies are left
/// to the decoder: this only looks for depth, in one pass, with no recursion.
pub fn too_deep(body: &[u8], max: usize) -> bool {
    survey(body, max).too_deep
}

/// What one walk over a body found.
pub(crate) struct Survey {
    /// Arrays and maps nest deeper than the limit (see [`too_deep`]).
    pub too_deep: bool,
    /// The body is a single map whose first key is `type` and no other key of it is, every
    /// map key at any depth is a str, no value is an ext, and every bin is the value of a
    /// `payload` key: the shape in which decoding a
    /// frame straight from its bytes gives what serde's buffering gives (`decode.rs`).
    pub plain: bool,
}

/// An array or map being walked.
#[derive(Clone, Copy, Default)]
struct Open {
    /// Items still to read (a map counts keys and values).
    left: u64,
    map: bool,
}

/// Containers kept without a heap allocation: more than any frame of the protocol nests.
const INLINE: usize = 8;

/// The open containers, innermost last: the first [`INLINE`] in place, deeper ones on the
/// heap (a body is walked for every frame read).
#[derive(Default)]
struct Stack {
    inline: [Open; INLINE],
    len: usize,
    deeper: Vec<Open>,
}

impl Stack {
    fn len(&self) -> usize {
        self.len + self.deeper.len()
    }

    fn push(&mut self, open: Open) {
        match self.inline.get_mut(self.len) {
            Some(slot) if self.deeper.is_empty() => {
                *slot = open;
                self.len += 1;
            }
            _ => self.deeper.push(open),
        }
    }

    fn last_mut(&mut self) -> Option<&mut Open> {
        match self.deeper.last_mut() {
            Some(o) => Some(o),
            None => self.inline.get_mut(self.len.checked_sub(1)?),
        }
    }

    fn pop(&mut self) {
        if self.deeper.pop().is_none() {
            self.len = self.len.saturating_sub(1);
        }
    }
}

fn is_str(m: u8) -> bool {
    matches!(m, 0xa0..=0xbf | 0xd9..=0xdb)
}

fn is_map(m: u8) -> bool {
    matches!(m, 0x80..=0x8f | 0xde | 0xdf)
}

fn is_bin(m: u8) -> bool {
    matches!(m, 0xc4..=0xc6)
}

fn is_ext(m: u8) -> bool {
    matches!(m, 0xc7..=0xc9 | 0xd4..=0xd8)
}

/// Walk `body` once, with no recursion: its depth against `max`, and whether it is
/// [`Survey::plain`]. A truncated or invalid body is not plain and, as far as depth goes,
/// left to the decoder.
pub(crate) fn survey(body: &[u8], max: usize) -> Survey {
    let stop = Survey {
        too_deep: false,
        plain: false,
    };
    let mut open = Stack::default();
    let mut pos = 0usize;
    let mut plain = true;
    let mut top_values = 0u32;
    let mut top_keys = 0u64;
    // The value being read is that of a `payload` key.
    let mut payload_value = false;
    while let Some(&m) = body.get(pos) {
        pos += 1;
        // This value is one item of the innermost open container: a key when that is a map
        // and an even number of its items is left.
        let key = match open.last_mut() {
            Some(top) => {
                let key = top.map && top.left % 2 == 0;
                top.left -= 1;
                key
            }
            None => {
                top_values += 1;
                plain &= top_values == 1 && is_map(m);
                false
            }
        };
        let top_key = key && open.len() == 1;
        plain &= !is_ext(m) && (!key || is_str(m));
        // A bin read where serde expects an array (a list of seqs, of messages) is taken as
        // one by rmp in one pass, and refused by serde's buffer: only a payload is a bin.
        plain &= key || !is_bin(m) || payload_value;
        let was_key = key;
        payload_value = false;
        let items = match classify(m) {
            None => return stop,
            Some(Next::Skip(n)) => {
                let end = pos.saturating_add(n);
                if top_key {
                    plain &= type_key_in_place(body.get(pos..end), &mut top_keys);
                }
                payload_value = was_key && body.get(pos..end) == Some(&b"payload"[..]);
                pos = end;
                0
            }
            Some(Next::Len { len_bytes, extra }) => {
                let Some((len, after)) = length_at(body, pos, len_bytes) else {
                    return stop;
                };
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                let start = after.saturating_add(extra);
                pos = start.saturating_add(len);
                if top_key {
                    plain &= type_key_in_place(body.get(start..pos), &mut top_keys);
                }
                payload_value = was_key && body.get(start..pos) == Some(&b"payload"[..]);
                0
            }
            Some(Next::Items(n)) => n,
            Some(Next::ItemsLen {
                len_bytes,
                per_item,
            }) => {
                let Some((count, after)) = length_at(body, pos, len_bytes) else {
                    return stop;
                };
                pos = after;
                count.saturating_mul(per_item)
            }
        };
        if items > 0 {
            open.push(Open {
                left: items,
                map: is_map(m),
            });
            if open.len() > max {
                return Survey {
                    too_deep: true,
                    plain: false,
                };
            }
        }
        while open.last_mut().is_some_and(|o| o.left == 0) {
            open.pop();
        }
    }
    Survey {
        too_deep: false,
        plain: plain && top_keys > 0 && open.len() == 0 && pos == body.len(),
    }
}

/// One more key of the top-level map, its bytes `key` (None: past the end): is `type` where
/// it must be, first and only there?
fn type_key_in_place(key: Option<&[u8]>, seen: &mut u64) -> bool {
    let is_type = key == Some(b"type".as_slice());
    *seen += 1;
    if *seen == 1 {
        is_type
    } else {
        !is_type
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize, marker: u8) -> Vec<u8> {
        let mut b = Vec::new();
        for _ in 0..levels {
            b.push(marker);
            if marker == 0x81 {
                b.extend_from_slice(&[0xa1, b'k']);
            }
        }
        b.push(0xc0);
        b
    }

    #[test]
    fn depth_of_arrays_and_maps() {
        assert!(!too_deep(&nested(3, 0x91), 3));
        assert!(too_deep(&nested(4, 0x91), 3));
        assert!(!too_deep(&nested(3, 0x81), 3));
        assert!(too_deep(&nested(4, 0x81), 3));
        // array16 of two arrays of one nil each: depth 2, siblings do not add up.
        let b = [0xdc, 0x00, 0x02, 0x91, 0xc0, 0x91, 0xc0];
        assert!(!too_deep(&b, 2));
        assert!(too_deep(&b, 1));
        // Strings and bins are skipped whole, whatever they hold.
        let mut s = vec![0x92, 0xc4, 0x03, 0x91, 0x91, 0x91, 0xa2, 0x91, 0x91];
        s.push(0xc0);
        assert!(!too_deep(&s, 1));
        // Deeper than the containers kept in place, and back up again.
        assert!(!too_deep(&nested(20, 0x91), 32));
        assert!(!too_deep(&nested(32, 0x81), 32));
        assert!(too_deep(&nested(33, 0x81), 32));
        let mut twice = vec![0x92];
        twice.extend(nested(12, 0x91));
        twice.extend(nested(12, 0x81));
        assert!(!too_deep(&twice, 13));
        assert!(too_deep(&twice, 12));
        // Truncated or invalid: left to the decoder.
        assert!(!too_deep(&[0xdc, 0x00], 1));
        assert!(!too_deep(&[0xc1], 0));
    }
}
