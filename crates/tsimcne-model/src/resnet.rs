//! The network: a CIFAR-style ResNet backbone (3×3 stride-1 stem, no
//! max-pool, BasicBlocks) and the projection head, in candle's idiom. The
//! `vb.pp(..)` paths are the reference PyTorch names (see
//! `tsimcne_format::model_keys`), so they are the checkpoint keys.

use candle_core::{D, ModuleT, Result, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, Linear, Module, VarBuilder};
use tsimcne_format::model_keys::{BACKBONE, BlockSpec, HEAD, HEAD_HIDDEN, HEAD_OUT, ResNetArch};

/// PyTorch's BatchNorm2d defaults.
fn bn_config() -> BatchNormConfig {
    BatchNormConfig {
        eps: 1e-5,
        remove_mean: true,
        affine: true,
        momentum: 0.1,
    }
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder<'_>) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        stride,
        dilation: 1,
        groups: 1,
        cudnn_fwd_algo: None,
    };
    candle_nn::conv2d_no_bias(cin, cout, k, cfg, vb)
}

/// conv3×3-BN-ReLU-conv3×3-BN plus a shortcut (identity, or conv1×1 + BN
/// when the shape changes), then ReLU.
#[derive(Debug, Clone)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    /// The block `spec` of the walk, its variables under `vb` (at the
    /// block's own path).
    pub fn new(spec: &BlockSpec, vb: VarBuilder<'_>) -> Result<Self> {
        let (cin, cout, stride) = (spec.cin, spec.cout, spec.stride);
        let shortcut = if spec.has_shortcut() {
            let sc = vb.pp("shortcut");
            Some((
                conv(cin, cout, 1, stride, sc.pp("0"))?,
                candle_nn::batch_norm(cout, bn_config(), sc.pp("1"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: conv(cin, cout, 3, stride, vb.pp("conv1"))?,
            bn1: candle_nn::batch_norm(cout, bn_config(), vb.pp("bn1"))?,
            conv2: conv(cout, cout, 3, 1, vb.pp("conv2"))?,
            bn2: candle_nn::batch_norm(cout, bn_config(), vb.pp("bn2"))?,
            shortcut,
        })
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // x: [batch, cin, h, w] → [batch, cout, h/stride, w/stride]
        let out = self.conv1.forward(x)?.apply_t(&self.bn1, train)?.relu()?;
        let out = self.conv2.forward(&out)?.apply_t(&self.bn2, train)?;
        let short = match &self.shortcut {
            Some((c, bn)) => c.forward(x)?.apply_t(bn, train)?,
            None => x.clone(),
        };
        (out + short)?.relu()
    }
}

/// The ResNet up to the global average pool.
#[derive(Debug, Clone)]
pub struct Backbone {
    conv1: Conv2d,
    bn1: BatchNorm,
    blocks: Vec<BasicBlock>,
}

impl Backbone {
    pub fn new(arch: &ResNetArch, vb: VarBuilder<'_>) -> Result<Self> {
        let w0 = arch.widths[0];
        let blocks = arch
            .residual_blocks()
            .iter()
            .map(|b| {
                BasicBlock::new(
                    b,
                    vb.pp(format!("layer{}", b.stage + 1))
                        .pp(b.index.to_string()),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv1: conv(arch.in_channels, w0, 3, 1, vb.pp("conv1"))?,
            bn1: candle_nn::batch_norm(w0, bn_config(), vb.pp("bn1"))?,
            blocks,
        })
    }
}

impl Backbone {
    /// The training forward pass of a backbone whose stem and first
    /// `frozen` blocks are fixed: those run in eval mode (running
    /// statistics, not updated) and are cut from the graph.
    pub fn forward_frozen_t(&self, x: &Tensor, frozen: usize) -> Result<Tensor> {
        let frozen = frozen.min(self.blocks.len());
        // [batch, in, h, w] → [batch, w0, h, w]
        let mut x = self.conv1.forward(x)?.apply_t(&self.bn1, false)?.relu()?;
        for b in &self.blocks[..frozen] {
            x = b.forward_t(&x, false)?;
        }
        let mut x = x.detach();
        for b in &self.blocks[frozen..] {
            x = b.forward_t(&x, true)?;
        }
        x.mean(D::Minus1)?.mean(D::Minus1)
    }
}

impl ModuleT for Backbone {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // [batch, in, h, w] → [batch, w0, h, w]
        let mut x = self.conv1.forward(x)?.apply_t(&self.bn1, train)?.relu()?;
        for b in &self.blocks {
            x = b.forward_t(&x, train)?;
        }
        // global average pool: [batch, w_last, h', w'] → [batch, w_last]
        x.mean(D::Minus1)?.mean(D::Minus1)
    }
}

/// Linear(feature→hidden), ReLU, Linear(hidden→out_dim).
#[derive(Debug, Clone)]
pub struct Head {
    hidden: Linear,
    out: Linear,
}

impl Head {
    pub fn new(arch: &ResNetArch, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            hidden: candle_nn::linear(
                arch.feature_dim(),
                arch.head_hidden,
                vb.pp(HEAD_HIDDEN.to_string()),
            )?,
            out: candle_nn::linear(arch.head_hidden, arch.out_dim, vb.pp(HEAD_OUT.to_string()))?,
        })
    }

    /// [batch, feature] → [batch, hidden] (after the ReLU).
    pub fn hidden(&self, x: &Tensor) -> Result<Tensor> {
        self.hidden.forward(x)?.relu()
    }

    /// [batch, hidden] → [batch, out_dim]: the output layer alone.
    pub fn output(&self, h: &Tensor) -> Result<Tensor> {
        self.out.forward(h)
    }
}

impl Module for Head {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // [batch, feature] → [batch, out_dim]
        self.out.forward(&self.hidden(x)?)
    }
}

/// The whole network: images to embedding.
#[derive(Debug, Clone)]
pub struct Net {
    pub backbone: Backbone,
    pub head: Head,
}

impl Net {
    pub fn new(arch: &ResNetArch, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            backbone: Backbone::new(arch, vb.pp(BACKBONE))?,
            head: Head::new(arch, vb.pp(HEAD))?,
        })
    }

    /// The forward pass with the graph cut below the output layer: the same
    /// values (and BatchNorm updates) as `forward_t`, but backpropagation
    /// reaches only the output layer, so training it alone (the project
    /// stage) skips the backward pass through the backbone.
    pub fn forward_output_only_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // [batch, in, h, w] → [batch, hidden], no gradient → [batch, out_dim]
        let h = self
            .head
            .hidden(&self.backbone.forward_t(x, train)?)?
            .detach();
        self.head.output(&h)
    }

    /// Backbone features and head output: ([batch, feature], [batch, out_dim]).
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let f = self.backbone.forward_t(x, train)?;
        let z = self.head.forward(&f)?;
        Ok((f, z))
    }
}

impl ModuleT for Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // [batch, in, h, w] → [batch, out_dim]
        self.head.forward(&self.backbone.forward_t(x, train)?)
    }
}
