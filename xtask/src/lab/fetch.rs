//! Fetching the lab's ingredients from Debian's registry into `target/lab-cache/` with a
//! private apt state (the host's apt lists, cache and installed set are never touched).

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{Kernel, run_checked, run_output};

/// The Debian mirror and keyring the host's own apt sources use (bookworm).
const MIRROR: &str = "http://deb.debian.org/debian";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A private apt: its own sources list, lists and cache under `target/lab-cache/apt`.
pub struct Apt {
    dir: PathBuf,
    debs: PathBuf,
}

impl Apt {
    pub fn new(cache: &Path) -> Self {
        Apt {
            dir: cache.join("apt"),
            debs: cache.join("debs"),
        }
    }

    fn opts(&self) -> Vec<String> {
        let d = &self.dir;
        vec![
            format!(
                "-o=Dir::Etc::sourcelist={}",
                d.join("sources.list").display()
            ),
            "-o=Dir::Etc::sourceparts=-".into(),
            format!("-o=Dir::State::Lists={}", d.join("lists").display()),
            format!("-o=Dir::Cache={}", d.join("cache").display()),
            // An empty installed set: resolution must not depend on what the host has.
            "-o=Dir::State::status=/dev/null".into(),
            "-o=APT::Get::List-Cleanup=0".into(),
            "-o=Debug::NoLocking=1".into(),
            "-q".into(),
        ]
    }

    /// `apt-get update` into the private lists, once (or when `refresh`).
    pub fn update(&self, refresh: bool) -> Result<()> {
        let lists = self.dir.join("lists");
        let stamp = self.dir.join("updated");
        if stamp.exists() && !refresh {
            return Ok(());
        }
        if Command::new("apt-get").arg("--version").output().is_err() {
            bail!(
                "apt-get not found: the lab fetches Debian packages with apt-get (a Debian host is needed)"
            );
        }
        fs::create_dir_all(lists.join("partial"))?;
        fs::create_dir_all(self.dir.join("cache/archives/partial"))?;
        fs::write(
            self.dir.join("sources.list"),
            format!(
                "deb [signed-by={KEYRING}] {MIRROR} bookworm main\n\
                 deb [signed-by={KEYRING}] {MIRROR} bookworm-backports main\n"
            ),
        )?;
        let mut c = Command::new("apt-get");
        c.args(self.opts()).arg("update");
        run_checked(&mut c)
            .context("apt-get update (private lists for bookworm + bookworm-backports)")?;
        fs::write(stamp, "")?;
        Ok(())
    }

    fn cache(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("apt-cache");
        c.args(self.opts()).args(args);
        run_output(&mut c)
    }

    /// The candidate version of `pkg` in `suite` (from `apt-cache madison`).
    pub fn version_in(&self, pkg: &str, suite: &str) -> Result<String> {
        let out = self.cache(&["madison", pkg])?;
        for line in out.lines() {
            let cols: Vec<&str> = line.split('|').map(str::trim).collect();
            if cols.len() >= 3 && cols[0] == pkg && cols[2].contains(&format!(" {suite}/")) {
                return Ok(cols[1].to_string());
            }
        }
        bail!("{pkg} has no version in {suite}:\n{out}")
    }

    /// The first-alternative Depends of `pkg[=ver]`.
    pub fn depends(&self, spec: &str) -> Result<Vec<String>> {
        let out = self.cache(&["show", "--no-all-versions", spec])?;
        let mut deps = Vec::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("Depends:") {
                for alt in rest.split(',') {
                    let first = alt.split('|').next().unwrap_or("").trim();
                    let name = first.split([' ', '(', ':']).next().unwrap_or("").trim();
                    if !name.is_empty() {
                        deps.push(name.to_string());
                    }
                }
                break;
            }
        }
        Ok(deps)
    }

    /// Downloads `specs` (`name`, `name=ver` or `name/suite`) into the deb cache; returns the
    /// .deb paths. Already downloaded files are reused.
    pub fn download(&self, specs: &[String]) -> Result<Vec<PathBuf>> {
        fs::create_dir_all(&self.debs)?;
        let mut paths = Vec::new();
        let mut missing = Vec::new();
        for s in specs {
            match self.find_deb(s)? {
                Some(p) => paths.push(p),
                None => missing.push(s.clone()),
            }
        }
        if !missing.is_empty() {
            eprintln!("lab: downloading {}", missing.join(" "));
            let mut c = Command::new("apt-get");
            c.current_dir(&self.debs)
                .args(self.opts())
                .arg("download")
                .args(&missing);
            run_checked(&mut c).context("apt-get download")?;
            for s in &missing {
                match self.find_deb(s)? {
                    Some(p) => paths.push(p),
                    None => bail!("apt-get download did not produce a .deb for {s}"),
                }
            }
        }
        Ok(paths)
    }

    /// The cached .deb for a spec: name (and version when given) match the file name.
    fn find_deb(&self, spec: &str) -> Result<Option<PathBuf>> {
        let (name, ver) = match spec.split_once('=') {
            Some((n, v)) => (n, Some(v.replace(':', "%3a"))),
            None => (spec.split('/').next().unwrap_or(spec), None),
        };
        if !self.debs.exists() {
            return Ok(None);
        }
        for e in fs::read_dir(&self.debs)? {
            let p = e?.path();
            let Some(f) = p.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            let mut parts = f.split('_');
            if parts.next() != Some(name) {
                continue;
            }
            let fver = parts.next().unwrap_or("");
            if ver.as_deref().is_none_or(|v| v == fver) {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }
}

/// `dpkg -x` every deb into `dest` (once: a stamp file records the set).
pub fn extract(debs: &[PathBuf], dest: &Path) -> Result<()> {
    let names: Vec<String> = debs
        .iter()
        .filter_map(|d| d.file_name()?.to_str().map(String::from))
        .collect();
    let stamp = dest.join(".extracted");
    let want = names.join("\n");
    if fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }
    fs::create_dir_all(dest)?;
    for d in debs {
        run_checked(Command::new("dpkg").arg("-x").arg(d).arg(dest))
            .with_context(|| format!("dpkg -x {}", d.display()))?;
    }
    fs::write(stamp, want)?;
    Ok(())
}

fn installed_on_host(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// QEMU 10 from bookworm-backports plus the shared libraries the host lacks, extracted into
/// `<cache>/qemu`. Returns the extracted root.
pub fn fetch_qemu(apt: &Apt, cache: &Path) -> Result<PathBuf> {
    let root = cache.join("qemu");
    if root.join(READY).exists() {
        return Ok(root);
    }
    let ver = apt.version_in("qemu-system-x86", "bookworm-backports")?;
    let data = apt.version_in("qemu-system-data", "bookworm-backports")?;
    let seabios = apt.version_in("seabios", "bookworm-backports")?;
    let main = format!("qemu-system-x86={ver}");
    let specs = vec![
        main.clone(),
        format!("qemu-system-data={data}"),
        format!("seabios={seabios}"),
        "ipxe-qemu".to_string(),
    ];
    fetch_with_libs(apt, &root, specs, &main, "usr/bin/qemu-system-x86_64")?;
    Ok(root)
}

/// Debian's tmux (bookworm) plus the shared libraries the host lacks, extracted into
/// `<cache>/tmux`: the terminal the `drive-tui` scenario runs `drive --tui` in. Returns the
/// extracted root.
pub fn fetch_tmux(apt: &Apt, cache: &Path) -> Result<PathBuf> {
    let root = cache.join("tmux");
    if root.join(READY).exists() {
        return Ok(root);
    }
    let main = format!("tmux={}", apt.version_in("tmux", "bookworm")?);
    fetch_with_libs(apt, &root, vec![main.clone()], &main, "usr/bin/tmux")?;
    Ok(root)
}

/// Stamp of a root [`fetch_with_libs`] completed (it lists the packages).
const READY: &str = ".ready";

/// Downloads `specs` and the `lib*` packages of `main`'s Depends closure that the host does
/// not have, extracts them into `root`, and checks with `ldd` that the binary `bin` (a path
/// under `root`) finds every shared library (the fetched ones through [`lib_path`]). The one
/// way the lab fetches a dynamic binary for the guest (QEMU, tmux); the guest gets its closure
/// from `guest::add_dynamic`.
fn fetch_with_libs(
    apt: &Apt,
    root: &Path,
    mut specs: Vec<String>,
    main: &str,
    bin: &str,
) -> Result<()> {
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<String> = apt.depends(main)?.into();
    while let Some(p) = queue.pop_front() {
        if !p.starts_with("lib") || !seen.insert(p.clone()) || installed_on_host(&p) {
            continue;
        }
        specs.push(p.clone());
        queue.extend(apt.depends(&p)?);
    }
    let debs = apt.download(&specs)?;
    extract(&debs, root)?;
    let bin = root.join(bin);
    let out = run_output(
        Command::new("ldd")
            .arg(&bin)
            .env("LD_LIBRARY_PATH", lib_path(root)),
    )?;
    let missing: Vec<&str> = out.lines().filter(|l| l.contains("not found")).collect();
    if !missing.is_empty() {
        bail!(
            "{} still lacks shared libraries after fetching {specs:?}:\n{}",
            bin.display(),
            missing.join("\n")
        );
    }
    fs::write(root.join(READY), specs.join("\n"))?;
    Ok(())
}

/// The library directories of an extracted root, for `LD_LIBRARY_PATH`.
pub fn lib_path(root: &Path) -> String {
    ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"]
        .iter()
        .map(|p| root.join(p).display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Host build tools the lab needs that a fresh machine may lack (pahole for module BTF,
/// busybox for the guest), extracted into `<cache>/tools`.
pub fn fetch_tools(apt: &Apt, cache: &Path) -> Result<PathBuf> {
    let root = cache.join("tools");
    let specs = vec![
        "busybox-static".to_string(),
        "pahole".to_string(),
        "libbpf1".to_string(),
    ];
    let debs = apt.download(&specs)?;
    extract(&debs, &root)?;
    Ok(root)
}

/// Where one guest kernel's pieces live once fetched.
pub struct KernelFiles {
    /// `uname -r` of the guest, e.g. `6.12.95+deb12-amd64`.
    pub release: String,
    /// The uncompressed kernel for QEMU's PVH entry.
    pub vmlinux: PathBuf,
    /// `lib/modules/<release>` of the extracted image.
    pub modules: PathBuf,
    /// The arch-specific headers directory to `make -C`.
    pub headers: PathBuf,
}

/// Fetches the kernel image, headers, -common and kbuild for `k`, extracts them and the
/// vmlinux; fixes the headers' absolute include paths.
pub fn fetch_kernel(apt: &Apt, cache: &Path, k: Kernel) -> Result<KernelFiles> {
    let root = cache.join(format!("kernel-{}", k.name()));
    let stamp = root.join(".ready");
    if let Ok(release) = fs::read_to_string(&stamp) {
        let release = release.trim().to_string();
        return Ok(kernel_files(&root, release));
    }
    let suite = k.suite();
    let meta_ver = apt.version_in("linux-image-amd64", suite)?;
    let image = apt
        .depends(&format!("linux-image-amd64={meta_ver}"))?
        .into_iter()
        .find(|d| d.starts_with("linux-image-"))
        .with_context(|| format!("linux-image-amd64={meta_ver} names no image package"))?;
    let release = image.trim_start_matches("linux-image-").to_string();
    let headers = format!("linux-headers-{release}");
    let mut specs = vec![
        format!("{image}={meta_ver}"),
        format!("{headers}={meta_ver}"),
    ];
    for d in apt.depends(&format!("{headers}={meta_ver}"))? {
        if d.starts_with("linux-headers-") || d.starts_with("linux-kbuild-") {
            let v = apt.version_in(&d, suite)?;
            specs.push(format!("{d}={v}"));
        }
    }
    let debs = apt.download(&specs)?;
    extract(&debs, &root)?;
    let hdir = root.join(format!("usr/src/linux-headers-{release}"));
    fix_headers(&root, &hdir)?;
    let files = kernel_files(&root, release);
    if !files.vmlinux.exists() {
        extract_vmlinux(
            &root.join(format!("boot/vmlinuz-{}", files.release)),
            &files.vmlinux,
        )?;
    }
    fs::write(stamp, &files.release)?;
    Ok(files)
}

fn kernel_files(root: &Path, release: String) -> KernelFiles {
    KernelFiles {
        modules: root.join(format!("lib/modules/{release}")),
        vmlinux: root.join(format!("vmlinux-{release}")),
        headers: root.join(format!("usr/src/linux-headers-{release}")),
        release,
    }
}

/// The headers' Makefile and the kbuild symlinks name `/usr/src/...` and `/usr/lib/...`
/// absolutely; point them at the unpacked copy.
fn fix_headers(root: &Path, hdir: &Path) -> Result<()> {
    let mk = hdir.join("Makefile");
    let text = fs::read_to_string(&mk).with_context(|| format!("reading {}", mk.display()))?;
    let usr = root.join("usr");
    let usr = usr.display().to_string();
    if !text.contains(&usr) {
        let fixed = text.replace(" /usr/src/", &format!(" {usr}/src/"));
        fs::write(&mk, fixed)?;
    }
    // Absolute symlinks (scripts, tools -> /usr/lib/linux-kbuild-X/...) rebased onto root.
    for e in fs::read_dir(hdir)? {
        let p = e?.path();
        if let Ok(t) = fs::read_link(&p)
            && t.is_absolute()
            && !t.starts_with(root)
        {
            let rel = t.strip_prefix("/").unwrap_or(&t);
            fs::remove_file(&p)?;
            std::os::unix::fs::symlink(root.join(rel), &p)?;
        }
    }
    Ok(())
}

/// Extracts the uncompressed kernel from a bzImage (zstd or xz payload) using the setup
/// header's payload_offset/payload_length (Documentation/arch/x86/boot.rst).
pub fn extract_vmlinux(bz: &Path, out: &Path) -> Result<()> {
    let b = fs::read(bz).with_context(|| format!("reading {}", bz.display()))?;
    if b.len() < 0x250 || &b[0x202..0x206] != b"HdrS" {
        bail!("{} is not a bzImage (no HdrS)", bz.display());
    }
    let setup_sects = match b[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let pm = (setup_sects + 1) * 512;
    let off = u32::from_le_bytes([b[0x248], b[0x249], b[0x24a], b[0x24b]]) as usize;
    let len = u32::from_le_bytes([b[0x24c], b[0x24d], b[0x24e], b[0x24f]]) as usize;
    let payload = b
        .get(pm + off..pm + off + len)
        .context("bzImage payload out of range")?;
    // The kernel appends the decompressed size (4 bytes) after the compressed stream.
    let stream = &payload[..payload.len().saturating_sub(4)];
    let tool = if stream.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ["zstd", "-dcq"]
    } else if stream.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        ["xz", "-dcq"]
    } else {
        bail!(
            "{}: unknown payload compression {:02x?}",
            bz.display(),
            &stream[..6.min(stream.len())]
        );
    };
    let tmp = out.with_extension("partial");
    let comp = out.with_extension("payload");
    fs::write(&comp, stream)?;
    let f = fs::File::create(&tmp)?;
    let st = Command::new(tool[0])
        .arg(tool[1])
        .arg(&comp)
        .stdout(f)
        .status()
        .with_context(|| {
            format!(
                "running {} (install it: apt-get install {})",
                tool[0], tool[0]
            )
        })?;
    fs::remove_file(&comp)?;
    let head = fs::read(&tmp)
        .map(|v| v.get(..4).map(<[u8]>::to_vec))
        .ok()
        .flatten();
    if !st.success() || head.as_deref() != Some(b"\x7fELF") {
        bail!(
            "decompressing the payload of {} with {} failed ({st})",
            bz.display(),
            tool[0]
        );
    }
    fs::rename(&tmp, out)?;
    Ok(())
}
