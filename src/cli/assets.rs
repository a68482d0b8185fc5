//! What a release carries besides the binary, generated from the command line itself so it
//! never drifts from it: a man page per command (clap_mangen) and completions for bash, zsh
//! and fish (clap_complete). `migscope __dist-assets DIR` writes them for `cargo xtask dist`.

use std::{fs, io, path::Path};

use clap::CommandFactory as _;
use clap_complete::Shell;

/// The shells completions are made for, with the file name each one looks for.
pub const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "migscope.bash"),
    (Shell::Zsh, "_migscope"),
    (Shell::Fish, "migscope.fish"),
];

/// Writes `DIR/man1/migscope[-CMD].1` and `DIR/completions/<file>`.
pub fn write(dir: &Path) -> io::Result<()> {
    let man = dir.join("man1");
    let comp = dir.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&comp)?;
    let cmd = super::Cli::command();
    for c in std::iter::once(cmd.clone()).chain(
        cmd.get_subcommands()
            .map(|c| c.clone().name(format!("migscope-{}", c.get_name()))),
    ) {
        let name = c.get_name().to_owned();
        let mut out = Vec::new();
        clap_mangen::Man::new(c).render(&mut out)?;
        crate::outfile::write_then_rename(&man.join(format!("{name}.1")), &out)?;
    }
    for (shell, file) in SHELLS {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut super::Cli::command(), "migscope", &mut out);
        crate::outfile::write_then_rename(&comp.join(file), &out)?;
    }
    Ok(())
}
