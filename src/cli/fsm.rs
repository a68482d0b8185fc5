//! `migscope fsm` (under construction).

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {}

pub fn run(cmd: Cmd) -> i32 {
    match cmd {}
}
