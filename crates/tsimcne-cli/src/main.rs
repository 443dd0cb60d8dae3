//! `tsimcne`: every stage of the pipeline in one executable; see
//! [`tsimcne_cli::stages`].

fn main() -> std::process::ExitCode {
    tsimcne_cli::stages::main(std::env::args_os().collect())
}
