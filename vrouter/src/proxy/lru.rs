//! Least-recently-used order over the proxy's flow entries (by entry number): an
//! index-linked list, so touching a flow and finding the oldest are O(1) however many
//! flows there are.

const NIL: u32 = u32::MAX;

#[derive(Default)]
pub(super) struct Lru {
    /// (previous, next) of each entry number; NIL at the ends.
    links: Vec<(u32, u32)>,
    linked: Vec<bool>,
    /// Most recently used first.
    head: u32,
    tail: u32,
}

impl Lru {
    pub fn new() -> Lru {
        Lru {
            links: Vec::new(),
            linked: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    fn grow(&mut self, n: usize) {
        if self.links.len() <= n {
            self.links.resize(n + 1, (NIL, NIL));
            self.linked.resize(n + 1, false);
        }
    }

    /// Takes `n` out of the order (no-op if it is not in it).
    pub fn unlink(&mut self, n: usize) {
        if !self.linked.get(n).copied().unwrap_or(false) {
            return;
        }
        let (prev, next) = self.links[n];
        if prev == NIL {
            self.head = next;
        } else {
            self.links[prev as usize].1 = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.links[next as usize].0 = prev;
        }
        self.linked[n] = false;
    }

    /// Makes `n` the most recently used.
    pub fn touch(&mut self, n: usize) {
        self.grow(n);
        self.unlink(n);
        self.links[n] = (NIL, self.head);
        if self.head != NIL {
            self.links[self.head as usize].0 = n as u32;
        }
        self.head = n as u32;
        if self.tail == NIL {
            self.tail = n as u32;
        }
        self.linked[n] = true;
    }

    /// The least recently used entry.
    pub fn oldest(&self) -> Option<usize> {
        (self.tail != NIL).then_some(self.tail as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_is_the_least_recently_touched() {
        let mut l = Lru::new();
        assert_eq!(l.oldest(), None);
        for n in [3, 1, 7] {
            l.touch(n);
        }
        assert_eq!(l.oldest(), Some(3));
        l.touch(3);
        assert_eq!(l.oldest(), Some(1));
        l.unlink(1);
        assert_eq!(l.oldest(), Some(7));
        l.unlink(7);
        l.unlink(7);
        assert_eq!(l.oldest(), Some(3));
        l.unlink(3);
        assert_eq!(l.oldest(), None);
        l.touch(5);
        assert_eq!(l.oldest(), Some(5));
    }
}
