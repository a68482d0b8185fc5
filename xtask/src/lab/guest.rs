//! What runs in the guest: the edu-mig module built against the guest's headers, the driver
//! self-test, the static (musl) migscope packed by `cargo xtask dist`, and the initramfs that carries them with `/init`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::cpio::Cpio;
use super::fetch::KernelFiles;
use super::{Paths, run_checked};

/// VFIO modules in load order (vfio_virqfd is a module on 6.1 and built in on 6.12).
const VFIO_MODULES: &[&str] = &[
    "irqbypass",
    "vfio",
    "vfio_virqfd",
    "vfio_iommu_type1",
    "vfio-pci-core",
    "vfio-pci",
];

const INIT: &str = include_str!("../../../lab/guest/init.sh");

/// Builds `lab/edu-mig` against `k`'s headers in a copy under `target/lab-build`; returns the .ko.
pub fn build_module(p: &Paths, k: &KernelFiles, tools: &Path) -> Result<PathBuf> {
    let src = p.root.join("lab/edu-mig");
    let dir = p.build.join(format!("edu-mig-{}", k.release));
    fs::create_dir_all(&dir)?;
    for f in ["Makefile", "edu-mig.c"] {
        let from = src.join(f);
        let to = dir.join(f);
        let new = fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        if fs::read(&to).ok().as_deref() != Some(&new[..]) {
            fs::write(&to, new)?;
        }
    }
    let path = format!(
        "{}:{}",
        tools.join("usr/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(&k.headers)
        .arg(format!("M={}", dir.display()))
        .arg("modules")
        .env("PATH", path);
    run_checked(&mut c).context("building lab/edu-mig (make -C <headers> M=...)")?;
    let ko = dir.join("edu-mig.ko");
    if !ko.exists() {
        bail!("make succeeded but {} is missing", ko.display());
    }
    Ok(ko)
}

/// The driver self-test, static so it runs in the busybox guest.
pub fn build_selftest(p: &Paths) -> Result<PathBuf> {
    let src = p.root.join("lab/selftest/edu-selftest.c");
    let out = p.build.join("selftest/edu-selftest");
    fs::create_dir_all(out.parent().context("selftest path")?)?;
    let fresh = match (fs::metadata(&src), fs::metadata(&out)) {
        (Ok(s), Ok(o)) => o.modified()? >= s.modified()?,
        _ => false,
    };
    if !fresh {
        run_checked(
            Command::new("cc")
                .args(["-static", "-O2", "-Wall", "-o"])
                .arg(&out)
                .arg(&src),
        )
        .context("building lab/selftest (needs a C compiler and static libc: libc6-dev)")?;
    }
    Ok(out)
}

/// The migscope the busybox guest runs: the one packed in the release tarball (`cargo xtask
/// dist`, a static musl build with the probe embedded): one build for the release and the lab.
pub fn build_migscope() -> Result<crate::dist::Dist> {
    eprintln!("lab: building the release for the guest (cargo xtask dist)");
    let d = crate::dist::run_dist().context("building the release (cargo xtask dist)")?;
    eprintln!(
        "lab: the guest gets {} from {}",
        d.version_line,
        d.tarball.display()
    );
    Ok(d)
}

/// Everything the initramfs carries.
pub struct GuestFiles<'a> {
    pub kernel: &'a KernelFiles,
    pub busybox: PathBuf,
    pub edu_mig: PathBuf,
    pub selftest: PathBuf,
    pub migscope: PathBuf,
    pub run_sh: String,
}

/// Writes the initramfs (newc cpio, uncompressed) to `out`.
pub fn write_initramfs(g: &GuestFiles, out: &Path) -> Result<()> {
    let tmp = out.with_extension("partial");
    let f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut c = Cpio::new(std::io::BufWriter::new(f));
    for d in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "out",
        "lab",
        "lib",
        "lib/modules",
        "usr",
    ] {
        c.dir(d)?;
    }
    c.file(
        "bin/busybox",
        0o755,
        &fs::read(&g.busybox).context("reading busybox")?,
    )?;
    c.file("init", 0o755, INIT.as_bytes())?;
    c.file("lab/run.sh", 0o644, g.run_sh.as_bytes())?;
    c.file(
        "bin/migscope",
        0o755,
        &fs::read(&g.migscope).context("reading migscope")?,
    )?;
    c.file("bin/edu-selftest", 0o755, &fs::read(&g.selftest)?)?;
    c.file("lib/modules/edu-mig.ko", 0o644, &fs::read(&g.edu_mig)?)?;
    for m in VFIO_MODULES {
        if let Some(ko) = find_module(&g.kernel.modules, m)? {
            c.file(&format!("lib/modules/{m}.ko"), 0o644, &ko)?;
        }
    }
    c.finish()?;
    fs::rename(&tmp, out)?;
    Ok(())
}

/// Finds `<name>.ko[.xz|.zst]` under `lib/modules/<rel>/kernel` and returns it uncompressed
/// (busybox insmod takes plain .ko).
fn find_module(modules: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let mut stack = vec![modules.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                stack.push(p);
                continue;
            }
            let Some(f) = p.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            let tool = if f == format!("{name}.ko") {
                None
            } else if f == format!("{name}.ko.xz") {
                Some("xz")
            } else if f == format!("{name}.ko.zst") {
                Some("zstd")
            } else {
                continue;
            };
            return Ok(Some(match tool {
                None => fs::read(&p)?,
                Some(t) => {
                    let out = Command::new(t).arg("-dc").arg(&p).output()?;
                    if !out.status.success() {
                        bail!("{t} -dc {} failed", p.display());
                    }
                    out.stdout
                }
            }));
        }
    }
    Ok(None)
}
