//! Developer tasks: the lab VM, the demo, the CI entry.

mod bench;

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("bench") {
        return bench::main(std::env::args().skip(2).collect());
    }
    eprintln!("usage: cargo xtask bench [--help]");
    std::process::ExitCode::from(2)
}
