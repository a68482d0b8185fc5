//! What runs in the guest: the edu-mig module built against the guest's headers, the driver
//! self-test, the static (musl) migscope packed by `cargo xtask dist`, the L2 guest for the
//! QEMU cases, and the initramfs that carries them with `/init` (plus QEMU itself when a qemu-*
//! scenario runs, and tmux when the drive-tui scenario does).

use std::collections::BTreeSet;
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
/// The `-trace events=` file of the L2 QEMUs.
const QEMU_TRACE_EVENTS: &str = include_str!("../../../lab/guest/qemu-trace-events");

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

/// The L2 guest `lab/l2-dma` (a multiboot ELF32, no libc) with the host's gcc and ld.
pub fn build_l2(p: &Paths) -> Result<PathBuf> {
    let dir = p.root.join("lab/l2-dma");
    let (src, script) = (dir.join("l2-dma.c"), dir.join("l2-dma.ld"));
    let out = p.build.join("l2-dma/l2-dma.elf");
    fs::create_dir_all(out.parent().context("l2-dma path")?)?;
    let built = fs::metadata(&out).and_then(|m| m.modified()).ok();
    let mut fresh = built.is_some();
    for f in [&src, &script] {
        let m = fs::metadata(f)
            .and_then(|m| m.modified())
            .with_context(|| format!("reading {}", f.display()))?;
        fresh &= built.is_some_and(|b| b >= m);
    }
    if !fresh {
        run_checked(
            Command::new("cc")
                .args([
                    "-m32",
                    "-march=i686",
                    "-ffreestanding",
                    "-nostdlib",
                    "-static",
                    "-fno-pic",
                    "-no-pie",
                    "-fno-stack-protector",
                    "-fno-asynchronous-unwind-tables",
                    "-mgeneral-regs-only",
                    "-O2",
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-Wl,-m,elf_i386",
                    "-Wl,--build-id=none",
                    "-Wl,--no-warn-rwx-segments",
                ])
                .arg(format!("-Wl,-T,{}", script.display()))
                .arg("-o")
                .arg(&out)
                .arg(&src),
        )
        .context("building lab/l2-dma (needs gcc with -m32 code generation and GNU ld)")?;
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
    /// QEMU for the qemu-* scenarios (only then: other runs keep their size).
    pub qemu: Option<QemuFiles<'a>>,
    /// tmux (its extracted root, `fetch::fetch_tmux`) for the drive-tui scenario (only then).
    pub tmux: Option<&'a Path>,
    /// An earlier static build as `/bin/migscope-base` (drive-memory's before/after).
    pub base: Option<PathBuf>,
}

/// What the qemu-* scenarios add: the lab's QEMU (extracted root) and the L2 guest.
pub struct QemuFiles<'a> {
    pub root: &'a Path,
    pub l2: &'a Path,
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
    if let Some(b) = &g.base {
        let data = fs::read(b).with_context(|| format!("reading {}", b.display()))?;
        c.file("bin/migscope-base", 0o755, &data)?;
    }
    c.file("lib/modules/edu-mig.ko", 0o644, &fs::read(&g.edu_mig)?)?;
    for m in VFIO_MODULES {
        if let Some(ko) = find_module(&g.kernel.modules, m)? {
            c.file(&format!("lib/modules/{m}.ko"), 0o644, &ko)?;
        }
    }
    let w = c.finish()?;
    if g.qemu.is_some() || g.tmux.is_some() {
        // A second newc archive: the kernel unpacks concatenated archives in order.
        let mut c = Cpio::new(w);
        let mut have = BTreeSet::new();
        if let Some(q) = &g.qemu {
            write_qemu(&mut c, &mut have, q)?;
        }
        if let Some(t) = g.tmux {
            write_tmux(&mut c, &mut have, t)?;
        }
        c.finish()?;
    }
    fs::rename(&tmp, out)?;
    Ok(())
}

/// QEMU's binary as `/bin/qemu-system-x86_64` with its closure ([`add_dynamic`]), its
/// firmware (`/usr/share/qemu`, `/usr/share/seabios`), the L2 guest and the QEMU trace event
/// list.
fn write_qemu<W: std::io::Write>(
    c: &mut Cpio<W>,
    have: &mut BTreeSet<String>,
    q: &QemuFiles,
) -> Result<()> {
    let bin = q.root.join("usr/bin/qemu-system-x86_64");
    add_dynamic(c, have, &bin, "bin/qemu-system-x86_64", q.root)?;
    for d in ["usr", "usr/share", "lab"] {
        add_dir(c, have, d)?;
    }
    for share in ["usr/share/qemu", "usr/share/seabios"] {
        add_tree(c, &q.root.join(share), share)?;
    }
    c.file("lab/l2-dma.elf", 0o644, &fs::read(q.l2)?)?;
    c.file("lab/qemu-trace-events", 0o644, QEMU_TRACE_EVENTS.as_bytes())?;
    Ok(())
}

/// The C.UTF-8 locale of the host's libc-bin: the same glibc the closures carry (`ldd`
/// resolves libc to the host's).
const HOST_C_UTF8: &str = "/usr/lib/locale/C.utf8";

/// tmux as `/bin/tmux` with its closure ([`add_dynamic`]) and the C.UTF-8 locale: tmux will not
/// start without a UTF-8 `LC_CTYPE` ("need UTF-8 locale (LC_CTYPE) but have ANSI_X3.4-1968":
/// it tries `C.UTF-8` itself). It needs no terminfo: its server draws to no terminal, the
/// pane is read back with `capture-pane -p`.
fn write_tmux<W: std::io::Write>(
    c: &mut Cpio<W>,
    have: &mut BTreeSet<String>,
    root: &Path,
) -> Result<()> {
    add_dynamic(c, have, &root.join("usr/bin/tmux"), "bin/tmux", root)?;
    for d in ["usr", "usr/lib", "usr/lib/locale"] {
        add_dir(c, have, d)?;
    }
    add_tree(c, Path::new(HOST_C_UTF8), "usr/lib/locale/C.utf8")
        .context("the C.UTF-8 locale tmux needs (the host's libc-bin)")
}

/// Adds the dynamic binary `bin` as `dest` and its `ldd` closure, found with the libraries
/// extracted under `root` first ([`super::fetch::lib_path`]): libraries into
/// `/lib/x86_64-linux-gnu`, the loader where the binary names it. One helper for every
/// dynamic binary the guest carries (QEMU, tmux); `have` skips what an earlier one added.
fn add_dynamic<W: std::io::Write>(
    c: &mut Cpio<W>,
    have: &mut BTreeSet<String>,
    bin: &Path,
    dest: &str,
    root: &Path,
) -> Result<()> {
    let ldd = super::run_output(
        Command::new("ldd")
            .arg(bin)
            .env("LD_LIBRARY_PATH", super::fetch::lib_path(root)),
    )
    .with_context(|| format!("ldd on {}", bin.display()))?;
    let libs =
        ldd_closure(&ldd).with_context(|| format!("reading ldd's output for {}", bin.display()))?;
    for d in ["bin", "lib", "lib/x86_64-linux-gnu", "lib64"] {
        add_dir(c, have, d)?;
    }
    c.file(dest, 0o755, &fs::read(bin)?)?;
    for (dest, from) in libs {
        if have.insert(dest.clone()) {
            let data = fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            c.file(&dest, 0o755, &data)?;
        }
    }
    Ok(())
}

/// A directory, once per archive.
fn add_dir<W: std::io::Write>(c: &mut Cpio<W>, have: &mut BTreeSet<String>, d: &str) -> Result<()> {
    if have.insert(d.to_owned()) {
        c.dir(d)?;
    }
    Ok(())
}

/// Parses `ldd` output into (path in the guest, file on the host): `name => /path (addr)` goes
/// to `lib/x86_64-linux-gnu/name`, the loader (`/lib64/ld-linux-x86-64.so.2 (addr)`) to its
/// own path; the vDSO is skipped; a library `not found` is an error.
fn ldd_closure(out: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut libs = Vec::new();
    for l in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let addr = |s: &str| s.split(" (").next().unwrap_or(s).trim().to_owned();
        match l.split_once(" => ") {
            Some((name, path)) => {
                if path.starts_with("not found") {
                    bail!("{name} not found");
                }
                libs.push((
                    format!("lib/x86_64-linux-gnu/{name}"),
                    PathBuf::from(addr(path)),
                ));
            }
            None if l.starts_with('/') => {
                let p = addr(l);
                libs.push((p.trim_start_matches('/').to_owned(), PathBuf::from(p)));
            }
            None => {} // linux-vdso.so.1: in the kernel
        }
    }
    if !libs.iter().any(|(d, _)| d.starts_with("lib64/")) {
        bail!("no dynamic loader in ldd's output");
    }
    Ok(libs)
}

/// Adds the directory tree `dir` as `prefix` (symlinks followed: the copy is self-contained).
fn add_tree<W: std::io::Write>(c: &mut Cpio<W>, dir: &Path, prefix: &str) -> Result<()> {
    c.dir(prefix)?;
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let Some(name) = p.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let dest = format!("{prefix}/{name}");
        let meta = fs::metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        if meta.is_dir() {
            add_tree(c, &p, &dest)?;
        } else {
            c.file(&dest, 0o644, &fs::read(&p)?)?;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_maps_libraries_and_the_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd5a1e2000)
\tlibcapstone.so.4 => /cache/qemu/usr/lib/x86_64-linux-gnu/libcapstone.so.4 (0x00007f3a1c000000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3a1b000000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f3a1d000000)
";
        assert_eq!(
            ldd_closure(out).unwrap(),
            vec![
                (
                    "lib/x86_64-linux-gnu/libcapstone.so.4".to_string(),
                    PathBuf::from("/cache/qemu/usr/lib/x86_64-linux-gnu/libcapstone.so.4")
                ),
                (
                    "lib/x86_64-linux-gnu/libc.so.6".to_string(),
                    PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")
                ),
                (
                    "lib64/ld-linux-x86-64.so.2".to_string(),
                    PathBuf::from("/lib64/ld-linux-x86-64.so.2")
                ),
            ]
        );
        let missing = "\tlibfoo.so.1 => not found\n\t/lib64/ld-linux-x86-64.so.2 (0x1)\n";
        assert!(format!("{:#}", ldd_closure(missing).unwrap_err()).contains("libfoo.so.1"));
        assert!(ldd_closure("\tlinux-vdso.so.1 (0x1)\n").is_err());
    }
}
