//! `project`: t-SimCNE stage 2 (fresh 2-D output layer, trained alone).

fn main() -> std::process::ExitCode {
    tsimcne_cli::two_d::main(tsimcne_train::stage::TwoDStage::Project)
}
