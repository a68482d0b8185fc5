//! `migscope check` (under construction on its own branch).

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> i32 {
    super::unusable("`check` is not built yet")
}
