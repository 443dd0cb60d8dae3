//! `pretrain`: contrastive pretraining with the 128-D output (stage 1 of 3).

use std::ffi::OsString;
use std::process::ExitCode;

use tsimcne_train::stage::pretrain;

use crate::flags::pretrain::{Args, command};
use crate::flags::train::{Request, parse};
use crate::{TrainBar, run_main, set_compute_threads};

/// The stage's `main`: `argv` is its command line, its name first.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let args: Args = match parse(command(), argv) {
        Request::PrintKey(key) => return super::print_key(&key),
        Request::Train(args) => args,
    };
    set_compute_threads(args.run.threads());
    run_main(|| {
        let cfg = args.config()?;
        let summary = pretrain(&cfg, &TrainBar::new(cfg.train.batch_size))?;
        super::report_training(&summary, cfg.train.epochs);
        Ok(())
    })
}
