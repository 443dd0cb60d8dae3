//! The command line: each stage in `stages/` parses its flags (`flags/`)
//! into a library config, calls the library, and maps errors to an exit
//! code. Nothing else. The shared plumbing (progress bars, the exit path) is here;
//! `src/main.rs` is the one executable, `tsimcne`, that runs every stage.

pub mod flags;
pub mod links;
pub mod stages;

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tsimcne_data::{Progress, Unit};
use tsimcne_model::{DeviceSpec, Kernels};

/// A progress bar on stderr with a rate and an ETA. indicatif draws nothing
/// when stderr is not a terminal, so logs and CI stay clean.
#[derive(Debug, Default)]
pub struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    fn current(&self) -> Option<ProgressBar> {
        self.bar.lock().ok().and_then(|b| b.clone())
    }
}

impl Progress for Bar {
    fn begin(&self, phase: &str, total: Option<u64>, unit: Unit) {
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        let counts = match unit {
            Unit::Bytes => "{bytes}/{total_bytes} {bytes_per_sec}",
            Unit::Images => "{human_pos}/{human_len} images {per_sec}",
        };
        let template = format!("{{msg:>16}} [{{bar:30}}] {counts} ETA {{eta}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(phase.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut b) = self.bar.lock()
            && let Some(old) = b.replace(bar)
        {
            old.finish_and_clear();
        }
    }

    fn advance(&self, n: u64) {
        if let Some(b) = self.current() {
            b.inc(n);
        }
    }

    fn end(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(old) = b.take()
        {
            old.finish_and_clear();
        }
    }
}

/// Runs a binary's body: a user error becomes one `error: …` line on stderr
/// and exit code 1; no panic, no backtrace.
pub fn run_main(body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

/// `--kernels` on `--device`: not given, the device's default (ours on the
/// CPU, candle's on a GPU); ours on a GPU need a build with the `cuda` feature.
pub fn kernels_for(
    kernels: Option<Kernels>,
    device: DeviceSpec,
) -> anyhow::Result<Option<Kernels>> {
    if kernels == Some(Kernels::Fast) && !device.is_cpu() && !tsimcne_model::CUDA_BUILT {
        anyhow::bail!(
            "--kernels fast on --device {device} needs the CUDA build (scripts/build-cuda.sh)"
        );
    }
    Ok(kernels)
}

/// The number of threads to use when the user gives none.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Progress of a training stage: images trained, images/s, the loss and
/// the ETA of the whole run.
#[derive(Debug)]
pub struct TrainBar {
    bar: ProgressBar,
    batch: u64,
}

impl TrainBar {
    pub fn new(batch_size: usize) -> Self {
        Self {
            bar: ProgressBar::hidden(),
            batch: batch_size as u64,
        }
    }
}

impl tsimcne_train::Observer for TrainBar {
    fn start(&self, total_steps: u64, done_steps: u64) {
        self.bar.set_draw_target(ProgressDrawTarget::stderr());
        self.bar.set_length(total_steps * self.batch);
        self.bar.set_position(done_steps * self.batch);
        self.bar.reset_eta();
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {human_pos}/{human_len} images {per_sec} ETA {eta}",
        ) {
            self.bar.set_style(style.progress_chars("=> "));
        }
    }

    fn step(&self, epoch: usize, loss: f32) {
        self.bar
            .set_message(format!("epoch {epoch} loss {loss:.4}"));
        self.bar.inc(self.batch);
    }

    fn epoch(&self, log: &tsimcne_train::EpochLog) {
        let line = format!(
            "epoch {:>4}  loss {:.4}  lr {:.5}  {:.1} s  {:.0} images/s",
            log.epoch, log.loss, log.lr, log.seconds, log.images_per_s
        );
        // Off a terminal (logs, CI, SLURM) the bar is hidden: print plain lines.
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Makes candle's CPU kernels (and rayon) use `threads` threads. Call first
/// thing in `main`, before any thread exists: candle reads the variable when
/// it sizes its work.
pub fn set_compute_threads(threads: usize) {
    // SAFETY: called at the start of main, while the process has one thread,
    // so no other thread can read the environment concurrently.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}
