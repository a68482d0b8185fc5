use clap::Parser as _;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = migscope::cli::dist_assets(&args) {
        std::process::exit(code);
    }
    let code = match migscope::cli::Cli::try_parse() {
        Ok(cli) => migscope::cli::run(cli),
        // Usage errors exit with check's "unusable" status; --help and --version exit 0.
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                migscope::cli::exit::UNUSABLE
            } else {
                0
            }
        }
    };
    std::process::exit(code);
}
