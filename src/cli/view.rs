//! `migscope view` and `migscope watch` (under construction on its own branch).

#[derive(Debug, clap::Args)]
pub struct ViewArgs {}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {}

pub fn run_view(_args: ViewArgs) -> i32 {
    super::unusable("`view` is not built yet")
}

pub fn run_watch(_args: WatchArgs) -> i32 {
    super::unusable("`watch` is not built yet")
}
