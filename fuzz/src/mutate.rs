//! The mutations: bit flips, bytes and 16-bit words set to values that sit on the
//! edges of packet formats, small arithmetic, truncation, insertion, deletion,
//! duplication and splicing with another input; for text, line-level edits too.

/// A small, fast generator (xorshift64*): the loop needs many cheap numbers, not
/// good ones.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that seeds 0, 1, 2 differ at once (and never 0).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 if `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Bytes that mean something in the formats fuzzed: zero and all ones, sign edges,
/// IPv4 version/IHL bytes, VXLAN's flag, protocol numbers, TCP flags, tag and type
/// bytes.
const BYTES: &[u8] = &[
    0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x07, 0x08, 0x0f, 0x10, 0x11, 0x12, 0x14, 0x18, 0x20, 0x3f,
    0x40, 0x41, 0x45, 0x46, 0x4f, 0x50, 0x60, 0x7f, 0x80, 0x81, 0x86, 0x88, 0xa8, 0xdd, 0xf0, 0xfe,
    0xff,
];

/// 16-bit values on the edges: lengths around header sizes and MTUs, the minimum GSO
/// size, ethertypes, ports, fragment offsets and flags.
const WORDS: &[u16] = &[
    0, 1, 2, 7, 8, 9, 14, 19, 20, 21, 28, 34, 40, 47, 48, 54, 60, 64, 68, 576, 1280, 1400, 1450,
    1460, 1472, 1480, 1500, 1514, 1515, 8972, 9000, 0x0800, 0x0806, 0x86dd, 0x8100, 0x88a8, 53, 80,
    4789, 8472, 0x2000, 0x4000, 0x1fff, 0x3fff, 0x7fff, 0x8000, 0xfffe, 0xffff,
];

/// Numbers for text: the edges of the lab file's ranges and of the integer types.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "8",
    "24",
    "31",
    "32",
    "33",
    "67",
    "68",
    "255",
    "256",
    "1450",
    "1500",
    "4789",
    "65485",
    "65521",
    "65535",
    "65536",
    "86400",
    "1000000",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999",
    "1e3",
    "0x10",
    "1.5",
    "nan",
    "inf",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "true",
];

/// Applies one to four mutations to `data`, drawing splices from `other`, and keeps it
/// at most `max` bytes long.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], max: usize) {
    for _ in 0..1 + rng.below(4) {
        mutate_once(rng, data, other);
    }
    data.truncate(max);
}

fn mutate_once(rng: &mut Rng, d: &mut Vec<u8>, other: &[u8]) {
    let len = d.len();
    match rng.below(13) {
        0 if len > 0 => {
            let i = rng.below(len);
            d[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            d[i] = BYTES[rng.below(BYTES.len())];
        }
        2 if len > 1 => {
            let i = rng.below(len - 1);
            let w = WORDS[rng.below(WORDS.len())];
            let b = if rng.chance(2) {
                w.to_be_bytes()
            } else {
                w.to_le_bytes()
            };
            d[i..i + 2].copy_from_slice(&b);
        }
        3 if len > 0 => {
            let i = rng.below(len);
            d[i] = d[i].wrapping_add(1 + rng.below(8) as u8);
        }
        4 if len > 0 => {
            let i = rng.below(len);
            d[i] = d[i].wrapping_sub(1 + rng.below(8) as u8);
        }
        5 if len > 1 => {
            // A big-endian word nudged, as a length or a checksum field.
            let i = rng.below(len - 1);
            let w = u16::from_be_bytes([d[i], d[i + 1]]);
            let delta = 1 + rng.below(16) as u16;
            let w = if rng.chance(2) {
                w.wrapping_add(delta)
            } else {
                w.wrapping_sub(delta)
            };
            d[i..i + 2].copy_from_slice(&w.to_be_bytes());
        }
        6 if len > 0 => d.truncate(rng.below(len)),
        7 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            d.splice(at..at, bytes);
        }
        8 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            d.drain(at..at + n);
        }
        9 if len > 0 => {
            // A chunk of itself copied elsewhere (inserted, or over what is there).
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(128));
            let chunk = d[from..from + n].to_vec();
            let at = rng.below(len + 1);
            if rng.chance(2) {
                d.splice(at..at, chunk);
            } else {
                let end = (at + n).min(len);
                d[at..end].copy_from_slice(&chunk[..end - at]);
            }
        }
        10 if !other.is_empty() => {
            // Splice: a head of this input, a tail of another.
            let keep = rng.below(len + 1);
            let from = rng.below(other.len());
            d.truncate(keep);
            d.extend_from_slice(&other[from..]);
        }
        11 if !other.is_empty() => {
            // A chunk of another input, inserted.
            let from = rng.below(other.len());
            let n = 1 + rng.below((other.len() - from).min(256));
            let at = rng.below(len + 1);
            d.splice(at..at, other[from..from + n].iter().copied());
        }
        _ => {
            let i = rng.below(len.max(1));
            if len > 0 {
                d[i] = rng.next() as u8;
            } else {
                d.push(rng.next() as u8);
            }
        }
    }
}

/// Line-level edits for text inputs (the lab file): a number replaced by an edge
/// value, a line deleted, duplicated, moved, or taken from another input. Falls back
/// to [`mutate`] half the time.
pub fn mutate_text(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], max: usize) {
    if rng.chance(2) {
        return mutate(rng, data, other, max);
    }
    let text = String::from_utf8_lossy(data).into_owned();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let others: Vec<&str> = std::str::from_utf8(other)
        .map(|t| t.lines().collect())
        .unwrap_or_default();
    for _ in 0..1 + rng.below(3) {
        let n = lines.len();
        match rng.below(6) {
            0 if n > 0 => {
                // A value (after `=`) replaced by an edge number or odd value.
                let i = rng.below(n);
                if let Some(eq) = lines[i].find('=') {
                    let key = lines[i][..eq + 1].to_string();
                    lines[i] = format!("{key} {}", NUMBERS[rng.below(NUMBERS.len())]);
                }
            }
            1 if n > 0 => {
                // A number inside a value (an address's octet, a port) replaced.
                let i = rng.below(n);
                let digits: Vec<usize> = lines[i]
                    .char_indices()
                    .filter(|(_, c)| c.is_ascii_digit())
                    .map(|(k, _)| k)
                    .collect();
                if let Some(&at) = digits.get(rng.below(digits.len().max(1))) {
                    let end = lines[i][at..]
                        .find(|c: char| !c.is_ascii_digit())
                        .map_or(lines[i].len(), |e| at + e);
                    let num = NUMBERS[rng.below(NUMBERS.len())];
                    lines[i].replace_range(at..end, num);
                }
            }
            2 if n > 0 => {
                lines.remove(rng.below(n));
            }
            3 if n > 0 => {
                let line = lines[rng.below(n)].clone();
                lines.insert(rng.below(n + 1), line);
            }
            4 if n > 1 => {
                let (a, b) = (rng.below(n), rng.below(n));
                lines.swap(a, b);
            }
            _ if !others.is_empty() => {
                // A line (or a whole section) from another input.
                let from = rng.below(others.len());
                let count = if rng.chance(3) {
                    others.len() - from
                } else {
                    1
                };
                let at = rng.below(n + 1);
                lines.splice(
                    at..at,
                    others[from..from + count].iter().map(|s| s.to_string()),
                );
            }
            _ => {}
        }
    }
    let mut out = lines.join("\n").into_bytes();
    out.push(b'\n');
    out.truncate(max);
    *data = out;
}
