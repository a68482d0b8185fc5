use clap::Parser as _;

fn main() {
    std::process::exit(migscope::cli::run(migscope::cli::Cli::parse()));
}
