//! Shared plumbing of the stage binaries: progress bars and the exit path.
//! Each binary in `src/bin/` parses its arguments into a library config,
//! calls the library, and maps errors to an exit code. Nothing else.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tsimcne_data::{Progress, Unit};

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

/// The number of threads to use when the user gives none.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
