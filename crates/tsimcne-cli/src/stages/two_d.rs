//! `project` and `finetune`: the 2-D stages (2 and 3 of 3).

use std::ffi::OsString;
use std::process::ExitCode;

use tsimcne_train::stage::{TwoDStage, train_2d};

use crate::flags::train::{Request, parse};
use crate::flags::two_d::{Cli, command};
use crate::{TrainBar, run_main, set_compute_threads};

/// `main` of `project` and `finetune`: `argv` is the command line, the
/// stage's name first.
pub fn main(stage: TwoDStage, argv: Vec<OsString>) -> ExitCode {
    let args = match parse::<Cli>(command(stage), argv) {
        Request::PrintKey(key) => return super::print_key(&key),
        Request::Train(cli) => cli.args,
    };
    set_compute_threads(args.run.threads());
    run_main(|| {
        let cfg = args.config(stage)?;
        let summary = train_2d(&cfg, &TrainBar::new(cfg.train.batch_size))?;
        super::report_training(&summary, cfg.train.epochs);
        Ok(())
    })
}
