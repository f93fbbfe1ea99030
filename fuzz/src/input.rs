//! What a fuzz input is: raw bytes, read through `arbitrary`'s [`Unstructured`] as a
//! configuration byte and then a sequence of [`Record`]s (an operation, an argument,
//! a time step and a frame), the way cargo-fuzz targets read theirs. Mutating the bytes
//! mutates the structure: a flipped length cuts a frame short, a flipped opcode turns
//! a receive into a send. [`Record::encode`] writes the same layout, so seeds built
//! with the wire emitters decode to exactly what they were built as.

use arbitrary::{Arbitrary, Result, Unstructured};

/// One step of a target: what to do (`op`, `arg`), how much time passes first (`dt`,
/// milliseconds; a target may scale it), and a frame or datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub op: u8,
    pub arg: u8,
    pub dt: u16,
    pub frame: &'a [u8],
}

impl<'a> Arbitrary<'a> for Record<'a> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let op = u8::arbitrary(u)?;
        let arg = u8::arbitrary(u)?;
        let dt = u16::arbitrary(u)?;
        let len = u16::arbitrary(u)? as usize;
        // A length past the end takes what there is (a cut frame, not no frame).
        let frame = u.bytes(len.min(u.len()))?;
        Ok(Record { op, arg, dt, frame })
    }
}

impl Record<'_> {
    /// Appends the record in the layout [`Record::arbitrary`] reads. Frames longer
    /// than 65535 bytes cannot be written.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.op);
        out.push(self.arg);
        // `arbitrary` reads integers little-endian.
        out.extend_from_slice(&self.dt.to_le_bytes());
        let len = u16::try_from(self.frame.len()).expect("a frame of at most 65535 bytes");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(self.frame);
    }
}

/// A configuration byte and the records of an input.
pub fn decode(data: &[u8]) -> (u8, Vec<Record<'_>>) {
    let mut u = Unstructured::new(data);
    let config = u8::arbitrary(&mut u).unwrap_or(0);
    let mut records = Vec::new();
    while !u.is_empty() {
        match Record::arbitrary(&mut u) {
            Ok(r) => records.push(r),
            Err(_) => break,
        }
    }
    (config, records)
}

/// Builds an input: a configuration byte and records, each `(op, arg, dt, frame)`.
pub fn encode(config: u8, records: &[(u8, u8, u16, &[u8])]) -> Vec<u8> {
    let mut out = vec![config];
    for &(op, arg, dt, frame) in records {
        Record { op, arg, dt, frame }.encode(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_records_decode_as_they_were() {
        let a = [1u8, 2, 3];
        let b = vec![9u8; 1000];
        let data = encode(7, &[(1, 2, 300, &a), (4, 5, 65535, &b), (0, 0, 0, &[])]);
        let (config, records) = decode(&data);
        assert_eq!(config, 7);
        assert_eq!(
            records,
            vec![
                Record {
                    op: 1,
                    arg: 2,
                    dt: 300,
                    frame: &a
                },
                Record {
                    op: 4,
                    arg: 5,
                    dt: 65535,
                    frame: &b
                },
                Record {
                    op: 0,
                    arg: 0,
                    dt: 0,
                    frame: &[]
                },
            ]
        );
        // Cut short, the last frame is what is left of it.
        // (The config byte, the first record, the second's header, 10 of its bytes.)
        let (_, cut) = decode(&data[..1 + 9 + 6 + 10]);
        assert_eq!(cut.last().unwrap().frame.len(), 10);
    }
}
