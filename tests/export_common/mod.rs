//! Shared helpers of the export tests: the binary, fixture lists, a rich generated trace.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]
// `allow`, not `expect`: each test crate that includes this module uses a different subset, so
// the lint fires in some crates and not others, and an `expect` would be unfulfilled there.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_migscope"))
}

pub fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run migscope {args:?}: {e}"))
}

/// Every JSONL fixture available: the shared ones and the repository's `tests/fixtures/`.
/// A missing directory is reported on stderr (not silently skipped).
pub fn fixtures() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let dirs = [
        PathBuf::from("/work/shared/fixtures"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    ];
    for d in dirs {
        collect(&d, &mut out);
    }
    out.sort();
    out
}

/// Adds every `*.jsonl` under `d` (recursively) to `out`.
fn collect(d: &Path, out: &mut Vec<PathBuf>) {
    match std::fs::read_dir(d) {
        Ok(rd) => {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    collect(&p, out);
                } else if p.extension().is_some_and(|x| x == "jsonl") {
                    out.push(p);
                }
            }
        }
        Err(e) => eprintln!("SKIP fixture dir {}: {e}", d.display()),
    }
}

/// A trace using every event kind and optional field, two contexts, three devices, pids,
/// a failed SET, marks (one with a drive command line), lost events and violations.
pub const RICH: &str = r#"{"migscope_trace":1,"clock":"monotonic_ns","kernel":"6.12.0-test","tool":"migscope 0.1.0","sources":{"transitions":"ok","irq":"ok","iommu_map":"ok","witness":"ok","dirty_log":"unavailable: no logging"}}
{"t":100,"ev":"mark","label":"migscope drive --dev 0000:00:03.0 --plan precopy","pid":4242}
{"t":1000,"ev":"device","dev":"0000:00:03.0","flags":["STOP_COPY","P2P","PRE_COPY"],"ctx":"vm1","driver":"edu_vfio"}
{"t":1000,"ev":"device","dev":"0000:00:04.0","flags":["STOP_COPY","P2P"],"ctx":"vm1","state":"RUNNING"}
{"t":1000,"ev":"device","dev":"mdev-1","flags":["STOP_COPY"],"ctx":"vm2"}
{"t":2000,"ev":"map","ctx":"vm1","iova":4294967296,"len":2097152,"pid":4242}
{"t":3000,"ev":"dma","dev":"0000:00:03.0","src":"witness","iova":4294967296,"len":4096,"write":true,"window":[2000,3000]}
{"t":3500,"ev":"dma","dev":"0000:00:04.0","src":"dirty_log","iova":4294971392,"len":8192,"write":false,"p2p":false}
{"t":4000,"ev":"irq","dev":"0000:00:03.0","kind":"msix","vector":2}
{"t":10000,"ev":"set","dev":"0000:00:03.0","to":"RUNNING_P2P","pid":4242}
{"t":10100,"ev":"step","dev":"0000:00:03.0","from":"RUNNING","to":"RUNNING_P2P"}
{"t":13000,"ev":"set_done","dev":"0000:00:03.0","to":"RUNNING_P2P","ret":0,"pid":4242}
{"t":13500,"ev":"irq","dev":"0000:00:03.0","kind":"msi","vector":0}
{"t":14000,"ev":"set","dev":"0000:00:03.0","to":"STOP"}
{"t":14100,"ev":"step","dev":"0000:00:03.0","from":"RUNNING_P2P","to":"STOP"}
{"t":15000,"ev":"set_done","dev":"0000:00:03.0","to":"STOP","ret":0}
{"t":15500,"ev":"dma","dev":"0000:00:03.0","src":"mdev_dma","iova":4294967296,"len":64,"write":true,"p2p":true}
{"t":16000,"ev":"set","dev":"0000:00:04.0","to":"RUNNING_P2P"}
{"t":16500,"ev":"set_done","dev":"0000:00:04.0","to":"RUNNING_P2P","ret":-5}
{"t":17000,"ev":"get","dev":"0000:00:04.0","state":"RUNNING_P2P"}
{"t":18000,"ev":"set","dev":"0000:00:03.0","to":"STOP_COPY"}
{"t":18100,"ev":"set_done","dev":"0000:00:03.0","to":"STOP_COPY","ret":0,"data_fd":7}
{"t":19000,"ev":"data","dev":"0000:00:03.0","dir":"save","bytes":1048576}
{"t":19500,"ev":"lost","n":3,"source":"ringbuf"}
{"t":20000,"ev":"unmap","ctx":"vm1","iova":4294967296,"len":2097152}
{"t":21000,"ev":"reset","dev":"0000:00:03.0","ret":0}
{"t":21500,"ev":"data","dev":"mdev-1","dir":"load","bytes":0}
{"t":22000,"ev":"mark","label":"done \"quoted\" <tag> & 0xdeadbeef"}
{"t":22100,"ev":"precopy_info","dev":"0000:00:03.0","initial_bytes":80,"dirty_bytes":16,"precopy_flags":0,"ret":0}
{"t":22200,"ev":"precopy_info","dev":"0000:00:03.0","ret":-22}
{"t":22300,"ev":"data_size","dev":"0000:00:03.0","bytes":1048576,"ret":0}
{"t":23000,"ev":"end"}
"#;

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// `check --json` on `path`: the verdict JSON and the exit code.
pub fn check_json(path: &Path, extra: &[&str]) -> (serde_json::Value, i32) {
    let mut args = vec!["check", "--json"];
    let p = path.to_str().expect("utf-8 path");
    args.push(p);
    args.extend_from_slice(extra);
    let out = run(&args);
    let code = out.status.code().expect("exit code");
    if code == 3 {
        return (serde_json::Value::Null, code);
    }
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json {p}: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, code)
}
