//! Framing of commands and item headers. Little-endian throughout.
//!
//! Command: `code (u8) | round (u64) | payload`.
//! Header: `kind (u8) | round (u64) | count (u32) | flags (ceil(count / 8) bytes, bit i of byte
//! i / 8 = item i has bytes) | bit length (u64) of each flagged item, in order`.

use lena_sim::{Command, Item, Items};

/// A malformed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FrameError {}

/// Writes a command frame into `out` (cleared first).
pub fn encode_command(cmd: Command, round: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(cmd.code());
    out.extend_from_slice(&round.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads a command frame: the command, its round and its payload.
pub fn decode_command(frame: &[u8]) -> Result<(Command, u64, &[u8]), FrameError> {
    if frame.len() < 9 {
        return Err(FrameError(format!(
            "command frame of {} bytes (at least 9)",
            frame.len()
        )));
    }
    let cmd = Command::from_code(frame[0])
        .ok_or_else(|| FrameError(format!("unknown command code {}", frame[0])))?;
    let round = u64::from_le_bytes(frame[1..9].try_into().expect("8 bytes"));
    Ok((cmd, round, &frame[9..]))
}

fn kind_code(kind: Items) -> u8 {
    match kind {
        Items::Uploads => 1,
        Items::Losses => 2,
        Items::States => 3,
    }
}

/// Whether an item carries bytes: uploads only when sent (bits > 0), other kinds always.
pub fn has_bytes(kind: Items, item: &Item<'_>) -> bool {
    kind != Items::Uploads || item.bits > 0
}

/// Writes the header of `items` into `out` (cleared first).
pub fn encode_header(kind: Items, round: u64, items: &[Item<'_>], out: &mut Vec<u8>) {
    out.clear();
    out.push(kind_code(kind));
    out.extend_from_slice(&round.to_le_bytes());
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    let mut flags = vec![0u8; items.len().div_ceil(8)];
    for (i, it) in items.iter().enumerate() {
        if has_bytes(kind, it) {
            flags[i / 8] |= 1 << (i % 8);
        }
    }
    out.extend_from_slice(&flags);
    for it in items.iter().filter(|it| has_bytes(kind, it)) {
        out.extend_from_slice(&it.bits.to_le_bytes());
    }
}

/// A decoded header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// What the items are.
    pub kind: Items,
    /// The round they belong to.
    pub round: u64,
    /// Per item: `Some(bits)` if bytes follow, `None` for a silent node.
    pub items: Vec<Option<u64>>,
}

/// Reads a header frame.
pub fn decode_header(frame: &[u8]) -> Result<Header, FrameError> {
    let short = || {
        FrameError(format!(
            "header frame of {} bytes is truncated",
            frame.len()
        ))
    };
    if frame.len() < 13 {
        return Err(short());
    }
    let kind = match frame[0] {
        1 => Items::Uploads,
        2 => Items::Losses,
        3 => Items::States,
        k => return Err(FrameError(format!("unknown item kind {k}"))),
    };
    let round = u64::from_le_bytes(frame[1..9].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(frame[9..13].try_into().expect("4 bytes")) as usize;
    let flags = frame.get(13..13 + count.div_ceil(8)).ok_or_else(short)?;
    if !count.is_multiple_of(8) && flags[flags.len() - 1] >> (count % 8) != 0 {
        return Err(FrameError("header frame flags items past its count".into()));
    }
    let mut lengths = frame[13 + flags.len()..].chunks(8);
    let mut items = Vec::with_capacity(count);
    for i in 0..count {
        if flags[i / 8] & (1 << (i % 8)) != 0 {
            let b = lengths.next().filter(|b| b.len() == 8).ok_or_else(short)?;
            items.push(Some(u64::from_le_bytes(b.try_into().expect("8 bytes"))));
        } else {
            items.push(None);
        }
    }
    if lengths.next().is_some() {
        return Err(FrameError("header frame has trailing bytes".into()));
    }
    if kind != Items::Uploads && items.iter().any(Option::is_none) {
        return Err(FrameError(format!(
            "{kind:?} header leaves an item without bytes (only uploads may be silent)"
        )));
    }
    Ok(Header { kind, round, items })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let mut buf = Vec::new();
        for cmd in [
            Command::Round,
            Command::Evaluate,
            Command::Checkpoint,
            Command::Restore,
            Command::Finish,
        ] {
            encode_command(cmd, 123_456_789_012, &[1, 2, 3], &mut buf);
            assert_eq!(
                decode_command(&buf).unwrap(),
                (cmd, 123_456_789_012, &[1u8, 2, 3][..])
            );
        }
        assert!(decode_command(&buf[..8]).is_err());
        buf[0] = 99;
        assert!(decode_command(&buf).unwrap_err().0.contains("99"));
    }

    #[test]
    fn headers_round_trip_with_silent_nodes() {
        let data = [7u8; 3];
        let items: Vec<Item<'_>> = (0..11)
            .map(|i| Item {
                node: 40 + i,
                bits: if i % 3 == 0 { 0 } else { 17 + i as u64 },
                bytes: if i % 3 == 0 { &[] } else { &data },
            })
            .collect();
        let mut buf = Vec::new();
        encode_header(Items::Uploads, 9, &items, &mut buf);
        // 13 fixed bytes, 2 flag bytes, 8 bytes per sent node: silent nodes cost one bit.
        assert_eq!(buf.len(), 13 + 2 + 8 * 7);
        let h = decode_header(&buf).unwrap();
        assert_eq!((h.kind, h.round), (Items::Uploads, 9));
        let want: Vec<Option<u64>> = items
            .iter()
            .map(|it| (it.bits > 0).then_some(it.bits))
            .collect();
        assert_eq!(h.items, want);
        // Losses always carry bytes.
        encode_header(Items::Losses, 1, &items[..2], &mut buf);
        assert_eq!(decode_header(&buf).unwrap().items, vec![Some(0), Some(18)]);
    }

    #[test]
    fn malformed_headers_are_errors() {
        let items = [Item {
            node: 0,
            bits: 5,
            bytes: &[1],
        }];
        let mut buf = Vec::new();
        encode_header(Items::Uploads, 1, &items, &mut buf);
        for cut in 0..buf.len() {
            assert!(decode_header(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = buf.clone();
        long.extend_from_slice(&[0; 8]);
        assert!(decode_header(&long).is_err());
        let mut bad = buf.clone();
        bad[0] = 7;
        assert!(decode_header(&bad).is_err());
        // A flag past the count.
        let mut bad = buf;
        bad[13] |= 0b10;
        assert!(decode_header(&bad).is_err());
    }

    /// What the fuzz target `mpi_frames` checks, on mutations of valid frames: decoding never
    /// panics, and whatever decodes re-encodes to the same bytes.
    #[test]
    fn mutated_frames_decode_canonically_or_fail() {
        let data = [5u8; 4];
        let items: Vec<Item<'_>> = (0..13)
            .map(|i| Item {
                node: i,
                bits: if i % 4 == 0 { 0 } else { 25 + i as u64 },
                bytes: if i % 4 == 0 { &[] } else { &data },
            })
            .collect();
        let mut header = Vec::new();
        encode_header(Items::Uploads, 77, &items, &mut header);
        let mut command = Vec::new();
        encode_command(Command::Round, 77, &[1, 2, 3, 4], &mut command);
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            for base in [&header, &command] {
                let mut f = base.clone();
                for _ in 0..1 + next() % 3 {
                    let i = (next() as usize) % f.len();
                    match next() % 3 {
                        0 => f[i] ^= 1 << (next() % 8),
                        1 => f.truncate(i),
                        _ => f.insert(i, next() as u8),
                    }
                    if f.is_empty() {
                        break;
                    }
                }
                if let Ok(h) = decode_header(&f) {
                    let bytes = [0u8; 1];
                    let again_items: Vec<Item<'_>> = h
                        .items
                        .iter()
                        .enumerate()
                        .map(|(node, b)| Item {
                            node,
                            bits: b.unwrap_or(0),
                            bytes: if b.is_some() { &bytes } else { &[] },
                        })
                        .collect();
                    let mut again = Vec::new();
                    encode_header(h.kind, h.round, &again_items, &mut again);
                    if h.items.iter().all(|b| *b != Some(0)) {
                        assert_eq!(again, f);
                    }
                }
                if let Ok((cmd, round, payload)) = decode_command(&f) {
                    let mut again = Vec::new();
                    encode_command(cmd, round, payload, &mut again);
                    assert_eq!(again, f);
                }
            }
        }
    }
}
