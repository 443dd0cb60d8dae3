//! A bounded, sorted list of the k smallest (distance, index) pairs.

/// The `k` smallest `(distance, index)` pairs seen so far, in ascending
/// (distance, index) order.
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    items: Vec<(f64, u32)>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// The k-th smallest distance so far, or infinity while fewer than k.
    #[inline]
    pub fn worst(&self) -> f64 {
        if self.items.len() < self.k {
            f64::INFINITY
        } else {
            self.items[self.k - 1].0
        }
    }

    #[inline]
    pub fn push(&mut self, d: f64, i: u32) {
        if self.items.len() == self.k {
            let last = self.items[self.k - 1];
            if (d, i) >= last {
                return;
            }
            self.items.pop();
        }
        let pos = self.items.partition_point(|&(e, j)| (e, j) < (d, i));
        self.items.insert(pos, (d, i));
    }

    pub fn items(&self) -> &[(f64, u32)] {
        &self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_smallest_in_distance_then_index_order() {
        let mut t = TopK::new(3);
        assert_eq!(t.worst(), f64::INFINITY);
        for (d, i) in [(5.0, 0), (1.0, 9), (1.0, 2), (3.0, 4), (1.0, 5), (0.5, 7)] {
            t.push(d, i);
        }
        assert_eq!(t.items(), &[(0.5, 7), (1.0, 2), (1.0, 5)]);
        assert_eq!(t.worst(), 1.0);
    }
}
