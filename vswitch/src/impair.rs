//! Link impairments on a port's way out, like `tc netem` but with no kernel help: loss,
//! duplication, delay with jitter, and a rate limit. Frames held back wait in the
//! port's own queue (copies, bounded) and are released by the poll loop's timer, never
//! by a sleeping thread.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// What to do to a port's frames, parsed from `loss=1% delay=20ms jitter=5ms
/// rate=10mbit duplicate=1%` (any subset, in any order).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// Chance of dropping a frame, 0 to 1.
    pub loss: f64,
    /// Chance of sending a frame twice, 0 to 1.
    pub duplicate: f64,
    pub delay: Duration,
    /// Each frame's delay varies within delay +- jitter, but frames keep their order.
    pub jitter: Duration,
    /// Bits per second at most (0: no limit).
    pub rate_bps: u64,
}

impl fmt::Display for Impairment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        // Percentages as they were written: a fraction times 100 is rounded back to
        // the 1e-9 the parser reads (0.0001% is not 0.00009999999999999999%).
        let pct = |x: f64| (x * 100.0 * 1e9).round() / 1e9;
        if self.loss > 0.0 {
            parts.push(format!("loss={}%", pct(self.loss)));
        }
        if self.duplicate > 0.0 {
            parts.push(format!("duplicate={}%", pct(self.duplicate)));
        }
        if !self.delay.is_zero() {
            parts.push(format!("delay={}us", self.delay.as_micros()));
        }
        if !self.jitter.is_zero() {
            parts.push(format!("jitter={}us", self.jitter.as_micros()));
        }
        if self.rate_bps > 0 {
            parts.push(format!("rate={}bit", self.rate_bps));
        }
        if parts.is_empty() {
            parts.push("none".into());
        }
        write!(f, "{}", parts.join(" "))
    }
}

fn percent(key: &str, v: &str) -> Result<f64, String> {
    let n = v
        .strip_suffix('%')
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|n| (0.0..=100.0).contains(n))
        .ok_or_else(|| {
            format!("`{key}={v}`: expected a percentage from 0% to 100%, like `{key}=1%`")
        })?;
    Ok(n / 100.0)
}

fn duration(key: &str, v: &str) -> Result<Duration, String> {
    let bad = || format!("`{key}={v}`: expected a time up to 60s, like `{key}=20ms` (us, ms or s)");
    let (num, unit) = v
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| v.split_at(i))
        .ok_or_else(bad)?;
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| *n >= 0.0)
        .ok_or_else(bad)?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        _ => return Err(bad()),
    };
    if secs > 60.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn rate(key: &str, v: &str) -> Result<u64, String> {
    let bad = || {
        format!("`{key}={v}`: expected a rate like `{key}=10mbit` (bit, kbit, mbit or gbit), at least 8kbit")
    };
    let (num, unit) = v
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| v.split_at(i))
        .ok_or_else(bad)?;
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| *n > 0.0)
        .ok_or_else(bad)?;
    let bps = match unit {
        "bit" => n,
        "kbit" => n * 1e3,
        "mbit" => n * 1e6,
        "gbit" => n * 1e9,
        _ => return Err(bad()),
    };
    if !(8000.0..=1e12).contains(&bps) {
        return Err(bad());
    }
    Ok(bps as u64)
}

impl Impairment {
    /// Parses `key=value` words; `clear` (or nothing) is no impairment.
    pub fn parse(text: &str) -> Result<Impairment, String> {
        let mut imp = Impairment::default();
        for word in text.split_whitespace() {
            if word == "clear" || word == "none" {
                continue;
            }
            let Some((key, value)) = word.split_once('=') else {
                return Err(format!(
                    "`{word}`: expected key=value (loss, duplicate, delay, jitter, rate)"
                ));
            };
            match key {
                "loss" => imp.loss = percent(key, value)?,
                "duplicate" => imp.duplicate = percent(key, value)?,
                "delay" => imp.delay = duration(key, value)?,
                "jitter" => imp.jitter = duration(key, value)?,
                "rate" => imp.rate_bps = rate(key, value)?,
                other => {
                    return Err(format!(
                        "unknown impairment `{other}`: one of loss, duplicate, delay, jitter, rate"
                    ))
                }
            }
        }
        if imp.jitter > imp.delay {
            return Err(format!(
                "jitter {:?} is larger than delay {:?}: frames would arrive before they left",
                imp.jitter, imp.delay
            ));
        }
        Ok(imp)
    }

    pub fn is_none(&self) -> bool {
        *self == Impairment::default()
    }
}

/// Frames an impaired port may hold at most (netem's default limit), and bytes.
const QUEUE_FRAMES: usize = 1000;
const QUEUE_BYTES: usize = 64 << 20;

/// What an impairment decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Lost,
    /// Queued (once, or twice if duplicated).
    Held,
    /// The queue is full: dropped.
    Overflow,
}

/// A port's impairment and the frames it holds back.
pub struct Shaper {
    pub spec: Impairment,
    queue: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
    /// When the rate limit lets the next frame go.
    next_free: Option<Instant>,
    rng: u64,
    pub lost: u64,
    pub overflowed: u64,
}

impl Shaper {
    pub fn new(spec: Impairment, seed: u64) -> Shaper {
        Shaper {
            spec,
            queue: VecDeque::new(),
            bytes: 0,
            next_free: None,
            rng: seed | 1,
            lost: 0,
            overflowed: 0,
        }
    }

    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Takes a frame leaving by the port at `now`: lost, or queued for its time.
    pub fn admit(&mut self, frame: &[u8], now: Instant) -> Fate {
        if self.spec.loss > 0.0 && self.random() < self.spec.loss {
            self.lost += 1;
            return Fate::Lost;
        }
        let copies = if self.spec.duplicate > 0.0 && self.random() < self.spec.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.queue.len() >= QUEUE_FRAMES || self.bytes + frame.len() > QUEUE_BYTES {
                self.overflowed += 1;
                return Fate::Overflow;
            }
            // The wire first (the rate limit), then the delay on top, as netem does.
            let mut sent = now;
            if self.spec.rate_bps > 0 {
                // The wire is busy until the previous frame is out; then this one
                // takes len * 8 / rate.
                let start = self.next_free.map_or(now, |t| t.max(now));
                let took =
                    Duration::from_secs_f64(frame.len() as f64 * 8.0 / self.spec.rate_bps as f64);
                self.next_free = Some(start + took);
                sent = start + took;
            }
            let mut due = sent + self.spec.delay;
            if !self.spec.jitter.is_zero() {
                let j = self.spec.jitter.as_secs_f64() * (2.0 * self.random() - 1.0);
                due = if j >= 0.0 {
                    due + Duration::from_secs_f64(j)
                } else {
                    due - Duration::from_secs_f64(-j)
                };
            }
            // Kept in order of release, as a wire keeps them: jitter delays a frame
            // but never lets it overtake the one before.
            if let Some((last, _)) = self.queue.back() {
                due = due.max(*last);
            }
            self.bytes += frame.len();
            self.queue.push_back((due, frame.to_vec()));
        }
        Fate::Held
    }

    /// When the next held frame is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(t, _)| *t)
    }

    /// The next frame due by `now`, if any.
    pub fn release(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.queue.front().is_some_and(|(t, _)| *t <= now) {
            let (_, f) = self.queue.pop_front()?;
            self.bytes -= f.len();
            return Some(f);
        }
        None
    }

    /// The next held frame, due or not (when the impairment is changed).
    pub fn release_any(&mut self) -> Option<Vec<u8>> {
        let (_, f) = self.queue.pop_front()?;
        self.bytes -= f.len();
        Some(f)
    }

    pub fn held(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_netem_users_write() {
        let i =
            Impairment::parse("loss=1% delay=20ms jitter=5ms rate=10mbit duplicate=0.5%").unwrap();
        assert_eq!(i.loss, 0.01);
        assert_eq!(i.delay, Duration::from_millis(20));
        assert_eq!(i.jitter, Duration::from_millis(5));
        assert_eq!(i.rate_bps, 10_000_000);
        assert_eq!(i.duplicate, 0.005);
        assert!(Impairment::parse("clear").unwrap().is_none());
        for bad in [
            "loss=101%",
            "loss=1",
            "delay=5",
            "delay=90s",
            "rate=10",
            "rate=1bit",
            "jitter=5ms",
            "colour=red",
            "loss",
        ] {
            assert!(Impairment::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loss_drops_about_its_share() {
        let now = Instant::now();
        let mut s = Shaper::new(Impairment::parse("loss=30%").unwrap(), 42);
        let lost = (0..10_000)
            .filter(|_| s.admit(&[0; 60], now) == Fate::Lost)
            .count();
        assert!((2500..3500).contains(&lost), "{lost}");
    }

    #[test]
    fn delay_holds_frames_until_due_in_order() {
        let now = Instant::now();
        let mut s = Shaper::new(Impairment::parse("delay=50ms").unwrap(), 1);
        s.admit(&[1], now);
        s.admit(&[2], now + Duration::from_millis(1));
        assert_eq!(s.release(now + Duration::from_millis(49)), None);
        assert_eq!(s.next_due(), Some(now + Duration::from_millis(50)));
        assert_eq!(s.release(now + Duration::from_millis(50)), Some(vec![1]));
        assert_eq!(s.release(now + Duration::from_millis(51)), Some(vec![2]));
        assert_eq!(s.held(), 0);
    }

    #[test]
    fn rate_spaces_frames_by_their_size() {
        let now = Instant::now();
        // 1 Mbit/s: a 1250-byte frame takes 10 ms on the wire.
        let mut s = Shaper::new(Impairment::parse("rate=1mbit").unwrap(), 1);
        for _ in 0..10 {
            s.admit(&[0; 1250], now);
        }
        let mut out = 0;
        let mut t = now;
        while s.held() > 0 {
            t += Duration::from_millis(1);
            while s.release(t).is_some() {
                out += 1;
            }
        }
        assert_eq!(out, 10);
        let took = t.duration_since(now);
        assert!(
            took >= Duration::from_millis(99) && took <= Duration::from_millis(102),
            "{took:?}"
        );
    }

    #[test]
    fn duplicates_and_a_bounded_queue() {
        let now = Instant::now();
        let mut s = Shaper::new(Impairment::parse("duplicate=100% delay=1s").unwrap(), 7);
        s.admit(&[9], now);
        assert_eq!(s.held(), 2);
        let mut big = Shaper::new(Impairment::parse("delay=1s").unwrap(), 7);
        let fates: Vec<Fate> = (0..QUEUE_FRAMES + 5)
            .map(|_| big.admit(&[0; 10], now))
            .collect();
        assert_eq!(fates.iter().filter(|f| **f == Fate::Overflow).count(), 5);
    }
}
