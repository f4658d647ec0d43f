//! How deeply a MessagePack body nests, found without recursion.
//!
//! serde decodes an internally tagged enum (every frame here) by buffering the body into a
//! tree first, recursively: a body of a million nested arrays overflows the stack of the
//! thread decoding it before any depth limit of the decoder is reached. No frame of this
//! protocol nests more than a few levels, so a body nesting deeper than [`MAX_DEPTH`] is
//! refused before it is decoded.

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
    // Items still to read in each open container.
    let mut open: Vec<u64> = Vec::new();
    let mut pos = 0usize;
    while let Some(&m) = body.get(pos) {
        pos += 1;
        // This value is one item of the innermost open container.
        if let Some(top) = open.last_mut() {
            *top -= 1;
        }
        let items = match classify(m) {
            None => return false,
            Some(Next::Skip(n)) => {
                pos = pos.saturating_add(n);
                0
            }
            Some(Next::Len { len_bytes, extra }) => {
                let Some((len, after)) = length_at(body, pos, len_bytes) else {
                    return false;
                };
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                pos = after.saturating_add(extra).saturating_add(len);
                0
            }
            Some(Next::Items(n)) => n,
            Some(Next::ItemsLen {
                len_bytes,
                per_item,
            }) => {
                let Some((count, after)) = length_at(body, pos, len_bytes) else {
                    return false;
                };
                pos = after;
                count.saturating_mul(per_item)
            }
        };
        if items > 0 {
            open.push(items);
            if open.len() > max {
                return true;
            }
        }
        while open.last() == Some(&0) {
            open.pop();
        }
    }
    false
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
        // Truncated or invalid: left to the decoder.
        assert!(!too_deep(&[0xdc, 0x00], 1));
        assert!(!too_deep(&[0xc1], 0));
    }
}
