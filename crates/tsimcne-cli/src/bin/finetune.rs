//! `finetune`: t-SimCNE stage 3 (everything trained, lr / 1000).

fn main() -> std::process::ExitCode {
    tsimcne_cli::two_d::main(tsimcne_train::stage::TwoDStage::Finetune)
}
