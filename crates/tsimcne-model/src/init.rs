//! Seeded initialisation, as in the reference: convolutions Kaiming-normal
//! (mode fan_out, ReLU gain), BatchNorm weight 1 and bias 0 with running
//! statistics 0 and 1, Linear weights and biases uniform in ±1/√fan_in.
//!
//! candle cannot seed its CPU generator, so every value is drawn from our
//! own keyed stream, one stream per tensor name: **Invariant:** a tensor's
//! initial value depends only on (seed, its name, its shape).

use tsimcne_format::model_keys::{Dtype, TensorSpec};
use tsimcne_rng::SplitMix64;

/// FNV-1a of a tensor name, the per-tensor key of the init stream.
fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The seeded stream for one tensor of a model.
pub fn stream(seed: u64, name: &str) -> SplitMix64 {
    SplitMix64::keyed(&[seed, name_key(name)])
}

/// How one tensor starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Const(f64),
    Normal { std: f64 },
    Uniform { bound: f64 },
}

/// The reference rule for a tensor, from its name and shape.
pub fn rule(spec: &TensorSpec, fan_in_of_linear: Option<usize>) -> Init {
    let leaf = spec.name.rsplit('.').next().unwrap_or("");
    match (spec.shape.len(), leaf) {
        // conv [out, in, kh, kw]: Kaiming normal, fan_out, gain √2.
        (4, _) => {
            let fan_out = spec.shape[0] * spec.shape[2] * spec.shape[3];
            Init::Normal {
                std: (2.0 / fan_out as f64).sqrt(),
            }
        }
        // Linear weight [out, in] and its bias: U(±1/√in).
        (2, _) => Init::Uniform {
            bound: 1.0 / (spec.shape[1] as f64).sqrt(),
        },
        (1, "bias") if fan_in_of_linear.is_some() => Init::Uniform {
            bound: 1.0 / (fan_in_of_linear.unwrap_or(1) as f64).sqrt(),
        },
        (_, "weight" | "running_var") => Init::Const(1.0),
        _ => Init::Const(0.0),
    }
}

/// Draws `n` values of `init` from `rng`, as f32.
pub fn draw(init: Init, n: usize, rng: &mut SplitMix64) -> Vec<f32> {
    match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Normal { std } => (0..n).map(|_| (rng.normal() * std) as f32).collect(),
        Init::Uniform { bound } => (0..n).map(|_| rng.uniform(-bound, bound) as f32).collect(),
    }
}

/// The initial values of every F32 tensor in `specs` (I64 counters start at 0).
pub fn initial_values(specs: &[TensorSpec], seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for spec in specs.iter().filter(|s| s.dtype == Dtype::F32) {
        // A Linear bias takes its bound from its weight's fan-in.
        let fan_in = spec.name.strip_suffix(".bias").and_then(|p| {
            specs
                .iter()
                .find(|w| w.name == format!("{p}.weight") && w.shape.len() == 2)
                .map(|w| w.shape[1])
        });
        let n = spec.shape.iter().product();
        let values = draw(rule(spec, fan_in), n, &mut stream(seed, &spec.name));
        out.push((spec.name.clone(), spec.shape.clone(), values));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsimcne_format::model_keys::tensor_specs;

    #[test]
    fn rules_follow_the_reference() {
        let arch = crate::preset("tiny", 3, 8).unwrap();
        let specs = tensor_specs(&arch);
        let vals = initial_values(&specs, 1);
        let get = |n: &str| vals.iter().find(|v| v.0 == n).unwrap().2.clone();
        assert!(get("backbone.bn1.weight").iter().all(|&v| v == 1.0));
        assert!(get("backbone.bn1.running_mean").iter().all(|&v| v == 0.0));
        assert!(get("backbone.bn1.running_var").iter().all(|&v| v == 1.0));
        let b = 1.0 / 32f32.sqrt();
        assert!(
            get("projection_head.layers.2.bias")
                .iter()
                .all(|&v| v.abs() <= b)
        );
        assert!(
            get("projection_head.layers.2.bias")
                .iter()
                .any(|&v| v != 0.0)
        );
        // Kaiming fan_out: std √(2 / (4·3·3)) for the stem of width 4.
        let w = get("backbone.conv1.weight");
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!((std - (2.0f32 / 36.0).sqrt()).abs() < 0.1, "{std}");
        assert_eq!(vals, initial_values(&specs, 1));
        assert_ne!(vals, initial_values(&specs, 2));
    }
}
