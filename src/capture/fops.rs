//! The migration data files' `file_operations`, found in the running kernel so that the
//! direct hooks (`record --hooks direct`) can put kprobes on their `read`, `write`,
//! `unlocked_ioctl` and `release` instead of tracing every read/write syscall of the host.
//!
//! Each VFIO PCI variant driver (mlx5-vfio-pci's `mlx5vf_save_fops`, hisi_acc's,
//! edu-mig's `edu_file_fops`) defines its own data file operations. They are found at
//! startup, read-only:
//! 1. the modules that depend on `vfio_pci_core` (`/proc/modules`, its dependents column);
//! 2. their data symbols and `__this_module` in `/proc/kallsyms` (root sees the addresses;
//!    static data is listed with `CONFIG_KALLSYMS_ALL`, as distribution kernels build);
//! 3. each symbol's first bytes read from `/proc/kcore` (an ELF core file whose program
//!    headers map kernel virtual addresses to file offsets): a `struct file_operations` of
//!    that module starts with `owner == &__this_module`;
//! 4. its `read`, `write`, `unlocked_ioctl`, `release` pointers, at the offsets the kernel's
//!    own BTF (`/sys/kernel/btf/vmlinux`) gives for `struct file_operations`, each resolved
//!    back to a text symbol of the same module (a struct that only looks like one is
//!    skipped: every non-null pointer must be such a symbol).
//!
//! A module loaded after recording started is not seen (the trace header says which
//! modules' files are hooked).

use std::{
    collections::HashMap,
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    os::unix::fs::FileExt,
    path::Path,
};

/// One module's data file operations and the functions they point at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataFops {
    pub module: String,
    /// The `file_operations` symbol, e.g. `edu_file_fops`.
    pub symbol: String,
    pub read: Option<String>,
    pub write: Option<String>,
    pub ioctl: Option<String>,
    pub release: Option<String>,
}

/// The `struct file_operations` members migscope hooks, byte offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FopsLayout {
    pub owner: usize,
    pub read: usize,
    pub write: usize,
    pub unlocked_ioctl: usize,
    pub release: usize,
}

/// The modules that use `dep`: its `/proc/modules` line's fourth column
/// (`name size refs user1,user2, state addr`; `-` when none).
pub fn dependents(proc_modules: &str, dep: &str) -> Vec<String> {
    proc_modules
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == dep).then(|| f.nth(2))?
        })
        .map(|users| {
            users
                .split(',')
                .filter(|u| !u.is_empty() && *u != "-")
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A `/proc/kallsyms` line: address, type letter, name, module (`[mod]`, `None`: vmlinux).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sym {
    pub addr: u64,
    pub kind: char,
    pub name: String,
    pub module: Option<String>,
}

/// The symbols of `modules` in a `/proc/kallsyms` text.
pub fn module_symbols(kallsyms: &str, modules: &[String]) -> Vec<Sym> {
    kallsyms
        .lines()
        .filter_map(|l| {
            if !l.ends_with(']') {
                return None;
            }
            let mut f = l.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let kind = f.next()?.chars().next()?;
            let name = f.next()?.to_owned();
            let module = f
                .next()
                .map(|m| m.trim_start_matches('[').trim_end_matches(']').to_owned());
            let m = module.as_deref()?;
            modules.iter().any(|x| x == m).then_some(Sym {
                addr,
                kind,
                name,
                module,
            })
        })
        .collect()
}

/// Which of `names` are kernel functions in a `/proc/kallsyms` text (text symbols), in one
/// pass over it.
pub fn functions_present<'a>(kallsyms: &str, names: &[&'a str]) -> Vec<&'a str> {
    let mut found: Vec<&'a str> = Vec::new();
    for l in kallsyms.lines() {
        let mut f = l.split_whitespace();
        let _ = f.next();
        if !matches!(f.next(), Some("t" | "T")) {
            continue;
        }
        if let Some(n) = f.next()
            && let Some(hit) = names.iter().find(|x| **x == n)
            && !found.contains(hit)
        {
            found.push(hit);
        }
    }
    found
}

/// Kernel memory through `/proc/kcore`: its PT_LOAD program headers as (vaddr, size,
/// file offset).
pub struct Kcore {
    file: File,
    loads: Vec<(u64, u64, u64)>,
}

const PT_LOAD: u32 = 1;

impl Kcore {
    pub fn open(path: &Path) -> Result<Kcore, String> {
        let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut eh = [0u8; 64];
        file.read_exact(&mut eh)
            .map_err(|e| format!("{}: ELF header: {e}", path.display()))?;
        let loads = program_headers(&eh, |off, buf| {
            file.seek(SeekFrom::Start(off))?;
            file.read_exact(buf)
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Kcore { file, loads })
    }

    /// `buf.len()` bytes of kernel memory at `vaddr`.
    pub fn read(&self, vaddr: u64, buf: &mut [u8]) -> Result<(), String> {
        let off = file_offset(&self.loads, vaddr, buf.len() as u64)
            .ok_or_else(|| format!("/proc/kcore does not map {vaddr:#x}"))?;
        self.file
            .read_exact_at(buf, off)
            .map_err(|e| format!("/proc/kcore at {vaddr:#x}: {e}"))
    }

    pub fn u64_at(&self, vaddr: u64) -> Result<u64, String> {
        let mut b = [0u8; 8];
        self.read(vaddr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// The PT_LOAD headers of a little-endian ELF64 file whose first 64 bytes are `eh`;
/// `read(off, buf)` reads the file.
fn program_headers(
    eh: &[u8; 64],
    mut read: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
) -> Result<Vec<(u64, u64, u64)>, String> {
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return Err("not a little-endian ELF64 file".to_owned());
    }
    let u16_at = |o: usize| u16::from_le_bytes([eh[o], eh[o + 1]]);
    let phoff = u64::from_le_bytes(eh[32..40].try_into().map_err(|_| "e_phoff")?);
    let phentsize = u16_at(54) as usize;
    let phnum = u16_at(56) as usize;
    if phentsize < 56 {
        return Err(format!("e_phentsize {phentsize}"));
    }
    let mut out = Vec::new();
    let mut ph = vec![0u8; phentsize];
    for i in 0..phnum {
        read(phoff + (i * phentsize) as u64, &mut ph).map_err(|e| format!("phdr {i}: {e}"))?;
        let u32_at = |o: usize| u32::from_le_bytes([ph[o], ph[o + 1], ph[o + 2], ph[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&ph[o..o + 8]);
            u64::from_le_bytes(b)
        };
        if u32_at(0) == PT_LOAD {
            // p_offset at 8, p_vaddr at 16, p_filesz at 32.
            out.push((u64_at(16), u64_at(32), u64_at(8)));
        }
    }
    Ok(out)
}

/// The file offset of `len` bytes at `vaddr` inside one PT_LOAD segment.
fn file_offset(loads: &[(u64, u64, u64)], vaddr: u64, len: u64) -> Option<u64> {
    loads.iter().find_map(|&(va, size, off)| {
        let end = va.checked_add(size)?;
        (vaddr >= va && vaddr.checked_add(len)? <= end).then(|| off + (vaddr - va))
    })
}

/// Byte offsets of the members of struct `name` in a raw BTF blob
/// (Documentation/bpf/btf.rst: header, type section, string section).
pub fn struct_members(btf: &[u8], name: &str) -> Result<HashMap<String, usize>, String> {
    let u32_at = |o: usize| -> Result<u32, String> {
        btf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("BTF cut at byte {o}"))
    };
    if btf.len() < 24 || btf[0..2] != [0x9f, 0xeb] {
        return Err("not little-endian BTF (magic 0xeB9F)".to_owned());
    }
    let hdr_len = u32_at(4)? as usize;
    let type_off = hdr_len + u32_at(8)? as usize;
    let type_len = u32_at(12)? as usize;
    let str_off = hdr_len + u32_at(16)? as usize;
    let str_len = u32_at(20)? as usize;
    let strings = btf
        .get(str_off..str_off + str_len)
        .ok_or("BTF string section out of bounds")?;
    let string = |o: u32| -> &str {
        let s = strings.get(o as usize..).unwrap_or(&[]);
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    };
    let mut p = type_off;
    let end = type_off + type_len;
    while p + 12 <= end {
        let name_off = u32_at(p)?;
        let info = u32_at(p + 4)?;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let kflag = info >> 31 == 1;
        p += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,          // INT, VAR, DECL_TAG
            3 => 12,                   // ARRAY
            4 | 5 => vlen * 12,        // STRUCT, UNION
            6 => vlen * 8,             // ENUM
            13 => vlen * 8,            // FUNC_PROTO
            15 => vlen * 12,           // DATASEC
            19 => vlen * 12,           // ENUM64
            2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
            k => return Err(format!("BTF type kind {k} unknown at byte {}", p - 12)),
        };
        if kind == 4 && string(name_off) == name {
            let mut out = HashMap::new();
            for m in 0..vlen {
                let o = p + m * 12;
                let bits = u32_at(o + 8)?;
                let bits = if kflag { bits & 0xff_ffff } else { bits };
                out.insert(string(u32_at(o)?).to_owned(), (bits / 8) as usize);
            }
            return Ok(out);
        }
        p += extra;
    }
    Err(format!("no struct {name} in the kernel's BTF"))
}

/// The layout of `struct file_operations` from the kernel's BTF.
pub fn fops_layout(btf: &[u8]) -> Result<FopsLayout, String> {
    let m = struct_members(btf, "file_operations")?;
    let get = |f: &str| {
        m.get(f)
            .copied()
            .ok_or_else(|| format!("struct file_operations has no member {f}"))
    };
    Ok(FopsLayout {
        owner: get("owner")?,
        read: get("read")?,
        write: get("write")?,
        unlocked_ioctl: get("unlocked_ioctl")?,
        release: get("release")?,
    })
}

/// Finds the data file operations of the modules depending on `dep` (see the module doc).
/// `Ok(empty)`: no such module is loaded.
/// `kallsyms`: the text of `/proc/kallsyms`.
pub fn discover(dep: &str, kallsyms: &str) -> Result<Vec<DataFops>, String> {
    let modules =
        std::fs::read_to_string("/proc/modules").map_err(|e| format!("/proc/modules: {e}"))?;
    let mods = dependents(&modules, dep);
    if mods.is_empty() {
        return Ok(Vec::new());
    }
    let syms = module_symbols(kallsyms, &mods);
    if syms.iter().all(|s| s.addr == 0) {
        return Err("/proc/kallsyms shows no addresses (kptr_restrict; not root?)".to_owned());
    }
    let btf = std::fs::read("/sys/kernel/btf/vmlinux")
        .map_err(|e| format!("/sys/kernel/btf/vmlinux: {e}"))?;
    let layout = fops_layout(&btf)?;
    let kcore = Kcore::open(Path::new("/proc/kcore"))?;
    Ok(find_fops(&syms, &layout, |a| kcore.u64_at(a)))
}

/// The `file_operations` among `syms`: data symbols whose `owner` is their module's
/// `__this_module` and whose hooked pointers all name text symbols of that module.
pub fn find_fops(
    syms: &[Sym],
    layout: &FopsLayout,
    read: impl Fn(u64) -> Result<u64, String>,
) -> Vec<DataFops> {
    let this: HashMap<&str, u64> = syms
        .iter()
        .filter(|s| s.name == "__this_module")
        .filter_map(|s| Some((s.module.as_deref()?, s.addr)))
        .collect();
    let text: HashMap<(u64, &str), &str> = syms
        .iter()
        .filter(|s| matches!(s.kind, 't' | 'T'))
        .filter_map(|s| Some(((s.addr, s.module.as_deref()?), s.name.as_str())))
        .collect();
    let mut out = Vec::new();
    for s in syms {
        let Some(m) = s.module.as_deref() else {
            continue;
        };
        if !matches!(s.kind, 'd' | 'D' | 'r' | 'R') || s.name == "__this_module" {
            continue;
        }
        let Some(&owner) = this.get(m) else {
            continue;
        };
        if read(s.addr + layout.owner as u64) != Ok(owner) {
            continue;
        }
        let func = |off: usize| -> Result<Option<String>, ()> {
            match read(s.addr + off as u64) {
                Ok(0) => Ok(None),
                Ok(a) => text.get(&(a, m)).map(|n| Some((*n).to_owned())).ok_or(()),
                Err(_) => Err(()),
            }
        };
        let (Ok(r), Ok(w), Ok(i), Ok(rel)) = (
            func(layout.read),
            func(layout.write),
            func(layout.unlocked_ioctl),
            func(layout.release),
        ) else {
            continue;
        };
        if r.is_none() && w.is_none() {
            continue;
        }
        out.push(DataFops {
            module: m.to_owned(),
            symbol: s.name.clone(),
            read: r,
            write: w,
            ioctl: i,
            release: rel,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULES: &str = "edu_mig 36864 0 - Live 0xffffffffc0a00000 (OE)\n\
        vfio_pci 16384 0 - Live 0xffffffffc09f0000\n\
        vfio_pci_core 94208 2 edu_mig,vfio_pci, Live 0xffffffffc09c0000\n\
        mlx5_vfio_pci 45056 0 - Live 0xffffffffc0980000\n";

    #[test]
    fn dependents_are_the_users_column_of_the_dependency() {
        assert_eq!(
            dependents(MODULES, "vfio_pci_core"),
            ["edu_mig", "vfio_pci"]
        );
        assert!(dependents(MODULES, "edu_mig").is_empty());
        assert!(dependents(MODULES, "absent").is_empty());
    }

    fn sym(addr: u64, kind: char, name: &str, m: &str) -> Sym {
        Sym {
            addr,
            kind,
            name: name.to_owned(),
            module: Some(m.to_owned()),
        }
    }

    const LAYOUT: FopsLayout = FopsLayout {
        owner: 0,
        read: 16,
        write: 24,
        unlocked_ioctl: 80,
        release: 128,
    };

    #[test]
    fn fops_are_structs_owned_by_their_module_pointing_at_its_functions() {
        let syms = vec![
            sym(0x1000, 'd', "__this_module", "edu_mig"),
            sym(0x2000, 'r', "edu_file_fops", "edu_mig"),
            sym(0x3000, 'r', "edu_lookalike", "edu_mig"),
            sym(0x4000, 'd', "edu_params", "edu_mig"),
            sym(0x10, 't', "edu_file_read", "edu_mig"),
            sym(0x20, 't', "edu_file_write", "edu_mig"),
            sym(0x30, 't', "edu_file_ioctl", "edu_mig"),
            sym(0x40, 't', "edu_file_release", "edu_mig"),
        ];
        let mem: HashMap<u64, u64> = [
            (0x2000, 0x1000),
            (0x2010, 0x10),
            (0x2018, 0x20),
            (0x2050, 0x30),
            (0x2080, 0x40),
            // Owned by the module, but its "read" is no function of it.
            (0x3000, 0x1000),
            (0x3010, 0xdead),
            (0x4000, 7),
        ]
        .into_iter()
        .collect();
        let got = find_fops(&syms, &LAYOUT, |a| Ok(mem.get(&a).copied().unwrap_or(0)));
        assert_eq!(
            got,
            [DataFops {
                module: "edu_mig".into(),
                symbol: "edu_file_fops".into(),
                read: Some("edu_file_read".into()),
                write: Some("edu_file_write".into()),
                ioctl: Some("edu_file_ioctl".into()),
                release: Some("edu_file_release".into()),
            }]
        );
    }

    #[test]
    fn kallsyms_lines_are_kept_for_the_given_modules() {
        let text = "ffffffffc0a01000 t edu_file_read\t[edu_mig]\n\
                    ffffffff81000000 T _text\n\
                    ffffffffc09c1000 t vfio_pci_core_read\t[vfio_pci_core]\n";
        let got = module_symbols(text, &["edu_mig".to_owned()]);
        assert_eq!(
            got,
            [sym(0xffffffffc0a01000, 't', "edu_file_read", "edu_mig")]
        );
        assert_eq!(
            functions_present(text, &["nope", "edu_file_read", "_text"]),
            ["edu_file_read", "_text"]
        );
    }

    #[test]
    fn kcore_offsets_come_from_the_segment_holding_the_range() {
        let loads = [(0x1000, 0x100, 0x50), (0x8000, 0x1000, 0x200)];
        assert_eq!(file_offset(&loads, 0x1010, 8), Some(0x60));
        assert_eq!(
            file_offset(&loads, 0x10fc, 8),
            None,
            "crosses the segment end"
        );
        assert_eq!(file_offset(&loads, 0x8100, 8), Some(0x300));
        assert_eq!(file_offset(&loads, 0x2000, 1), None);
    }

    /// A BTF blob with one INT and `struct file_operations { owner; read; }` (the second
    /// member at bit 64).
    #[test]
    fn struct_member_offsets_are_read_from_btf() {
        let strings = b"\0int\0file_operations\0owner\0read\0";
        let mut types = Vec::new();
        let push = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
        // INT "int": info kind 1, size 4, then the int encoding word.
        push(&mut types, 1);
        push(&mut types, 1 << 24);
        push(&mut types, 4);
        push(&mut types, 32);
        // STRUCT file_operations, 2 members, size 16.
        push(&mut types, 5);
        push(&mut types, (4 << 24) | 2);
        push(&mut types, 16);
        for (name, bits) in [(21u32, 0u32), (27, 64)] {
            push(&mut types, name);
            push(&mut types, 1);
            push(&mut types, bits);
        }
        let mut btf = vec![0x9f, 0xeb, 1, 0];
        push(&mut btf, 24);
        push(&mut btf, 0);
        push(&mut btf, types.len() as u32);
        push(&mut btf, types.len() as u32);
        push(&mut btf, strings.len() as u32);
        btf.extend_from_slice(&types);
        btf.extend_from_slice(strings);
        let m = struct_members(&btf, "file_operations").expect("parsed");
        assert_eq!(m["owner"], 0);
        assert_eq!(m["read"], 8);
        assert!(struct_members(&btf, "task_struct").is_err());
    }
}
