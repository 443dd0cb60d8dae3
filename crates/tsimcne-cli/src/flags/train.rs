//! The flags every training stage (`pretrain`, `project`, `finetune`)
//! shares, each written once and flattened into the stages' commands.

use std::ffi::OsString;

use clap::{Args, Command, FromArgMatches};
use tsimcne_format::model_config::{AugmentSettings, KnnSpace};
use tsimcne_model::{ConvMath, DeviceSpec, Kernels};
use tsimcne_train::GpuPath;
use tsimcne_train::stage::{LossKind, TrainOptions};

use crate::{default_threads, kernels_for};

/// The schedule's flags, written once; each stage sets its own defaults
/// (and `--lr`'s default text) on its clap command ([`Schedule::defaults`]),
/// so `--help` shows them.
#[derive(Debug, Clone, Copy, Args)]
pub struct Schedule {
    /// Epochs of this stage.
    #[arg(long)]
    epochs: Option<usize>,
    /// Learning rate [default: the stage's recipe value, from the batch size].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Warm-up epochs (linear from 0).
    #[arg(long)]
    warmup: Option<usize>,
}

impl Schedule {
    /// `cmd` with this stage's default epochs and warm-up, and the text of
    /// its recipe learning rate.
    pub fn defaults(
        cmd: clap::Command,
        epochs: &'static str,
        warmup: &'static str,
        lr: &str,
    ) -> clap::Command {
        cmd.mut_arg("epochs", |a| a.default_value(epochs))
            .mut_arg("warmup", |a| a.default_value(warmup))
            .mut_arg("lr", |a| a.help(format!("Learning rate [default: {lr}]")))
    }

    /// The epochs (always set: [`Schedule::defaults`] gives them a default).
    pub fn epochs(&self) -> usize {
        self.epochs.unwrap_or(0)
    }

    /// The warm-up epochs (as [`Schedule::epochs`]).
    pub fn warmup(&self) -> usize {
        self.warmup.unwrap_or(0)
    }
}

/// The library's training options from a stage's schedule and the flags
/// every training stage shares; the library checks their ranges.
pub fn train_options(
    schedule: Schedule,
    train: &TrainArgs,
    run: &RunArgs,
    augment: &AugmentArgs,
) -> anyhow::Result<TrainOptions> {
    Ok(TrainOptions {
        epochs: schedule.epochs(),
        batch_size: train.batch_size,
        lr: schedule.lr,
        warmup: schedule.warmup(),
        weight_decay: train.weight_decay,
        seed: train.seed,
        loss: train.loss,
        threads: run.threads(),
        checkpoint_every: run.checkpoint_every,
        restart: run.restart,
        device: run.device,
        kernels: run.kernels()?,
        conv_math: run.conv_math,
        gpu_path: run.gpu_path,
        augment: augment.settings()?,
    })
}

/// What every training stage optimises, besides its schedule.
#[derive(Debug, Clone, Copy, Args)]
pub struct TrainArgs {
    /// Images per batch; each image gives two views.
    #[arg(long, default_value_t = 512)]
    pub batch_size: usize,
    /// SGD's L2 weight decay.
    #[arg(long, default_value_t = tsimcne_train::sgd::SgdConfig::default().weight_decay)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = LossKind::Cauchy)]
    pub loss: LossKind,
}

/// How a training stage runs: where, on how many threads, how often it
/// saves. The thread count and the checkpoint interval never change a
/// result; the device and kernels change it within float rounding (and
/// `--conv-math tf32` more), which is why they are recorded in config.json.
#[derive(Debug, Clone, Copy, Args)]
pub struct RunArgs {
    /// Threads for training and augmentation [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where to train: cpu, cuda (the first GPU) or cuda:N; a GPU needs the
    /// CUDA build (scripts/build-cuda.sh).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// The backbone's implementation [default: fast; candle where fast does not run].
    #[arg(long, value_enum)]
    pub kernels: Option<Kernels>,
    /// On a GPU with our kernels: the convolutions' arithmetic, TF32 tensor
    /// cores (PyTorch's default for convolutions), exact f32 (the CPU's
    /// results within float rounding; slower), or bf16 activations (not yet
    /// run on a GPU); recorded in config.json. The CPU computes exact f32.
    #[arg(long, value_enum, default_value = "tf32")]
    pub conv_math: ConvMath,
    /// On a GPU with our kernels: the forms that passed the GPU tests, or
    /// also the newer ones (same results within rounding; recorded in
    /// config.json).
    #[arg(long, value_enum, default_value = "tested")]
    pub gpu_path: GpuPath,
    /// Save a checkpoint every N epochs.
    #[arg(long, default_value_t = 1)]
    pub checkpoint_every: usize,
    /// Start over, discarding a checkpoint made with other settings.
    #[arg(long)]
    pub restart: bool,
    /// Print the run's key and exit: every setting the result depends on,
    /// given or default, one `--flag=value` per line (not the paths, which
    /// a pipeline keys by content, nor the settings that change nothing
    /// beyond rounding: threads, checkpoint interval, device, conv math,
    /// GPU path).
    #[arg(long)]
    pub print_key: bool,
}

impl RunArgs {
    /// `--threads`, or all cores.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(default_threads).max(1)
    }

    /// `--kernels` checked against `--device` (see [`kernels_for`]).
    pub fn kernels(&self) -> anyhow::Result<Option<Kernels>> {
        kernels_for(self.kernels, self.device)
    }
}

/// The augmentation flags every training stage shares; the defaults are
/// the recipe's.
#[derive(Debug, Clone, Copy, Args)]
pub struct AugmentArgs {
    /// Lower bound of the random crop's area scale (RandomResizedCrop scale
    /// CROP_MIN–1); larger is weaker.
    #[arg(long, default_value_t = AugmentSettings::RECIPE.crop_min)]
    pub crop_min: f64,
    /// Probability of the colour jitter (brightness, contrast, saturation,
    /// hue 0.4/0.4/0.4/0.1); 0 turns it off.
    #[arg(long, default_value_t = AugmentSettings::RECIPE.jitter_p)]
    pub jitter_p: f64,
    /// Opt-in, not t-SimCNE: make each image's second view from one of its
    /// K nearest images in pixel space (Euclidean), as in contrastive
    /// neighbour embeddings; 0 keeps both views of the image itself. Pixel
    /// neighbours are semantic on simple images (digits, Fashion-MNIST), not
    /// on natural ones (CIFAR).
    #[arg(long, default_value_t = AugmentSettings::RECIPE.knn_positives, value_name = "K")]
    pub knn_positives: usize,
    /// Where the --knn-positives neighbours are found: pixels, features (the
    /// backbone features of the --from model; 2-D stages), both (either
    /// list) or joint (one list, by the mean of the pixel and the feature
    /// cosine similarities, each space centred on its mean).
    #[arg(long, value_enum, default_value_t = KnnSpace::Pixels)]
    pub knn_space: KnnSpace,
    /// Recompute the feature-space neighbours from the model being trained
    /// every N epochs (0: never; a 2-D stage computes them once at its start).
    #[arg(long, default_value_t = AugmentSettings::RECIPE.knn_refresh, value_name = "N")]
    pub knn_refresh: usize,
}

impl AugmentArgs {
    /// The settings, checked.
    pub fn settings(self) -> anyhow::Result<AugmentSettings> {
        let s = AugmentSettings {
            crop_min: self.crop_min,
            jitter_p: self.jitter_p,
            knn_positives: self.knn_positives,
            knn_space: self.knn_space,
            knn_refresh: self.knn_refresh,
        };
        s.check()
            .map_err(|e| anyhow::anyhow!("--crop-min/--jitter-p: {e}"))?;
        if s.knn_positives == 0 && (!s.knn_space.is_pixels() || s.knn_refresh > 0) {
            anyhow::bail!("--knn-space and --knn-refresh need --knn-positives K > 0");
        }
        Ok(s)
    }
}

/// What a training stage's command line asks for.
#[derive(Debug)]
pub enum Request<A> {
    /// `--print-key`: print the run's key ([`run_key`]) and exit.
    PrintKey(String),
    /// Train with these flags.
    Train(A),
}

/// A training stage's command line `argv` parsed by its command `cmd`
/// (clap prints the usage and exits on a bad one).
pub fn parse<A: FromArgMatches>(cmd: Command, argv: Vec<OsString>) -> Request<A> {
    let matches = cmd.clone().get_matches_from(argv);
    if matches.get_flag("print_key") {
        return Request::PrintKey(run_key(&cmd, &matches));
    }
    Request::Train(A::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

/// The arguments that do not key a run: the paths (keyed by their content
/// by whoever runs the stage), how the run starts or reports, and the
/// library's result-neutral settings.
const NOT_IN_KEY: [&str; 5] = ["images", "from", "out", "restart", "print_key"];

/// A training stage's key (`--print-key`): each argument of `cmd` that has
/// a value in `matches`, given or default, as `--flag=value`, sorted; not
/// the [`NOT_IN_KEY`] ones nor the library's
/// [`RESULT_NEUTRAL_FIELDS`](tsimcne_format::model_config::RESULT_NEUTRAL_FIELDS).
pub fn run_key(cmd: &clap::Command, matches: &clap::ArgMatches) -> String {
    use tsimcne_format::model_config::RESULT_NEUTRAL_FIELDS;
    let mut lines: Vec<String> = cmd
        .get_arguments()
        .filter_map(|arg| {
            let id = arg.get_id().as_str();
            let long = arg.get_long()?;
            if NOT_IN_KEY.contains(&id) || RESULT_NEUTRAL_FIELDS.contains(&id) {
                return None;
            }
            let values = matches.try_get_raw(id).ok()??;
            let values: Vec<String> = values.map(|v| v.to_string_lossy().into_owned()).collect();
            Some(format!("--{long}={}", values.join(",")))
        })
        .collect();
    lines.sort();
    lines.iter().map(|l| format!("{l}\n")).collect()
}
