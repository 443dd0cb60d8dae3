//! Division by a fixed divisor as a multiply and a shift: the host half of
//! the GPU kernels' index arithmetic (`fast_div` and `FastIndex` in
//! `cuda/kernels.cu`), outside the `cuda` feature so that the CPU tests
//! check it.

/// `n / d` for every `n < 2^31` as `(mulhi(n, mul) + n) >> shift`, where
/// `mulhi` is the high half of the 64-bit product (Granlund & Montgomery
/// 1994, "Division by invariant integers using multiplication"; PyTorch's
/// `IntDivider`). `mulhi(n, mul) <= n`, so the sum fits 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastDiv {
    pub d: u32,
    pub mul: u32,
    pub shift: u32,
}

impl FastDiv {
    /// The dividends (and divisors) it is exact for: below 2^31, so a
    /// kernel takes it for tensors of fewer elements.
    pub const LIMIT: u64 = 1 << 31;

    /// The multiplier and shift for `d`; none for 0 or `d >= 2^31`.
    pub fn new(d: u64) -> Option<Self> {
        if d == 0 || d >= Self::LIMIT {
            return None;
        }
        // The least shift with 2^shift >= d; then
        // mul = floor(2^32 (2^shift - d) / d) + 1 < 2^32.
        let shift = 64 - (d - 1).leading_zeros();
        let mul = ((1u64 << 32) * ((1u64 << shift) - d)) / d + 1;
        Some(Self {
            d: d as u32,
            mul: u32::try_from(mul).ok()?,
            shift,
        })
    }

    /// `n / d` as the kernels compute it, for `n < 2^31`.
    pub fn quotient(self, n: u32) -> u32 {
        let hi = ((u64::from(n) * u64::from(self.mul)) >> 32) as u32;
        (hi + n) >> self.shift
    }
}

#[cfg(test)]
mod tests {
    use super::FastDiv;

    /// Every divisor up to 3,000 and powers of two and their neighbours,
    /// against dividends at both ends of the range, around multiples of the
    /// divisor, and spread between.
    #[test]
    fn it_divides_exactly_below_the_limit() {
        let mut divisors: Vec<u64> = (1..3000).collect();
        for p in 1..31 {
            let t = 1u64 << p;
            divisors.extend([t - 1, t, t + 1]);
        }
        divisors.extend([
            FastDiv::LIMIT - 1,
            65_536 * 3,
            1_000_003,
            1024 * 1024 * 1023,
        ]);
        let top = FastDiv::LIMIT as u32 - 1;
        for d in divisors {
            let f = FastDiv::new(d).unwrap_or_else(|| panic!("no divider for {d}"));
            let mut ns: Vec<u32> = vec![0, 1, 2, top, top - 1, top / 2];
            for q in [1u64, 2, 3, 7, 1000, (FastDiv::LIMIT - 1) / d] {
                let at = q * d;
                for n in [at.saturating_sub(1), at, at + 1] {
                    if n < FastDiv::LIMIT {
                        ns.push(n as u32);
                    }
                }
            }
            let mut h = d.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for _ in 0..64 {
                h ^= h >> 29;
                h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                ns.push((h >> 33) as u32 & top);
            }
            for n in ns {
                assert_eq!(f.quotient(n), n / d as u32, "{n} / {d}");
            }
        }
    }

    #[test]
    fn it_refuses_what_it_cannot_divide_by() {
        assert_eq!(FastDiv::new(0), None);
        assert_eq!(FastDiv::new(FastDiv::LIMIT), None);
        assert_eq!(FastDiv::new(1).map(|f| (f.mul, f.shift)), Some((1, 0)));
    }
}
