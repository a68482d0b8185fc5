//! What a release carries, from the real binary: `--version` names the version, the git
//! commit, the SHA-256 of the embedded probe object (checked against the object itself) and
//! the aya version; `__dist-assets` writes a man page per command and bash/zsh/fish
//! completions that know every command.

use std::process::Command;

use sha2::Digest as _;

#[test]
fn version_names_commit_probe_hash_and_aya() {
    let o = Command::new(env!("CARGO_BIN_EXE_migscope"))
        .arg("--version")
        .output()
        .expect("run");
    assert!(o.status.success());
    let v = String::from_utf8_lossy(&o.stdout);
    let hash: String = sha2::Sha256::digest(migscope::capture::PROBE_OBJECT)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let want = format!("migscope {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(v.starts_with(&want), "{v}");
    assert!(
        v.contains(&format!(", probe sha256 {hash}, ")),
        "{v} vs {hash}"
    );
    assert!(v.trim_end().ends_with(", aya 0.14.0)"), "{v}");
    let commit = v
        .split("(commit ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .expect("commit");
    let hex = commit.trim_end_matches("-dirty");
    assert!(
        hex == "unknown" || hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{commit}"
    );
}

#[test]
fn dist_assets_are_man_pages_and_completions_for_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Command::new(env!("CARGO_BIN_EXE_migscope"))
        .arg("__dist-assets")
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(o.status.success(), "{o:?}");
    let commands = [
        "check", "fsm", "record", "drive", "export", "view", "watch", "doctor",
    ];
    let man = dir.path().join("man1");
    let page = std::fs::read_to_string(man.join("migscope.1")).expect("migscope.1");
    assert!(page.contains(".TH migscope 1"), "{page}");
    for c in commands {
        let p = std::fs::read_to_string(man.join(format!("migscope-{c}.1")))
            .unwrap_or_else(|e| panic!("migscope-{c}.1: {e}"));
        assert!(p.contains(&format!(".TH migscope-{c} 1")), "{p}");
    }
    for f in ["migscope.bash", "_migscope", "migscope.fish"] {
        let text = std::fs::read_to_string(dir.path().join("completions").join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        for c in commands {
            assert!(text.contains(c), "{f} lacks {c}");
        }
        assert!(text.contains("--format"), "{f} knows check --format");
        assert!(
            !text.contains("dist-assets"),
            "{f} must not offer the internal command"
        );
    }
}
