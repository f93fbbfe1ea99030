//! The lab reader: `lab::parse` on mutated TOML text, seeded with the default lab and
//! every example in docs/lab-file.md.
//!
//! Invariants: a refusal says at least one thing, each at a line and column inside
//! the text (or just past its end), in the file it was given; the same text parses the
//! same way twice.

use crate::{invariant, Cov, Target};

pub const TARGET: Target = Target {
    name: "lab",
    seeds,
    run,
    max_len: 64 * 1024,
    text: true,
};

const DOC: &str = include_str!("../../../docs/lab-file.md");

fn seeds() -> Vec<Vec<u8>> {
    let mut out = vec![lab::DEFAULT_LAB.as_bytes().to_vec()];
    // Every ```toml block of the reference.
    let mut rest = DOC;
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let Some(end) = body.find("```") else { break };
        out.push(body.as_bytes()[..end].to_vec());
        rest = &body[end..];
    }
    out
}

fn run(data: &[u8], cov: &mut Cov) {
    // `arbitrary` would read a length first; the text is the whole input instead.
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count().max(1);
    let result = lab::parse("fuzz.toml", &text);
    match &result {
        Ok(lab) => {
            cov.hit(1, lab.bridges.len() as u64);
            cov.hit(2, lab.ports.len() as u64);
            cov.hit(
                3,
                lab.services.len() as u64 | (lab.forwards.len() as u64) << 8,
            );
            cov.hit(
                4,
                lab.nat.is_some() as u64 | (lab.vxlan.is_some() as u64) << 1,
            );
            for b in &lab.bridges {
                invariant!(
                    (68..=65521).contains(&b.mtu),
                    "a bridge MTU of {} was accepted",
                    b.mtu
                );
            }
        }
        Err(errors) => {
            invariant!(!errors.is_empty(), "a refusal with no error");
            for e in errors {
                invariant!(e.file == "fuzz.toml", "an error in {}", e.file);
                invariant!(
                    e.pos.line >= 1 && e.pos.line <= lines + 1 && e.pos.col >= 1,
                    "an error at {}:{} of a {lines}-line text: {}",
                    e.pos.line,
                    e.pos.col,
                    e.message
                );
                let _ = e.to_string();
                // Which errors were reached: the message up to its first detail.
                let head = e.message.split(['`', '"', ':']).next().unwrap_or("");
                cov.hit(5, crate::fnv(head.as_bytes()));
            }
        }
    }
    let again = lab::parse("fuzz.toml", &text);
    invariant!(
        again.is_ok() == result.is_ok()
            && again.as_ref().err().map(Vec::len) == result.as_ref().err().map(Vec::len),
        "the same text parsed differently twice"
    );
}
