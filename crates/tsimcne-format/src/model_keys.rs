//! Safetensors key conventions for the ResNet + projection head.
//!
//! The names are the reference PyTorch `state_dict` names, so a checkpoint
//! moves between this project and the PyTorch reference in both directions.
//! The model code builds its `VarBuilder` paths from the same prefixes.
//!
//! **Invariant:** [`tensor_specs`] lists exactly the tensors a model file of
//! that architecture holds, with their shapes; nothing else is accepted.
//!
//! **Invariant:** [`ResNetArch::residual_blocks`] is the one walk of the
//! backbone's blocks (checkpoint prefix, channels, stride, shortcut): the
//! key list here, candle's `Backbone` and the fast CPU backbone are all
//! built from it.

use serde::{Deserialize, Serialize};

pub const BACKBONE: &str = "backbone";
/// Bounds of [`ResNetArch::check`]: far above any real ResNet.
pub const MAX_STAGES: usize = 8;
pub const MAX_BLOCKS: usize = 64;
pub const MAX_WIDTH: usize = 1 << 14;
pub const MAX_HEAD: usize = 1 << 16;
pub const HEAD: &str = "projection_head.layers";
/// Index of the head's first Linear inside `projection_head.layers`.
pub const HEAD_HIDDEN: usize = 0;
/// Index of the head's last Linear (index 1 is the ReLU, which has no weights).
pub const HEAD_OUT: usize = 2;
/// BatchNorm tensors, in PyTorch order.
pub const BN_TENSORS: [&str; 5] = [
    "weight",
    "bias",
    "running_mean",
    "running_var",
    "num_batches_tracked",
];

/// The shape of the network: a CIFAR-style ResNet (3×3 stride-1 stem, no
/// max-pool, BasicBlocks) and a two-layer projection head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetArch {
    pub in_channels: usize,
    /// Output channels of each stage; the stem has `widths[0]`.
    pub widths: Vec<usize>,
    /// BasicBlocks per stage.
    pub blocks: Vec<usize>,
    pub head_hidden: usize,
    pub out_dim: usize,
}

/// One residual block of the backbone, as [`ResNetArch::residual_blocks`]
/// walks them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSpec {
    /// The stage (0-based; its checkpoint name is `layer{stage + 1}`).
    pub stage: usize,
    /// The block within its stage.
    pub index: usize,
    pub cin: usize,
    pub cout: usize,
    /// The first convolution's and the shortcut's stride.
    pub stride: usize,
}

impl BlockSpec {
    /// The checkpoint prefix of its tensors, e.g. `backbone.layer2.0`.
    pub fn prefix(&self) -> String {
        format!("{BACKBONE}.{}", self.path())
    }

    /// The prefix below the backbone's, e.g. `layer2.0` (a `VarBuilder` path).
    pub fn path(&self) -> String {
        format!("layer{}.{}", self.stage + 1, self.index)
    }

    /// Whether the block has a projection shortcut (conv1×1 + BN; `shortcut.0`
    /// and `shortcut.1`): when it changes the resolution or the channels.
    pub fn has_shortcut(&self) -> bool {
        self.stride != 1 || self.cin != self.cout
    }
}

impl ResNetArch {
    /// Stride of the first block of stage `s`: 1 for the first stage, else 2.
    pub fn stage_stride(s: usize) -> usize {
        if s == 0 { 1 } else { 2 }
    }

    /// Every residual block in order, after the stem (`widths[0]` channels):
    /// stage `s` has `blocks[s]` blocks of `widths[s]` channels, its first
    /// with stride [`Self::stage_stride`]`(s)`.
    pub fn residual_blocks(&self) -> Vec<BlockSpec> {
        let mut out = Vec::new();
        let mut cin = self.widths.first().copied().unwrap_or(0);
        for (stage, (&cout, &n)) in self.widths.iter().zip(&self.blocks).enumerate() {
            for index in 0..n {
                let stride = if index == 0 {
                    Self::stage_stride(stage)
                } else {
                    1
                };
                out.push(BlockSpec {
                    stage,
                    index,
                    cin,
                    cout,
                    stride,
                });
                cin = cout;
            }
        }
        out
    }

    /// Checks the architecture is one a model file can describe: 1 to 8
    /// stages of 1 to 64 blocks, every width positive and at most 16,384,
    /// and so on. An architecture read from an untrusted `config.json`
    /// sizes nothing before it passes this check.
    pub fn check(&self) -> Result<(), String> {
        let range = |what: &str, v: usize, max: usize| {
            if v == 0 || v > max {
                Err(format!("{what} is {v}, not in 1..={max}"))
            } else {
                Ok(())
            }
        };
        range("in_channels", self.in_channels, 4)?;
        range("the number of stages", self.widths.len(), MAX_STAGES)?;
        if self.blocks.len() != self.widths.len() {
            return Err(format!(
                "{} widths for {} stages of blocks",
                self.widths.len(),
                self.blocks.len()
            ));
        }
        for &w in &self.widths {
            range("a width", w, MAX_WIDTH)?;
        }
        for &b in &self.blocks {
            range("a stage's block count", b, MAX_BLOCKS)?;
        }
        range("head_hidden", self.head_hidden, MAX_HEAD)?;
        range("out_dim", self.out_dim, MAX_HEAD)?;
        Ok(())
    }

    /// Residual blocks in the first `layers` stages.
    pub fn blocks_in(&self, layers: usize) -> usize {
        self.blocks.iter().take(layers).sum()
    }

    /// The name prefixes of the tensors that `--freeze-layers layers`
    /// fixes: the stem (`backbone.conv1.`, `backbone.bn1.`) and stages
    /// `layer1` to `layer{layers}`; none for 0.
    pub fn frozen_prefixes(&self, layers: usize) -> Vec<String> {
        if layers == 0 {
            return Vec::new();
        }
        let mut p = vec![format!("{BACKBONE}.conv1."), format!("{BACKBONE}.bn1.")];
        p.extend((1..=layers).map(|l| format!("{BACKBONE}.layer{l}.")));
        p
    }

    /// Length of the backbone's pooled feature vector.
    pub fn feature_dim(&self) -> usize {
        self.widths.last().copied().unwrap_or(0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    /// Only `num_batches_tracked`, a scalar, as in PyTorch.
    I64,
}

/// One tensor a model file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    /// A trained parameter (true) or a BatchNorm buffer (false).
    pub trainable: bool,
}

fn conv(out: &mut Vec<TensorSpec>, name: String, o: usize, i: usize, k: usize) {
    out.push(TensorSpec {
        name,
        shape: vec![o, i, k, k],
        dtype: Dtype::F32,
        trainable: true,
    });
}

fn bn(out: &mut Vec<TensorSpec>, prefix: &str, c: usize) {
    for t in BN_TENSORS {
        let (shape, dtype) = if t == "num_batches_tracked" {
            (vec![], Dtype::I64)
        } else {
            (vec![c], Dtype::F32)
        };
        out.push(TensorSpec {
            name: format!("{prefix}.{t}"),
            shape,
            dtype,
            trainable: matches!(t, "weight" | "bias"),
        });
    }
}

fn linear(out: &mut Vec<TensorSpec>, prefix: &str, o: usize, i: usize) {
    out.push(TensorSpec {
        name: format!("{prefix}.weight"),
        shape: vec![o, i],
        dtype: Dtype::F32,
        trainable: true,
    });
    out.push(TensorSpec {
        name: format!("{prefix}.bias"),
        shape: vec![o],
        dtype: Dtype::F32,
        trainable: true,
    });
}

/// Every tensor of a model with architecture `arch`, in state_dict order.
pub fn tensor_specs(arch: &ResNetArch) -> Vec<TensorSpec> {
    let mut out = Vec::new();
    let w0 = arch.widths.first().copied().unwrap_or(0);
    conv(
        &mut out,
        format!("{BACKBONE}.conv1.weight"),
        w0,
        arch.in_channels,
        3,
    );
    bn(&mut out, &format!("{BACKBONE}.bn1"), w0);
    for blk in arch.residual_blocks() {
        let (p, cin, width) = (blk.prefix(), blk.cin, blk.cout);
        conv(&mut out, format!("{p}.conv1.weight"), width, cin, 3);
        bn(&mut out, &format!("{p}.bn1"), width);
        conv(&mut out, format!("{p}.conv2.weight"), width, width, 3);
        bn(&mut out, &format!("{p}.bn2"), width);
        if blk.has_shortcut() {
            conv(&mut out, format!("{p}.shortcut.0.weight"), width, cin, 1);
            bn(&mut out, &format!("{p}.shortcut.1"), width);
        }
    }
    linear(
        &mut out,
        &format!("{HEAD}.{HEAD_HIDDEN}"),
        arch.head_hidden,
        // The last stage's width (the stem's when there are no blocks).
        arch.residual_blocks().last().map_or(w0, |b| b.cout),
    );
    linear(
        &mut out,
        &format!("{HEAD}.{HEAD_OUT}"),
        arch.out_dim,
        arch.head_hidden,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resnet18() -> ResNetArch {
        ResNetArch {
            in_channels: 3,
            widths: vec![64, 128, 256, 512],
            blocks: vec![2; 4],
            head_hidden: 1024,
            out_dim: 128,
        }
    }

    #[test]
    fn resnet18_matches_the_reference_names() {
        let specs = tensor_specs(&resnet18());
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        // conv1 + bn1 (5) + 8 blocks × (2 convs + 2 bns) + 3 shortcuts × (conv + bn) + 4 head
        assert_eq!(specs.len(), 1 + 5 + 8 * 12 + 3 * 6 + 4);
        for n in [
            "backbone.conv1.weight",
            "backbone.bn1.num_batches_tracked",
            "backbone.layer1.0.conv1.weight",
            "backbone.layer4.1.bn2.running_var",
            "backbone.layer2.0.shortcut.0.weight",
            "backbone.layer4.0.shortcut.1.bias",
            "projection_head.layers.0.weight",
            "projection_head.layers.2.bias",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        assert!(!names.contains(&"backbone.layer1.0.shortcut.0.weight"));
        let shape = |n: &str| specs.iter().find(|s| s.name == n).unwrap().shape.clone();
        assert_eq!(
            shape("backbone.layer3.0.conv1.weight"),
            vec![256, 128, 3, 3]
        );
        assert_eq!(
            shape("backbone.layer3.0.shortcut.0.weight"),
            vec![256, 128, 1, 1]
        );
        assert_eq!(shape("projection_head.layers.0.weight"), vec![1024, 512]);
        assert_eq!(shape("projection_head.layers.2.weight"), vec![128, 1024]);
        assert_eq!(
            shape("backbone.bn1.num_batches_tracked"),
            Vec::<usize>::new()
        );
        // ResNet18 has 11,173,962 backbone parameters (torchvision's count
        // minus the fc layer and with a 3×3 stem) plus the head.
        let params: usize = specs
            .iter()
            .filter(|s| s.trainable)
            .map(|s| s.shape.iter().product::<usize>())
            .sum();
        assert_eq!(params, 11_168_832 + 512 * 1024 + 1024 + 1024 * 128 + 128);
    }

    #[test]
    fn architecture_bounds() {
        assert_eq!(resnet18().check(), Ok(()));
        let mut a = resnet18();
        a.blocks = vec![2, 2, 2, 1 << 40];
        assert!(a.check().unwrap_err().contains("block count"));
        let mut a = resnet18();
        a.widths.pop();
        assert!(a.check().unwrap_err().contains("3 widths for 4 stages"));
        let mut a = resnet18();
        a.widths = vec![];
        a.blocks = vec![];
        assert!(a.check().unwrap_err().contains("number of stages"));
        let mut a = resnet18();
        a.out_dim = 0;
        assert!(a.check().unwrap_err().contains("out_dim is 0"));
    }
}
