//! The contrastive losses: InfoNCE with the Cauchy kernel (t-SimCNE) and
//! with cosine similarity over a temperature (SimCLR).
//!
//! For a batch of N images there are 2N views `z = [a; b]`. Every view's
//! candidates are the other 2N−1 views; its positive is its partner. The loss
//! is the mean over all 2N views of `LSE_j s(i, j) − s(i, partner(i))`, which
//! equals the recipe's `−mean s(aᵢ,bᵢ) + ½(mean LSE(a) + mean LSE(b))`.
//! Self-pairs are masked with −∞ before a max-shifted log-sum-exp.

use candle_core::{DType, Result, Tensor};
use tsimcne_model::{HostObjective, KernelLoss, Objective};
use tsimcne_ops::{fixed_scale_backward, fixed_scale_forward, info_nce_cauchy};

/// Which similarity the InfoNCE loss uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Similarity {
    /// `s(u, v) = −log(1 + ‖u − v‖²)`: t-SimCNE.
    Cauchy,
    /// `s(u, v) = cos(u, v) / τ`: SimCLR.
    Cosine { temperature: f64 },
}

impl Similarity {
    /// SimCLR's temperature in the recipe.
    pub const SIMCLR: Similarity = Similarity::Cosine { temperature: 0.5 };
}

/// `[2N, 2N]` similarities of all view pairs of `z: [2N, D]`.
fn similarities(z: &Tensor, sim: Similarity) -> Result<Tensor> {
    match sim {
        Similarity::Cauchy => {
            // ‖u−v‖² = ‖u‖² + ‖v‖² − 2u·v, clamped at 0 against rounding.
            let sq = z.sqr()?.sum_keepdim(1)?; // [2N, 1]
            let gram = z.matmul(&z.t()?)?; // [2N, 2N]
            let d2 = sq.broadcast_add(&sq.t()?)?.sub(&(gram * 2.0)?)?.relu()?;
            (d2 + 1.0)?.log()?.neg()
        }
        Similarity::Cosine { temperature } => {
            let norm = z
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-8, f64::INFINITY)?;
            let u = z.broadcast_div(&norm)?;
            u.matmul(&u.t()?)? / temperature
        }
    }
}

/// The InfoNCE loss of the views `z: [2N, D]`, first views then second
/// views. Returns a scalar.
pub fn info_nce(z: &Tensor, sim: Similarity) -> Result<Tensor> {
    let (n2, _) = z.dims2()?;
    if n2 < 4 || n2 % 2 != 0 {
        candle_core::bail!("info_nce needs an even number of at least 4 views, got {n2}");
    }
    let n = n2 / 2;
    let s = similarities(z, sim)?; // [2N, 2N]
    // Mask the self-pairs with −∞.
    let mask: Vec<f32> = (0..n2 * n2)
        .map(|k| {
            if k % (n2 + 1) == 0 {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, (n2, n2), z.device())?.to_dtype(z.dtype())?;
    let masked = s.add(&mask)?;
    let m = masked.max_keepdim(1)?.detach(); // [2N, 1], finite: 2N−1 candidates
    let lse = masked
        .broadcast_sub(&m)?
        .exp()?
        .sum_keepdim(1)?
        .log()?
        .add(&m)?; // [2N, 1]
    // Positives: s[i, i+N] for the first views and s[i+N, i] for the second.
    let idx: Vec<u32> = (0..n2).map(|i| ((i + n) % n2) as u32).collect();
    let idx = Tensor::from_vec(idx, (n2, 1), z.device())?;
    let pos = s.gather(&idx, 1)?; // [2N, 1]
    (lse - pos)?.mean_all()
}

/// The views `z: [2N, D]` centred on their mean and scaled so that their
/// root mean square coordinate is `scale` (`--map-scale`, opt-in, not the
/// recipe): the loss then sees the map at a fixed spread, and the network
/// cannot lower it by spreading its output ever wider. Differentiable; the
/// map the network writes is the same up to a shift and one scale factor.
pub fn fixed_scale(z: &Tensor, scale: f64) -> Result<Tensor> {
    let centred = z.broadcast_sub(&z.mean_keepdim(0)?)?; // [2N, D]
    // A tiny floor keeps identical views (spread 0) finite.
    let rms = (centred.sqr()?.mean_all()? + 1e-12)?.sqrt()?; // []
    centred.broadcast_div(&rms)? * scale
}

/// What every stage minimises: InfoNCE with `similarity`, of the outputs
/// at a fixed spread ([`fixed_scale`]) when `map_scale` is given. With the
/// Cauchy similarity it also runs on host rows
/// ([`tsimcne_ops::info_nce_cauchy`]), which the CPU's fast path uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Contrastive {
    pub similarity: Similarity,
    pub map_scale: Option<f64>,
    host: Option<CauchyOnHost>,
}

impl Contrastive {
    pub fn new(similarity: Similarity, map_scale: Option<f64>) -> Self {
        Self {
            similarity,
            map_scale,
            host: (similarity == Similarity::Cauchy).then_some(CauchyOnHost { map_scale }),
        }
    }
}

impl Objective for Contrastive {
    fn loss(&self, z: &Tensor) -> Result<Tensor> {
        match self.map_scale {
            None => info_nce(z, self.similarity),
            Some(scale) => info_nce(&fixed_scale(z, scale)?, self.similarity),
        }
    }

    fn on_host(&self) -> Option<&dyn HostObjective> {
        self.host.as_ref().map(|h| h as &dyn HostObjective)
    }

    fn kernel_loss(&self) -> Option<KernelLoss> {
        (self.similarity == Similarity::Cauchy).then_some(KernelLoss::InfoNceCauchy {
            map_scale: self.map_scale,
        })
    }
}

/// [`Contrastive`] with the Cauchy similarity, on host rows.
#[derive(Clone, Copy, Debug, PartialEq)]
struct CauchyOnHost {
    map_scale: Option<f64>,
}

impl HostObjective for CauchyOnHost {
    fn loss_and_grad(&self, z: &[f32], rows: usize, dim: usize) -> (f32, Vec<f32>) {
        match self.map_scale {
            None => info_nce_cauchy(z, rows, dim),
            Some(scale) => {
                let (y, fs) = fixed_scale_forward(z, rows, dim, scale);
                let (loss, dy) = info_nce_cauchy(&y, rows, dim);
                (loss, fixed_scale_backward(&fs, &dy, rows, dim))
            }
        }
    }
}

/// Helper for tests and tools: the loss of two `[N, D]` view batches.
pub fn info_nce_pair(a: &Tensor, b: &Tensor, sim: Similarity) -> Result<Tensor> {
    info_nce(&Tensor::cat(&[a, b], 0)?, sim)
}

/// The gradient-free loss value, for logging.
pub fn value(loss: &Tensor) -> Result<f32> {
    loss.to_dtype(DType::F32)?.to_scalar::<f32>()
}
