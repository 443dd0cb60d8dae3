//! The backbone on our own CPU kernels (`tsimcne-ops`): channels-last
//! activations, im2col + gemm convolutions, batch norm with the ReLU and the
//! residual addition fused in, and a hand-written backward pass that keeps
//! exactly what it needs.
//!
//! It computes what [`crate::resnet::Backbone`] computes (same parameters,
//! same running-statistics updates, values equal within float rounding) and
//! is the default on the CPU. The candle-op backbone stays the reference and
//! the path on other devices.
//!
//! **Invariant:** the fast path reads and writes the model's variables only
//! through their checkpoint names, so both paths share one set of weights.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{Device, Tensor, Var};
use tsimcne_format::model_keys::{BACKBONE, ResNetArch};
use tsimcne_ops::{BnStats, ConvGeom};

use crate::error::{ModelError, Result};

/// PyTorch's BatchNorm2d defaults, as in `resnet::bn_config`.
pub(crate) const EPS: f64 = 1e-5;
pub(crate) const MOMENTUM: f64 = 0.1;

#[derive(Debug, Clone)]
pub(crate) struct ConvSpec {
    /// The weight's checkpoint name.
    pub(crate) weight: String,
    pub(crate) cin: usize,
    pub(crate) cout: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
}

impl ConvSpec {
    pub(crate) fn geom(&self, n: usize, h: usize, w: usize) -> ConvGeom {
        ConvGeom {
            n,
            h,
            w,
            cin: self.cin,
            cout: self.cout,
            k: self.k,
            stride: self.stride,
            pad: self.k / 2,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) conv1: ConvSpec,
    pub(crate) bn1: String,
    pub(crate) conv2: ConvSpec,
    pub(crate) bn2: String,
    pub(crate) shortcut: Option<(ConvSpec, String)>,
}

/// A convolution's input shape and patch-major weight, kept for backward.
struct ConvIn {
    geom: ConvGeom,
    w_pm: Vec<f32>,
}

/// What a block's backward pass needs from its forward pass.
/// One residual block's saved forward pass, on either device: each unit's
/// convolution input `G` (what its backward needs), convolution output and
/// batch statistics `S`, in buffers `B`.
pub(crate) struct BlockTape<G, B, S> {
    pub(crate) g1: G,
    pub(crate) c1: B,
    pub(crate) s1: S,
    /// The first unit's output, the second convolution's input.
    pub(crate) a1: B,
    pub(crate) g2: G,
    pub(crate) c2: B,
    pub(crate) s2: S,
    pub(crate) short: Option<(G, B, S)>,
}

/// What one unit (a convolution, its batch norm, then the residual and the
/// ReLU where asked) gives: the convolution's saved input, its output, the
/// batch statistics and the unit's output.
pub(crate) type UnitOut<G, B, S> = (G, B, S, B);

impl Block {
    /// The block's dataflow, written once for both devices:
    /// `out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut)`, where the
    /// shortcut is a 1×1 unit without ReLU or `x` itself.
    /// `unit(input, conv, bn, h, w, residual, relu)` runs one unit on the
    /// device; `release` takes back the shortcut's output once added.
    /// Returns the tape, the output and its spatial size.
    #[allow(clippy::type_complexity)]
    pub(crate) fn forward<G, B, S>(
        &self,
        x: &B,
        (h, w): (usize, usize),
        mut unit: impl FnMut(
            &B,
            &ConvSpec,
            &str,
            usize,
            usize,
            Option<&B>,
            bool,
        ) -> Result<UnitOut<G, B, S>>,
        release: impl FnOnce(B),
    ) -> Result<(BlockTape<G, B, S>, B, (usize, usize))> {
        // [n, cin, h, w] → [n, cout, h/stride, w/stride] (in either layout)
        let (g1, c1, s1, a1) = unit(x, &self.conv1, &self.bn1, h, w, None, true)?;
        let geom = self.conv1.geom(1, h, w);
        let (ho, wo) = (geom.out_h(), geom.out_w());
        let short = match &self.shortcut {
            Some((spec, bn)) => Some(unit(x, spec, bn, h, w, None, false)?),
            None => None,
        };
        let residual = match &short {
            Some((_, _, _, s)) => s,
            None => x,
        };
        let (g2, c2, s2, out) = unit(&a1, &self.conv2, &self.bn2, ho, wo, Some(residual), true)?;
        let short = short.map(|(g, c, s, sum)| {
            release(sum);
            (g, c, s)
        });
        let tape = BlockTape {
            g1,
            c1,
            s1,
            a1,
            g2,
            c2,
            s2,
            short,
        };
        Ok((tape, out, (ho, wo)))
    }
}

/// The stem's part of a tape: its input (NHWC), convolution output and
/// statistics.
struct StemTape {
    input: Vec<f32>,
    conv: ConvIn,
    c: Vec<f32>,
    s: BnStats,
}

/// The saved forward pass of a training step.
pub struct Tape {
    n: usize,
    /// `None` when the pass started at a block ([`FastBackbone::forward_from`]).
    stem: Option<StemTape>,
    /// The first block run.
    first: usize,
    /// `acts[0]` is the first block's input, `acts[i + 1]` block
    /// `first + i`'s output.
    acts: Vec<Vec<f32>>,
    blocks: Vec<BlockTape<ConvIn, Vec<f32>, BnStats>>,
    /// Pixels and channels of the last activation.
    last_hw: usize,
    last_c: usize,
}

/// Channels-last activations `[n, h, w, c]`.
#[derive(Debug, Clone)]
pub struct Acts {
    pub data: Vec<f32>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

/// Where [`FastBackbone::run`] starts.
enum Entry {
    /// Images (NHWC): the stem runs first.
    Images(Acts),
    /// A block's input.
    Acts(Acts),
}

/// A run's last activation and, when recorded, its tape.
struct Run {
    act: Acts,
    tape: Option<Tape>,
}

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tape")
            .field("n", &self.n)
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

/// Activation buffers kept between passes. Every training step needs the
/// same sizes again, and a fresh multi-megabyte allocation costs a page fault
/// per 4 KiB plus the kernel's zeroing (about 10 % of a `small` step when the
/// tape was freed); a reused buffer costs nothing. Buffers handed out hold
/// stale values: every kernel that fills one overwrites all of it.
///
/// The backward pass gives the tape's buffers back as it climbs down, so
/// the pool holds at most [`POOL_MAX_BYTES`]: beyond that a buffer is freed,
/// which keeps the peak of a large step (ResNet18 at 512 views) below
/// PyTorch's.
#[derive(Debug, Default)]
struct Pool(Mutex<PoolInner>);

#[derive(Debug, Default)]
struct PoolInner {
    free: Vec<Vec<f32>>,
    bytes: usize,
}

/// The most bytes the pool keeps.
const POOL_MAX_BYTES: usize = 384 << 20;

impl Pool {
    fn take(&self, len: usize) -> Vec<f32> {
        if let Ok(mut p) = self.0.lock()
            && let Some(i) = p.free.iter().position(|v| v.len() == len)
        {
            let v = p.free.swap_remove(i);
            p.bytes -= 4 * v.len();
            return v;
        }
        vec![0.0; len]
    }

    fn give(&self, v: Vec<f32>) {
        if v.is_empty() {
            return;
        }
        if let Ok(mut p) = self.0.lock()
            && p.bytes + 4 * v.len() <= POOL_MAX_BYTES
        {
            p.bytes += 4 * v.len();
            p.free.push(v);
        }
    }
}

/// The backbone's layer plan, by checkpoint name.
#[derive(Debug)]
pub struct FastBackbone {
    pub(crate) stem: ConvSpec,
    pub(crate) stem_bn: String,
    pub(crate) blocks: Vec<Block>,
    pub(crate) feature_dim: usize,
    pool: Pool,
}

/// How a forward pass treats BatchNorm and what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Running statistics; nothing kept.
    Eval,
    /// Batch statistics, running statistics updated; nothing kept.
    Train,
    /// As `Train`, keeping the tape for [`FastBackbone::backward`].
    TrainRecord,
}

fn read(vars: &HashMap<String, Var>, name: &str) -> Result<Vec<f32>> {
    let v = vars
        .get(name)
        .ok_or_else(|| ModelError::Invalid(format!("the model has no tensor {name}")))?;
    Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

struct Bn {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

fn bn_params(vars: &HashMap<String, Var>, prefix: &str) -> Result<Bn> {
    Ok(Bn {
        gamma: read(vars, &format!("{prefix}.weight"))?,
        beta: read(vars, &format!("{prefix}.bias"))?,
    })
}

/// Blends the batch statistics into the running ones, in candle's f32
/// arithmetic (`running·(1−m) + batch·m`, variance unbiased).
fn update_running(
    vars: &HashMap<String, Var>,
    prefix: &str,
    s: &BnStats,
    rows: usize,
) -> Result<()> {
    let keep = (1.0 - MOMENTUM) as f32;
    let unbias = (MOMENTUM * rows as f64 / (rows as f64 - 1.0)) as f32;
    for (name, batch, w) in [
        ("running_mean", &s.mean, MOMENTUM as f32),
        ("running_var", &s.var, unbias),
    ] {
        let key = format!("{prefix}.{name}");
        let old = read(vars, &key)?;
        let new: Vec<f32> = old
            .iter()
            .zip(batch)
            .map(|(r, b)| r * keep + b * w)
            .collect();
        let var = &vars[&key];
        var.set(&Tensor::from_vec(new, old.len(), var.device())?)?;
    }
    Ok(())
}

fn running(vars: &HashMap<String, Var>, prefix: &str) -> Result<BnStats> {
    Ok(BnStats {
        mean: read(vars, &format!("{prefix}.running_mean"))?,
        var: read(vars, &format!("{prefix}.running_var"))?,
    })
}

impl FastBackbone {
    pub fn new(arch: &ResNetArch) -> Self {
        let conv = |weight: String, cin, cout, k, stride| ConvSpec {
            weight,
            cin,
            cout,
            k,
            stride,
        };
        let w0 = arch.widths.first().copied().unwrap_or(0);
        let walk = arch.residual_blocks();
        let blocks = walk
            .iter()
            .map(|blk| {
                let (p, cin, width, stride) = (blk.prefix(), blk.cin, blk.cout, blk.stride);
                let shortcut = blk.has_shortcut().then(|| {
                    (
                        conv(format!("{p}.shortcut.0.weight"), cin, width, 1, stride),
                        format!("{p}.shortcut.1"),
                    )
                });
                Block {
                    conv1: conv(format!("{p}.conv1.weight"), cin, width, 3, stride),
                    bn1: format!("{p}.bn1"),
                    conv2: conv(format!("{p}.conv2.weight"), width, width, 3, 1),
                    bn2: format!("{p}.bn2"),
                    shortcut,
                }
            })
            .collect();
        let cin = walk.last().map_or(w0, |b| b.cout);
        Self {
            stem: conv(
                format!("{BACKBONE}.conv1.weight"),
                arch.in_channels,
                w0,
                3,
                1,
            ),
            stem_bn: format!("{BACKBONE}.bn1"),
            blocks,
            feature_dim: cin,
            pool: Pool::default(),
        }
    }

    /// Images `[n, c, h, w]` (NCHW, as the trainer makes them) to features
    /// `[n, feature]`; in training passes BatchNorm uses and then updates
    /// the batch statistics, and `TrainRecord` returns the tape.
    pub fn forward(
        &self,
        vars: &HashMap<String, Var>,
        x: &Tensor,
        pass: Pass,
    ) -> Result<(Tensor, Option<Tape>)> {
        let acts = self.nhwc_images(x)?;
        let run = self.run(vars, Entry::Images(acts), 0..self.blocks.len(), pass)?;
        self.pool_features(run, &x.device().clone())
    }

    /// The eval-mode output of the stem and the first `blocks` residual
    /// blocks for images `[n, c, h, w]`: the input [`Self::forward_from`]
    /// takes when those blocks are frozen. Running statistics are read,
    /// never updated.
    pub fn prefix(&self, vars: &HashMap<String, Var>, x: &Tensor, blocks: usize) -> Result<Acts> {
        if blocks > self.blocks.len() {
            return Err(ModelError::Invalid(format!(
                "the backbone has {} blocks, not {blocks}",
                self.blocks.len()
            )));
        }
        let acts = self.nhwc_images(x)?;
        let run = self.run(vars, Entry::Images(acts), 0..blocks, Pass::Eval)?;
        Ok(run.act)
    }

    /// [`Self::forward`] from block `first` on, its input given (as
    /// [`Self::prefix`] makes it): the stem and the blocks before `first`
    /// are neither run nor trained, and [`Self::backward`] stops at `first`.
    pub fn forward_from(
        &self,
        vars: &HashMap<String, Var>,
        acts: Acts,
        first: usize,
        pass: Pass,
    ) -> Result<(Tensor, Option<Tape>)> {
        if first > self.blocks.len() {
            return Err(ModelError::Invalid(format!(
                "the backbone has {} blocks, not {first}",
                self.blocks.len()
            )));
        }
        let cin = match first {
            0 => self.stem.cout,
            b => self.blocks[b - 1].conv2.cout,
        };
        if acts.c != cin || acts.data.len() != acts.n * acts.h * acts.w * acts.c {
            return Err(ModelError::Invalid(format!(
                "block {first} takes {cin} channels; the activations have {} (and {} values for {} × {} × {} × {})",
                acts.c,
                acts.data.len(),
                acts.n,
                acts.h,
                acts.w,
                acts.c
            )));
        }
        let run = self.run(vars, Entry::Acts(acts), first..self.blocks.len(), pass)?;
        self.pool_features(run, &Device::Cpu)
    }

    /// Checks images `[n, c, h, w]` on the CPU and returns them NHWC.
    fn nhwc_images(&self, x: &Tensor) -> Result<Acts> {
        if !matches!(x.device(), Device::Cpu) {
            return Err(ModelError::Invalid(
                "the fast kernels run on the CPU only".into(),
            ));
        }
        let (n, c, h, w) = x.dims4()?;
        if c != self.stem.cin {
            return Err(ModelError::Invalid(format!(
                "the images have {c} channels, the model takes {}",
                self.stem.cin
            )));
        }
        // [n, c, h, w] → [n, h, w, c]
        let data = tsimcne_ops::nchw_to_nhwc(&x.flatten_all()?.to_vec1::<f32>()?, n, c);
        Ok(Acts { data, n, h, w, c })
    }

    /// Global average pool of a run's last activation: `[n, feature]`.
    fn pool_features(&self, run: Run, device: &Device) -> Result<(Tensor, Option<Tape>)> {
        let a = &run.act;
        // [n, h·w, c] → [n, c]
        let feat = tsimcne_ops::global_avg_pool(&a.data, a.n, a.c);
        let n = a.n;
        match run.tape {
            Some(mut tape) => {
                tape.acts.push(run.act.data);
                Ok((
                    Tensor::from_vec(feat, (n, self.feature_dim), device)?,
                    Some(tape),
                ))
            }
            None => {
                self.pool.give(run.act.data);
                Ok((Tensor::from_vec(feat, (n, self.feature_dim), device)?, None))
            }
        }
    }

    /// The stem (for [`Entry::Images`]) and then `blocks`, in `pass`.
    fn run(
        &self,
        vars: &HashMap<String, Var>,
        entry: Entry,
        blocks: std::ops::Range<usize>,
        pass: Pass,
    ) -> Result<Run> {
        let train = pass != Pass::Eval;
        let record = pass == Pass::TrainRecord;
        let (x, with_stem) = match entry {
            Entry::Images(a) => (a, true),
            Entry::Acts(a) => (a, false),
        };
        let (n, mut h, mut w) = (x.n, x.h, x.w);

        // One convolution + BN (+ residual) (+ ReLU) unit.
        let unit = |x: &[f32],
                    spec: &ConvSpec,
                    bn: &str,
                    h: usize,
                    w: usize,
                    residual: Option<&[f32]>,
                    relu: bool|
         -> Result<(ConvIn, Vec<f32>, BnStats, Vec<f32>)> {
            let geom = spec.geom(n, h, w);
            let w_pm = tsimcne_ops::weight_to_patch_major(&read(vars, &spec.weight)?, &geom);
            let mut conv_out = self.pool.take(geom.output_len());
            tsimcne_ops::conv_forward(x, &geom, &w_pm, &mut conv_out);
            let p = bn_params(vars, bn)?;
            let mut out = self.pool.take(conv_out.len());
            let stats = if train {
                let s = tsimcne_ops::bn_train_forward(
                    &conv_out, spec.cout, &p.gamma, &p.beta, EPS, residual, relu, &mut out,
                );
                update_running(vars, bn, &s, geom.out_rows())?;
                s
            } else {
                tsimcne_ops::bn_eval_forward(
                    &conv_out,
                    spec.cout,
                    &p.gamma,
                    &p.beta,
                    &running(vars, bn)?,
                    EPS,
                    residual,
                    relu,
                    &mut out,
                );
                BnStats {
                    mean: Vec::new(),
                    var: Vec::new(),
                }
            };
            Ok((ConvIn { geom, w_pm }, conv_out, stats, out))
        };

        let mut stem_tape = None;
        let mut act = if with_stem {
            // [n, h, w, cin] → [n, h, w, w0]
            let (stem, stem_c, stem_s, out) =
                unit(&x.data, &self.stem, &self.stem_bn, h, w, None, true)?;
            if record {
                stem_tape = Some(StemTape {
                    input: x.data,
                    conv: stem,
                    c: stem_c,
                    s: stem_s,
                });
            } else {
                self.pool.give(stem_c);
            }
            out
        } else {
            x.data
        };
        let first = blocks.start;
        let mut acts = Vec::new();
        let mut tapes = Vec::new();
        for b in &self.blocks[blocks] {
            // [n, h, w, cin] → [n, h/stride, w/stride, cout]
            let (tape, out, hw) = b.forward(
                &act,
                (h, w),
                |x: &Vec<f32>, spec, bn, h, w, residual: Option<&Vec<f32>>, relu| {
                    unit(x, spec, bn, h, w, residual.map(Vec::as_slice), relu)
                },
                |sum| self.pool.give(sum),
            )?;
            let prev = std::mem::replace(&mut act, out);
            if record {
                tapes.push(tape);
                acts.push(prev);
            } else {
                for buf in [tape.c1, tape.a1, tape.c2, prev] {
                    self.pool.give(buf);
                }
                if let Some((_, c, _)) = tape.short {
                    self.pool.give(c);
                }
            }
            (h, w) = hw;
        }
        let c = act.len() / (n * h * w).max(1);
        let tape = record.then(|| Tape {
            n,
            stem: stem_tape,
            first,
            acts,
            blocks: tapes,
            last_hw: h * w,
            last_c: c,
        });
        Ok(Run {
            act: Acts {
                data: act,
                n,
                h,
                w,
                c,
            },
            tape,
        })
    }

    /// Backpropagates `d_feat` (`[n, feature]`) through the recorded pass;
    /// returns the gradient of every backbone parameter, by checkpoint name.
    pub fn backward(
        &self,
        vars: &HashMap<String, Var>,
        tape: Tape,
        d_feat: &Tensor,
    ) -> Result<Vec<(String, Tensor)>> {
        let device = d_feat.device().clone();
        let d_feat = d_feat.flatten_all()?.to_vec1::<f32>()?;
        if d_feat.len() != tape.n * tape.last_c {
            return Err(ModelError::Invalid(
                "feature gradient of the wrong shape".into(),
            ));
        }
        let mut grads = Vec::new();
        let mut push_conv = |name: &str, geom: &ConvGeom, dw: Vec<f32>| -> Result<()> {
            let t = Tensor::from_vec(dw, (geom.cout, geom.cin, geom.k, geom.k), &device)?;
            grads.push((name.to_string(), t));
            Ok(())
        };
        let mut bn_grads = Vec::new();
        let Tape {
            stem,
            first,
            mut acts,
            blocks,
            last_hw,
            last_c,
            n,
        } = tape;
        // [n, c] → [n, h·w, c]
        let mut d = tsimcne_ops::global_avg_pool_backward(&d_feat, n, last_c, last_hw);
        for (i, (b, t)) in self.blocks[first..].iter().zip(blocks).enumerate().rev() {
            // Nothing below a pass that started at this block wants its
            // input's gradient.
            let want_dx = i > 0 || stem.is_some();
            let out = acts.pop().unwrap_or_default();
            let x = acts.last().map(Vec::as_slice).unwrap_or_default();
            let c = b.conv2.cout;
            // out = relu(bn2(c2) + shortcut): dc2 and the masked gradient g.
            let mut dc2 = self.pool.take(t.c2.len());
            let mut g = self.pool.take(t.c2.len());
            let p2 = bn_backward(
                vars,
                &b.bn2,
                &t.c2,
                Some(&out),
                &d,
                c,
                &t.s2,
                &mut dc2,
                Some(&mut g),
            )?;
            bn_grads.push((b.bn2.clone(), p2));
            let mut dx = match (&b.shortcut, &t.short) {
                (Some((spec, bn)), Some((gs, cs, ss))) => {
                    let mut dcs = self.pool.take(cs.len());
                    let ps = bn_backward(vars, bn, cs, None, &g, c, ss, &mut dcs, None)?;
                    bn_grads.push((bn.clone(), ps));
                    push_conv(
                        &spec.weight,
                        &gs.geom,
                        tsimcne_ops::conv_backward_weight(x, &dcs, &gs.geom),
                    )?;
                    let mut dx = Vec::new();
                    if want_dx {
                        dx = self.pool.take(x.len());
                        tsimcne_ops::conv_backward_data(&dcs, &gs.geom, &gs.w_pm, &mut dx, false);
                    }
                    self.pool.give(dcs);
                    self.pool.give(std::mem::take(&mut g));
                    dx
                }
                _ => std::mem::take(&mut g),
            };
            push_conv(
                &b.conv2.weight,
                &t.g2.geom,
                tsimcne_ops::conv_backward_weight(&t.a1, &dc2, &t.g2.geom),
            )?;
            let mut da1 = self.pool.take(t.a1.len());
            tsimcne_ops::conv_backward_data(&dc2, &t.g2.geom, &t.g2.w_pm, &mut da1, false);
            self.pool.give(dc2);
            let mut dc1 = self.pool.take(t.c1.len());
            let p1 = bn_backward(
                vars,
                &b.bn1,
                &t.c1,
                Some(&t.a1),
                &da1,
                b.conv1.cout,
                &t.s1,
                &mut dc1,
                None,
            )?;
            bn_grads.push((b.bn1.clone(), p1));
            push_conv(
                &b.conv1.weight,
                &t.g1.geom,
                tsimcne_ops::conv_backward_weight(x, &dc1, &t.g1.geom),
            )?;
            if want_dx {
                tsimcne_ops::conv_backward_data(&dc1, &t.g1.geom, &t.g1.w_pm, &mut dx, true);
            }
            for buf in [
                std::mem::replace(&mut d, dx),
                da1,
                dc1,
                out,
                t.c1,
                t.a1,
                t.c2,
            ] {
                self.pool.give(buf);
            }
            if let Some((_, cs, _)) = t.short {
                self.pool.give(cs);
            }
        }
        // The stem: no gradient for the images.
        let first_in = acts.pop().unwrap_or_default();
        if let Some(st) = stem {
            let mut dc0 = self.pool.take(st.c.len());
            let p0 = bn_backward(
                vars,
                &self.stem_bn,
                &st.c,
                Some(&first_in),
                &d,
                self.stem.cout,
                &st.s,
                &mut dc0,
                None,
            )?;
            bn_grads.push((self.stem_bn.clone(), p0));
            push_conv(
                &self.stem.weight,
                &st.conv.geom,
                tsimcne_ops::conv_backward_weight(&st.input, &dc0, &st.conv.geom),
            )?;
            for buf in [dc0, st.c] {
                self.pool.give(buf);
            }
        }
        for buf in [d, first_in] {
            self.pool.give(buf);
        }
        for (prefix, p) in bn_grads {
            let c = p.gamma.len();
            grads.push((
                format!("{prefix}.weight"),
                Tensor::from_vec(p.gamma, c, &device)?,
            ));
            grads.push((
                format!("{prefix}.bias"),
                Tensor::from_vec(p.beta, c, &device)?,
            ));
        }
        Ok(grads)
    }
}

#[allow(clippy::too_many_arguments)]
fn bn_backward(
    vars: &HashMap<String, Var>,
    prefix: &str,
    x: &[f32],
    y: Option<&[f32]>,
    dy: &[f32],
    c: usize,
    stats: &BnStats,
    dx: &mut [f32],
    dres: Option<&mut [f32]>,
) -> Result<tsimcne_ops::BnParamGrads> {
    let gamma = read(vars, &format!("{prefix}.weight"))?;
    Ok(tsimcne_ops::bn_train_backward(
        x, y, dy, c, &gamma, stats, EPS, dx, dres,
    ))
}
